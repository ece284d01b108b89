"""mp4 writers for overlay videos: H.264 through PyAV (the optional `video` extra) where it is installed,
otherwise MPEG-4 Part 2 through OpenCV's VideoWriter (plays in VLC and ffmpeg, not in every browser).

Both encode 4:2:0 colour, which needs even sizes: an odd width or height gets one black column or row.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

BACKENDS = ("auto", "pyav", "opencv")
H264_ENCODERS = ("libx264", "libopenh264", "h264")  # PyAV encoder names, preferred first


def pyav_h264_encoder() -> str | None:
    """The name of an H.264 encoder PyAV can use, or None (PyAV missing, or built without one)."""
    if importlib.util.find_spec("av") is None:
        return None
    import av

    for name in H264_ENCODERS:
        try:
            av.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises its own error types for unknown codecs
            continue
        return name
    return None


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H + H % 2, W + W % 2, 3), the added row/column black."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))


class Mp4Writer:
    """RGB frames in, an mp4 out; the size is set by the first frame. `backend`: auto, pyav or opencv."""

    def __init__(self, path: str | Path, fps: float = 30.0, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        encoder = pyav_h264_encoder() if backend in ("auto", "pyav") else None
        if backend == "pyav" and encoder is None:
            raise RuntimeError("PyAV with an H.264 encoder is not installed (pip install 'sam2-service[video]')")
        self.path, self.fps = Path(path), fps
        self.backend = "pyav" if encoder else "opencv"
        self.codec = "h264" if encoder else "mp4v"
        self._encoder = encoder
        self._out = None  # opened on the first frame
        self._size: tuple[int, int] | None = None  # (H, W) of the frames written
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) RGB uint8 frame; every frame must have the first one's size."""
        if self._size is None:
            self._size = image.shape[:2]
            self._open(*pad_to_even(image).shape[:2])
        elif image.shape[:2] != self._size:
            h, w = self._size
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, the video is {w}x{h}")
        image = pad_to_even(np.ascontiguousarray(image, dtype=np.uint8))
        if self.backend == "pyav":
            import av

            container, stream = self._out
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames_written
            container.mux(stream.encode(frame))
        else:
            self._out.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def _open(self, height: int, width: int) -> None:
        if self.backend == "pyav":
            import av

            container = av.open(str(self.path), mode="w")
            stream = container.add_stream(self._encoder, rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            self._out = (container, stream)
        else:
            self._out = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._out.isOpened():
                raise RuntimeError(f"OpenCV cannot write {self.path}")

    def close(self) -> None:
        """Flush the encoder and finish the file (a video with no frames leaves no file)."""
        if self._out is None:
            return
        if self.backend == "pyav":
            container, stream = self._out
            container.mux(stream.encode(None))
            container.close()
        else:
            self._out.release()
        self._out = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
