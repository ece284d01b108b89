"""Video frame sources: random access to an mp4, a JPEG folder or arrays (`open_video`), and streams read
in order, one frame at a time, that also take cameras and URLs (`open_stream`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

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

    def model_input(self, idx: int, size: int) -> np.ndarray | None:
        """The frame already scaled to (size, size, 3) by the decoder, where the source scales as the reference's
        reader does (video files with PyAV); None: the caller resizes the frame itself."""
        return None


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
    """Frames of a video file read with OpenCV; sequential reads are cheap, others seek. Used where PyAV (the
    `video` extra) is not installed: see av_frames.AVFileFrames."""

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


def _pyav_frames(path: Path):
    """A video file through PyAV (av_frames.AVFileFrames) where it is installed and opens the file; None: the
    OpenCV reader's turn."""
    from .av_frames import AVFileFrames

    if not AVFileFrames.available():
        return None
    try:
        return AVFileFrames(path)
    except ValueError:  # a file PyAV cannot open or read: OpenCV may, or says why not
        return None


def open_video(video) -> FrameSource:
    """A path to a video file or a frame folder, a list of HWC arrays, or an (N, H, W, 3) array."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return FolderFrames(path)
        if path.is_file():
            return _pyav_frames(path) or VideoFileFrames(path)
        raise ValueError(f"no such video file or frame folder: {video}")
    if isinstance(video, (list, tuple)) or (isinstance(video, np.ndarray) and video.ndim == 4):
        return ArrayFrames(video)
    raise TypeError("video must be a path (mp4 or JPEG folder), a list of frames, or an (N, H, W, 3) array")


# ---- streaming sources: frames in order, one at a time, length unknown until the end ------------------


class VideoSourceError(ValueError):
    """A video source that cannot be opened or read (missing file, no camera, unreachable URL)."""


class FrameStream:
    """RGB uint8 frames in order, read one at a time; `num_frames` is None where the length is unknown."""

    name: str = "video"  # a short name for output files
    fps: float | None = None
    num_frames: int | None = None
    exact_length: bool = False  # True when num_frames is known to be the true count (folders, arrays)

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def model_input(self, size: int) -> np.ndarray | None:
        """The frame last yielded, scaled to (size, size, 3) by the decoder where the stream does it as the
        reference's reader does (video files with PyAV); None: the caller resizes the frame itself."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureStream(FrameStream):
    """A video file, camera index or URL (RTSP, HTTP, ...) read with OpenCV's VideoCapture."""

    def __init__(self, source: int | str, timeout_s: float = 10.0) -> None:
        self.source = source
        if isinstance(source, int):
            self.name, what = f"camera{source}", f"camera {source}"
            self._cap = cv2.VideoCapture(source)
        elif "://" in source:
            self.name, what = _stream_name(source), f"stream {source}"
            ms = int(timeout_s * 1000)  # an unreachable URL fails instead of hanging
            self._cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG,
                                         [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:  # a file, or a device such as /dev/video0
            self.name, what = _stream_name(source), f"video {source}"
            self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise VideoSourceError(f"cannot open {what}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else None
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)  # the container's claim; cameras and live streams have none
        self.num_frames = int(count) if 0 < count < 2**31 and not isinstance(source, int) else None

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()


class SequenceStream(FrameStream):
    """A FrameSource (a JPEG folder, arrays) or any iterable of frames, as a stream."""

    def __init__(self, frames, name: str = "frames", fps: float | None = None, owned: bool = False) -> None:
        self.frames, self.name, self.fps = frames, name, fps
        self._owned = owned  # close the source with the stream (one open_stream opened)
        self._last: int | None = None  # index of the frame last yielded from a FrameSource
        if isinstance(frames, FrameSource):
            self.num_frames, self.exact_length = len(frames), True

    def __iter__(self) -> Iterator[np.ndarray]:
        if isinstance(self.frames, FrameSource):
            return self._source_frames()
        return (as_rgb_uint8(f) for f in self.frames)

    def _source_frames(self) -> Iterator[np.ndarray]:
        for i in range(len(self.frames)):
            self._last = i
            try:
                frame = self.frames[i]
            except ValueError as exc:  # a frame that does not decode: the source's error, not a traceback
                raise VideoSourceError(f"{self.name}: {exc}") from None
            yield frame

    def model_input(self, size: int) -> np.ndarray | None:
        if self._last is None:
            return None
        return self.frames.model_input(self._last, size)

    def close(self) -> None:
        if self._owned and hasattr(self.frames, "close"):
            self.frames.close()


def _stream_name(source: str) -> str:
    stem = Path(urlsplit(source).path if "://" in source else source).stem
    return stem or "stream"


def open_stream(source, timeout_s: float = 10.0) -> FrameStream:
    """A video file, a frame folder, a camera index (int or "0"), a URL, a FrameSource or an iterable of frames."""
    if isinstance(source, FrameStream):
        return source
    if isinstance(source, FrameSource):
        return SequenceStream(source)
    if isinstance(source, bool):
        raise TypeError("source must be a path, a camera index, a URL or frames")
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return CaptureStream(int(source))
    if isinstance(source, str) and "://" in source:
        return CaptureStream(source, timeout_s)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            try:
                return SequenceStream(FolderFrames(path), name=path.name or "frames")
            except ValueError as exc:
                raise VideoSourceError(str(exc)) from None
        frames = _pyav_frames(path) if path.is_file() else None
        if frames is not None:  # frame-accurate, exact length, scaled in the decoder as the reference
            return SequenceStream(frames, name=_stream_name(str(path)), fps=frames.fps, owned=True)
        if path.exists():
            return CaptureStream(str(path))
        raise VideoSourceError(f"no such video file, frame folder, camera or URL: {source}")
    if isinstance(source, (list, tuple)) or (isinstance(source, np.ndarray) and source.ndim == 4):
        if len(source) == 0:
            raise VideoSourceError("the video has no frames")
        return SequenceStream(ArrayFrames(source))
    if isinstance(source, Iterable):
        return SequenceStream(source)
    raise TypeError("source must be a path, a camera index, a URL, a FrameSource or an iterable of frames")
