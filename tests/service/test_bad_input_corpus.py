"""A bad-input corpus for both surfaces, generated here: bombs in every accepted format (TIFF tricks included),
truncated and foreign files, and type confusion in every field; each with its expected status or error code."""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app

from .conftest import b64, make_settings, running_engine
from .test_errors import png_header_only
from .test_hardening_rest import tiff_with_two_sizes

pytestmark = pytest.mark.anyio

PIXELS = 300 * 300
SMALL = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def encoded(ext: str) -> bytes:
    return cv2.imencode(ext, SMALL)[1].tobytes()


def jpeg_claiming(w: int, h: int) -> bytes:
    data = bytearray(encoded(".jpg"))
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):  # to the frame header
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def gif_claiming(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + struct.pack("<HH", w, h)


def bmp_claiming(w: int, h: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0)


def webp_claiming(w: int, h: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def tiff_claiming(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (273, 4, 1, 8), (279, 4, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


# (name, bytes, REST status, REST problem kind)
CORPUS = [
    ("png bomb", png_header_only(100_000, 100_000), 413, "image-too-large"),
    ("jpeg bomb", jpeg_claiming(60_000, 60_000), 413, "image-too-large"),
    ("gif bomb", gif_claiming(65_535, 65_535), 413, "image-too-large"),
    ("bmp bomb", bmp_claiming(100_000, -100_000), 413, "image-too-large"),
    ("webp bomb", webp_claiming(16_000, 16_000), 413, "image-too-large"),
    ("tiff bomb", tiff_claiming(100_000, 100_000), 413, "image-too-large"),
    ("tiff with two sizes", tiff_with_two_sizes(1000, 16), 400, "image-undecodable"),
    ("tiff big-endian truncated", b"MM\x00*\x00\x00\x00\x08\x00", 400, "image-undecodable"),
    ("png zero size", png_header_only(0, 10), 400, "image-undecodable"),
    ("png header only", png_header_only(20, 20), 400, "image-undecodable"),
    ("empty", b"", 422, "validation"),  # "image": "" is refused by the schema on REST
    ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported-media-type"),
    ("random bytes", bytes(range(256)) * 4, 415, "unsupported-media-type"),
    ("zlib of zeros", zlib.compress(bytes(1 << 20)), 415, "unsupported-media-type"),
    *[(f"{ext} cut to 30 bytes", encoded(ext)[:30], 400, "image-undecodable")
      for ext in (".png", ".jpg", ".webp", ".bmp", ".tiff")],
]


@pytest.fixture(scope="module")
def engine(tiny_model):
    with running_engine(tiny_model, max_image_pixels=PIXELS) as eng:
        yield eng


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine.settings, engine)) as c:
        yield c


@pytest.mark.parametrize("name, data, status, kind", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_images_on_rest(client, name, data, status, kind):
    for path in ("/v1/segment", "/v1/embed", "/v1/segment/everything"):
        body = {"image": b64(data), **({"objects": [{"points": [[1, 1]]}]} if path == "/v1/segment" else {})}
        r = client.post(path, json=body)
        assert (r.status_code, r.json()["type"].rsplit(":", 1)[1]) == (status, kind), (path, r.text)


@pytest.mark.parametrize("name, data, status, kind", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_images_on_the_websocket(client, name, data, status, kind):
    with client.websocket_connect("/v1/track") as ws:
        ws.send_json({"type": "start"})
        assert ws.receive_json()["type"] == "session"
        ws.send_bytes(data)
        msg = ws.receive_json()
        assert (msg["type"], msg["code"]) == ("error", "bad_frame") or (name == "empty" and msg["code"] == "bad_frame"), msg


CONFUSION = [None, True, -1, 2**70, 1e308, "x", "", [], [None], [[1, "a"]], {}, {"size": [1]}]

REST_FIELDS = {
    "/v1/segment": ["image", "image_id", "objects", "multimask_output", "mask_format"],
    "/v1/segment/everything": ["image", "image_id", "points_per_side", "points_per_batch", "pred_iou_thresh",
                               "crop_n_layers", "crop_overlap_ratio", "min_mask_region_area", "use_m2m",
                               "mask_format"],
    "/v1/embed": ["image", "image_id"],
}
OBJECT_FIELDS = ["points", "labels", "box", "mask_input"]


@pytest.mark.parametrize("path", list(REST_FIELDS))
def test_type_confusion_in_every_rest_field_is_4xx(client, path):
    image = b64(encoded(".png"))
    base = {"image": image, **({"objects": [{"points": [[1, 1]]}]} if path == "/v1/segment" else {})}
    for field in REST_FIELDS[path]:
        for value in CONFUSION:
            if value is True and field in ("multimask_output", "use_m2m"):
                continue  # the one right type in the list
            body = {**base, field: value}
            if field == "image_id":
                body.pop("image")
            r = client.post(path, json=body)
            assert 400 <= r.status_code < 500, (field, value, r.status_code, r.text[:300])
    if path == "/v1/segment":
        for field in OBJECT_FIELDS:
            for value in CONFUSION[1:]:  # None: the field is optional
                r = client.post(path, json={"image": image, "objects": [{"points": [[1, 1]], field: value}]})
                assert 400 <= r.status_code < 500, (field, value, r.status_code, r.text[:300])


WS_FIELDS = {
    "start": ["model", "image_size", "mode", "width", "height"],
    "prompt": ["obj_id", "points", "labels", "box", "mask", "frame", "update_memory"],
    "remove_object": ["obj_id"],
    "resume": ["session_id", "resume_token"],
}


def test_type_confusion_in_every_websocket_field_is_a_client_error(client):
    allowed = ("bad_message", "bad_prompt", "unknown_object", "not_found")
    for kind in ("start", "resume"):  # each on a fresh connection: they open a session
        for field in WS_FIELDS[kind]:
            for value in CONFUSION:
                with client.websocket_connect("/v1/track") as ws:
                    ws.send_text(json.dumps({"type": kind, field: value}))
                    msg = ws.receive_json()
                    assert msg["type"] == "session" or msg["code"] in allowed, (kind, field, value, msg)
    with client.websocket_connect("/v1/track") as ws:
        ws.send_json({"type": "start", "width": 60, "height": 40})
        assert ws.receive_json()["type"] == "session"
        for kind in ("prompt", "remove_object"):
            for field in WS_FIELDS[kind]:
                for value in CONFUSION:
                    base = {"prompt": {"obj_id": 1, "points": [[1, 1]]}, "remove_object": {"obj_id": 9}}[kind]
                    ws.send_text(json.dumps({"type": kind, **base, field: value}))
                    msg = ws.receive_json()
                    assert msg["type"] in ("ack", "masks") or msg["code"] in allowed, (kind, field, value, msg)
        ws.send_bytes(cv2.imencode(".png", SMALL[:40, :60])[1].tobytes())
        assert ws.receive_json()["type"] == "masks"  # the session lived through all of it
