"""A small Python client for sam2-service: /v1/segment (sync and async) and /v1/track sessions.

    from service.client import Client, TrackSession
    masks = Client("http://127.0.0.1:8000").segment("photo.jpg", objects=[{"points": [[500, 375]], "labels": [1]}])
    with TrackSession.open("ws://127.0.0.1:8000/v1/track") as t:
        t.add_prompt(1, points=[[210, 350]], labels=[1])
        result = t.send_frame(frame_rgb)      # {"type": "masks", "frame_idx": 0, "objects": [...]}

Needs httpx (HTTP) and websockets (tracking): `pip install httpx websockets`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .wire import encode_raw_frame


def _image_bytes(image) -> bytes:
    """A path, raw encoded bytes, or an HWC RGB array (sent as PNG, lossless)."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("cannot encode the image as PNG")
    return buf.tobytes()


def decode_rle(rle: dict) -> np.ndarray:
    """A mask of a response (COCO RLE) as an (H, W) bool array."""
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _form(objects: list[dict] | None, options: dict) -> dict[str, str]:
    """multipart fields: `objects` as JSON text, other options as text (booleans as true/false)."""
    fields = {"objects": json.dumps(objects or [])}
    for k, v in options.items():
        fields[k] = json.dumps(v) if isinstance(v, bool) else str(v)
    return fields


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class ServiceError(RuntimeError):
    def __init__(self, status: int, problem: dict) -> None:
        super().__init__(f"{status}: {problem.get('title')}: {problem.get('detail')}")
        self.status, self.problem = status, problem


def _check(resp) -> dict:
    if resp.status_code >= 400:
        try:
            problem = resp.json()
        except ValueError:
            problem = {"title": resp.text}
        raise ServiceError(resp.status_code, problem)
    return resp.json()


class Client:
    """Synchronous REST client."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def segment(self, image=None, objects: list[dict] | None = None, image_id: str | None = None, **options) -> dict:
        """POST /v1/segment: an image (path/bytes/array) or an image_id, and prompts per object."""
        body: dict[str, Any] = {"objects": objects or [], **options}
        if image_id is not None:
            body["image_id"] = image_id
            return _check(self._http.post("/v1/segment", json=body))
        files = {"image": ("image", _image_bytes(image))}
        return _check(self._http.post("/v1/segment", files=files, data=_form(objects, options)))

    def embed(self, image) -> dict:
        return _check(self._http.post("/v1/embed", files={"image": ("image", _image_bytes(image))}))

    def models(self) -> dict:
        return _check(self._http.get("/v1/models"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient:
    """Asynchronous REST client (same methods as Client, awaited)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    async def segment(self, image=None, objects: list[dict] | None = None, image_id: str | None = None,
                      **options) -> dict:
        body: dict[str, Any] = {"objects": objects or [], **options}
        if image_id is not None:
            body["image_id"] = image_id
            return _check(await self._http.post("/v1/segment", json=body))
        files = {"image": ("image", _image_bytes(image))}
        return _check(await self._http.post("/v1/segment", files=files, data=_form(objects, options)))

    async def embed(self, image) -> dict:
        return _check(await self._http.post("/v1/embed", files={"image": ("image", _image_bytes(image))}))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


class TrackError(RuntimeError):
    def __init__(self, msg: dict) -> None:
        super().__init__(f"{msg.get('code')}: {msg.get('detail')}")
        self.code, self.detail = msg.get("code"), msg.get("detail")


