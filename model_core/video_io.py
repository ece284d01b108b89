"""Lazy video frame sources: an mp4 (or any OpenCV-readable video), a folder of JPEGs, or arrays."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .transforms import as_rgb_uint8

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class FrameSource:
    """Random access to RGB uint8 frames, decoded only when asked for."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, idx: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def hw(self) -> tuple[int, int]:
        return self[0].shape[:2]


class ArrayFrames(FrameSource):
    def __init__(self, frames) -> None:
        self.frames = frames
        if len(frames) == 0:
            raise ValueError("the video has no frames")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, idx: int) -> np.ndarray:
        return as_rgb_uint8(self.frames[idx])


class FolderFrames(FrameSource):
    """Image files in a folder, ordered by their numeric names (00000.jpg, 00001.jpg, ...) when they have them."""

    def __init__(self, folder: str | Path) -> None:
        files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ValueError(f"no image frames in {folder}")
        numeric = all(p.stem.isdigit() for p in files)
        self.files = sorted(files, key=lambda p: (int(p.stem), p.name) if numeric else (0, p.name))
        self._hw: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> np.ndarray:
        bgr = cv2.imread(str(self.files[idx]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode {self.files[idx]}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoFileFrames(FrameSource):
    """Frames of a video file read with OpenCV; sequential reads are cheap, others seek."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._cap = cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            raise ValueError(f"cannot open video {path}")
        self._count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._next = 0
        if self._count <= 0:
            raise ValueError(f"video {path} has no frames")

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, idx: int) -> np.ndarray:
        if not 0 <= idx < self._count:
            raise IndexError(idx)
        if idx != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
        ok, bgr = self._cap.read()
        if not ok:
            raise ValueError(f"cannot decode frame {idx} of {self.path}")
        self._next = idx + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def open_video(video) -> FrameSource:
    """A path to a video file or a frame folder, a list of HWC arrays, or an (N, H, W, 3) array."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return FolderFrames(path)
        if path.is_file():
            return VideoFileFrames(path)
        raise ValueError(f"no such video file or frame folder: {video}")
    if isinstance(video, (list, tuple)) or (isinstance(video, np.ndarray) and video.ndim == 4):
        return ArrayFrames(video)
    raise TypeError("video must be a path (mp4 or JPEG folder), a list of frames, or an (N, H, W, 3) array")
