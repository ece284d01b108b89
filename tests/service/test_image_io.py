"""Image sizes are read from the header, for every accepted format, before anything is decoded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service import errors
from service.image_io import check_limits, decode_base64, decode_image, header_size


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
@pytest.mark.parametrize("hw", [(37, 53), (300, 20)])
def test_header_size_of_opencv_encoded_files(ext, hw):
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    assert header_size(data) == (hw[1], hw[0])


def test_lossless_webp_header():
    img = np.zeros((21, 34, 3), np.uint8)
    data = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert data[12:16] == b"VP8L"
    assert header_size(data) == (34, 21)


def test_gif_header():
    assert header_size(b"GIF89a" + (640).to_bytes(2, "little") + (480).to_bytes(2, "little") + b"\0" * 8) == (640, 480)


def test_progressive_jpeg_header():
    img = np.zeros((40, 70, 3), np.uint8)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert header_size(data) == (70, 40)


def test_grayscale_and_alpha_decode_to_rgb():
    gray = cv2.imencode(".png", np.full((5, 6), 200, np.uint8))[1].tobytes()
    rgba = cv2.imencode(".png", np.full((5, 6, 4), 100, np.uint8))[1].tobytes()
    for data in (gray, rgba):
        out = decode_image(data, 10**6, 10**6)
        assert out.shape == (5, 6, 3) and out.dtype == np.uint8


def test_decode_returns_rgb_not_bgr():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    out = decode_image(cv2.imencode(".png", bgr)[1].tobytes(), 10**6, 10**6)
    assert tuple(out[0, 0]) == (255, 0, 0)


def test_pixel_limit_is_checked_before_decoding(monkeypatch):
    data = cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1].tobytes()
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an image over the limit"))
    with pytest.raises(errors.Problem) as exc:
        decode_image(data, 10**6, 2499)
    assert exc.value.status == 413


def test_check_limits_returns_width_and_height():
    data = cv2.imencode(".jpg", np.zeros((12, 34, 3), np.uint8))[1].tobytes()
    assert check_limits(data, 10**6, 10**6) == (34, 12)


def test_oversize_base64_is_refused_before_decoding():
    with pytest.raises(errors.Problem) as exc:
        decode_base64("A" * 4000, max_bytes=1000)
    assert exc.value.status == 413
