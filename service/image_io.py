"""Image bytes in, RGB array out, safely: size limits checked from the header before any pixel is decoded.

Decompression bombs (a small file that decodes to a huge image) are refused by reading width and height
from the PNG / JPEG / WebP / BMP / GIF / TIFF header first; other formats are refused, since their size
cannot be checked cheaply.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct

import cv2
import numpy as np

from . import errors

SUPPORTED_FORMATS = "PNG, JPEG, WebP, BMP, GIF or TIFF"
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


def content_id(data: bytes) -> str:
    """The image_id of uploaded bytes: their sha256, hex."""
    return hashlib.sha256(data).hexdigest()


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Standard base64 (a `data:image/...;base64,` prefix is allowed) -> bytes, refusing oversize before decoding."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    if any(c in text for c in "\n\r \t"):  # what the `base64` tool prints: lines of 76
        text = "".join(text.split())
    if len(text) // 4 * 3 > max_bytes + 3:
        raise errors.too_large(f"image is over the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise errors.bad_image("`image` is not valid base64") from None


# ---- header parsing -----------------------------------------------------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if i + 2 > n:
            return None
        (length,) = struct.unpack(">H", data[i : i + 2])
        if marker in _JPEG_SOF:
            if i + 7 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 3 : i + 7])
            return w, h
        i += length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        w, h = struct.unpack("<HH", data[18:22])
    else:
        w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    end = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for k in range(count):
        off = ifd + 2 + 12 * k
        if off + 12 > len(data):
            return None
        tag, typ = struct.unpack(end + "HH", data[off : off + 4])
        if tag in (256, 257):
            if tag in found:  # decoders take the first, a naive check the last: refuse the ambiguity
                return None
            if typ == 3:
                (val,) = struct.unpack(end + "H", data[off + 8 : off + 10])
            elif typ == 4:
                (val,) = struct.unpack(end + "I", data[off + 8 : off + 12])
            else:
                return None
            found[tag] = val
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the file header alone. Raises 415 for other formats, 400 for a broken header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        size = struct.unpack(">II", data[16:24]) if len(data) >= 24 and data[12:16] == b"IHDR" else None
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    elif data.startswith(b"BM"):
        size = _bmp_size(data)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        size = struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        size = _tiff_size(data)
    else:
        raise errors.unsupported_media(f"unrecognised image format: send {SUPPORTED_FORMATS}")
    if size is None:
        raise errors.bad_image("the image header is truncated or corrupt")
    return int(size[0]), int(size[1])


# ---- the whole path ---------------------------------------------------------------------------------------


def check_limits(data: bytes, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """Refuse empty, oversize or too-many-pixel images without decoding them; returns (width, height)."""
    if not data:
        raise errors.bad_image("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise errors.too_large(f"image is {len(data)} bytes, over the limit of {max_bytes}")
    w, h = header_size(data)
    if w < 1 or h < 1:
        raise errors.bad_image(f"the image header says {w}x{h} pixels: the image is empty")
    if w * h > max_pixels:
        raise errors.too_large(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
    return w, h


def decode_unchecked(data: bytes) -> np.ndarray | None:
    """OpenCV's decode (BGR), or None when it fails or its own decode-time pixel limit refuses the image
    (OPENCV_IO_MAX_IMAGE_PIXELS, set from SAM2_MAX_IMAGE_PIXELS when the service package loads)."""
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Checked bytes -> HWC RGB uint8 (EXIF orientation applied, alpha dropped, 16-bit scaled to 8)."""
    check_limits(data, max_bytes, max_pixels)
    bgr = decode_unchecked(data)
    if bgr is None or bgr.size == 0:
        raise errors.bad_image("the image data cannot be decoded (corrupt or truncated file)")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:  # header and pixels disagree: refuse all the same
        raise errors.too_large(f"image decodes to {bgr.shape[1]}x{bgr.shape[0]} pixels, over {max_pixels}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
