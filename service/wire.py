"""The /v1/track binary frame format, shared by the server and the client (numpy only, nothing of the server)."""

from __future__ import annotations

import struct

import numpy as np

RAW_MAGIC = b"RGB8"  # raw frame: magic, u32 LE width, u32 LE height, then width*height*3 bytes of RGB
RAW_HEADER_BYTES = 12


def encode_raw_frame(rgb: np.ndarray) -> bytes:
    """The raw RGB8 frame message for an HWC uint8 array (what clients without an encoder send)."""
    h, w = rgb.shape[:2]
    return RAW_MAGIC + struct.pack("<II", w, h) + np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()


def raw_frame_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a raw frame's header (the caller checked the magic and the length >= 12)."""
    return struct.unpack("<II", data[4:RAW_HEADER_BYTES])