class TrackSession:
    """A /v1/track session over a WebSocket (synchronous; frames are answered in order).

    Use `TrackSession.open(url)` for a new session or `TrackSession.resume(url, session_id, token)`.
    Non-fatal server notes (busy, dropped, store_unavailable, ...) are collected in `notes`.
    """

    def __init__(self, ws, hello: dict) -> None:
        self.ws = ws
        self.session_id: str = hello["session_id"]
        self.resume_token: str | None = hello.get("resume_token")
        self.frame_idx: int = hello["frame_idx"]
        self.notes: list[dict] = []

    @staticmethod
    def _connect(url: str, api_key: str | None, session: str, deflate: bool):
        """`?session=` carries the session id so a gateway's consistent hash routes a session to one replica
        (a random value for a new session spreads them); the server itself ignores it. deflate: offer per-message
        deflate (frames are JPEG/PNG already: off by default, deflating them costs more than it saves)."""
        from websockets.sync.client import connect

        url = f"{url}{'&' if '?' in url else '?'}session={session}"

        options = dict(additional_headers=_headers(api_key), max_size=None, open_timeout=30, proxy=None,
                       compression="deflate" if deflate else None)
        try:
            return connect(url, legacy=True, **options)  # websockets >= 17: a plain connection, not a context
        except TypeError:
            return connect(url, **options)

    @classmethod
    def open(cls, url: str, api_key: str | None = None, deflate: bool = False, **start) -> "TrackSession":
        import secrets

        ws = cls._connect(url, api_key, secrets.token_urlsafe(16), deflate)
        ws.send(json.dumps({"type": "start", **start}))
        return cls(ws, cls._expect(ws, "session", [], tolerate=()))

    @classmethod
    def resume(cls, url: str, session_id: str, resume_token: str, api_key: str | None = None,
               deflate: bool = False) -> "TrackSession":
        ws = cls._connect(url, api_key, session_id, deflate)
        ws.send(json.dumps({"type": "resume", "session_id": session_id, "resume_token": resume_token}))
        session = cls(ws, cls._expect(ws, "session", [], tolerate=()))
        session.resume_token = resume_token
        return session

    @staticmethod
    def _expect(ws, kind: str, notes: list[dict], timeout: float = 120.0, tolerate=("store_unavailable",)) -> dict:
        """The next message of `kind`; errors raise, except those in `tolerate` (kept in notes with the rest)."""
        while True:
            msg = json.loads(ws.recv(timeout=timeout))
            if msg["type"] == kind:
                return msg
            if msg["type"] == "error" and msg.get("code") not in tolerate:
                raise TrackError(msg)
            notes.append(msg)

    def send_frame(self, frame, raw: bool = False) -> dict:
        """Send one frame (path, encoded bytes, or RGB array as PNG / raw RGB8) and return its masks message."""
        self.send_frame_nowait(frame, raw)
        return self.next_result()

    def send_frame_nowait(self, frame, raw: bool = False) -> None:
        if raw:
            self.ws.send(encode_raw_frame(np.asarray(frame, np.uint8)))
        else:
            self.ws.send(_image_bytes(frame))

    def next_result(self) -> dict:
        msg = self._expect(self.ws, "masks", self.notes)
        self.frame_idx = msg["frame_idx"] + 1
        return msg

    def add_prompt(self, obj_id: int, points=None, labels=None, box=None, mask=None, frame: str = "next",
                   update_memory: bool = True) -> dict:
        """Prompt an object on the next frame (returns the ack) or on the current one (returns its masks)."""
        msg: dict[str, Any] = {"type": "prompt", "obj_id": obj_id, "frame": frame, "update_memory": update_memory}
        for key, value in (("points", points), ("labels", labels), ("box", box), ("mask", mask)):
            if value is not None:
                msg[key] = np.asarray(value).tolist() if key != "mask" else value
        self.ws.send(json.dumps(msg))
        return self._expect(self.ws, "ack" if frame == "next" else "masks", self.notes)

    def remove_object(self, obj_id: int) -> dict:
        self.ws.send(json.dumps({"type": "remove_object", "obj_id": obj_id}))
        return self._expect(self.ws, "ack", self.notes)

    def reset(self) -> dict:
        self.ws.send(json.dumps({"type": "reset"}))
        return self._expect(self.ws, "ack", self.notes)

    def close(self, end_session: bool = True) -> None:
        """End the session (deleted from the store) or just disconnect (it stays resumable)."""
        try:
            if end_session:
                self.ws.send(json.dumps({"type": "close"}))
                self._expect(self.ws, "closed", self.notes, timeout=30)
        finally:
            self.ws.close()

    def __iter__(self):
        """Results of frames sent with send_frame_nowait, in frame order."""
        while True:
            yield self.next_result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
