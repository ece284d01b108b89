"""Video files decoded with PyAV (ffmpeg), frame-accurately, with the model's input scaled in the decoder.

Meta's video predictor reads an mp4 with decord, which scales each frame to S x S inside ffmpeg (its `scale`
filter, bilinear, converting YUV to RGB in the same swscale call). `model_input` runs the same filter, so an
mp4 reaches our model pixel for pixel as it reaches the reference's; resizing decoded RGB frames cannot
reproduce those pixels (chroma is scaled at its own resolution before the conversion).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from .video_io import FrameSource

RECENT_FRAMES = 16  # decoded frames kept: reading backwards seeks once per 16 frames, not once per frame


# counter-clockwise quarter turns -> ffmpeg transpose filters doing them (clock = 1, cclock = 2)
_TRANSPOSES = {0: (), 1: ("2",), 2: ("1", "1"), 3: ("1",)}


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that show a decoded frame upright (phones store portrait video turned)."""
    return round(getattr(frame, "rotation", 0) / 90) % 4


class AVFileFrames(FrameSource):
    """Random access to a video file's frames in display order; sequential reads decode once, others seek."""

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except (av.error.FFmpegError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot open video {path}: {e}") from None
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        try:  # display order = sorted presentation times; read from the packets, nothing decoded
            pts = [p.pts for p in self._container.demux(self._stream) if p.size and not p.is_discard]
        except av.error.FFmpegError as e:
            self._container.close()
            raise ValueError(f"cannot read video {path}: {e}") from None
        if not pts:
            self._container.close()
            raise ValueError(f"video {path} has no frames")
        self._count = len(pts)
        # AVI and raw streams carry no real presentation times: number frames in the order they decode (a seek
        # then decodes from the start); also switched to when decoded timestamps turn out not to be the packets'
        self._by_order = None in pts or len(set(pts)) != len(pts) or "avi" in self._container.format.name
        self._pts = [] if self._by_order else sorted(pts)
        self._index = {p: i for i, p in enumerate(self._pts)}
        self._frames = None  # the decoder's iterator
        self._recent: OrderedDict[int, object] = OrderedDict()  # index -> av.VideoFrame, the latest decoded
        self._decoded: int | None = None  # index of the frame the decoder gave last (None: seek first)
        self.seeks = 0
        self.rewinds = 0  # seeks that decode from the start
        self._scalers: dict[tuple[int, int], object] = {}  # (size, quarter turns) -> configured filter graph

    @classmethod
    def available(cls) -> bool:
        try:
            import av  # noqa: F401
        except ImportError:
            return False
        return True

    def __len__(self) -> int:
        return self._count

    @property
    def fps(self) -> float | None:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate and 0 < rate < 1000 else None

    @property
    def hw(self) -> tuple[int, int]:
        frame = self._frame(0)
        h, w = frame.height, frame.width
        return (w, h) if _quarter_turns(frame) % 2 else (h, w)

    def __getitem__(self, idx: int) -> np.ndarray:
        """The frame as decoded and shown upright (turned as the file's display matrix says), RGB uint8 (H, W, 3)."""
        frame = self._frame(idx)
        turns = _quarter_turns(frame)
        rgb = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def model_input(self, idx: int, size: int) -> np.ndarray:
        """The frame turned upright and scaled to (size, size, 3) RGB uint8 by ffmpeg's bilinear scale filter,
        as decord does (it turns with `transpose` filters before scaling)."""
        import av

        frame = self._frame(idx)
        turns = _quarter_turns(frame)
        graph = self._scalers.get((size, turns))
        try:
            if graph is None:
                graph = av.filter.Graph()
                chain = [graph.add_buffer(template=self._stream)]
                chain += [graph.add("transpose", t) for t in _TRANSPOSES[turns]]
                chain += [graph.add("scale", f"{size}:{size}:flags=bilinear"), graph.add("format", "rgb24"),
                          graph.add("buffersink")]
                for a, b in zip(chain, chain[1:]):
                    a.link_to(b)
                graph.configure()
                self._scalers[(size, turns)] = graph
            graph.push(frame)
            return graph.pull().to_ndarray()
        except av.error.FFmpegError as e:  # e.g. a frame whose size differs from the stream's
            raise ValueError(f"cannot scale frame {idx} of {self.path}: {e}") from None

    def close(self) -> None:
        self._container.close()

    def _frame(self, idx: int):
        if not 0 <= idx < self._count:
            raise IndexError(idx)
        if idx in self._recent:
            return self._recent[idx]
        by_order = self._by_order
        if by_order:
            if self._decoded is None or idx < self._decoded:
                self._rewind()
        elif self._decoded is None or idx < self._decoded or idx - self._decoded > 32:
            self._seek(idx)  # backwards, or far ahead: from the keyframe before it
        frame = self._decode_to(idx)
        back = 2 * RECENT_FRAMES
        while frame is None and self._landed_past(idx) and 0 < idx - back and back <= 32 * RECENT_FRAMES:
            # the seek landed past it (MPEG-TS seeks by byte position, often a keyframe or more late): seek
            # earlier, decoding a few dozen frames more, rather than decoding everything from the start
            self._seek(idx - back)
            frame = self._decode_to(idx)
            back *= 4
        if frame is None and not by_order:
            # still past it: from the start; if even that passes it, the timestamps are not to be trusted
            # (AVI-like): from the start again, numbering frames as they decode
            for _ in range(2):
                self._rewind()
                frame = self._decode_to(idx)
                if frame is not None:
                    break
                self._by_order = True
                self._recent.clear()
        if frame is None:
            raise ValueError(f"cannot decode frame {idx} of {self.path}")
        return frame

    def _decode_to(self, idx: int):
        """Decode on to frame idx, keeping what is decoded on the way; None if the decoder passes it or ends."""
        import av

        try:
            for frame in self._frames:
                if self._by_order:
                    i = 0 if self._decoded is None else self._decoded + 1
                else:
                    i = self._index.get(frame.pts)
                    if i is None or (self._decoded is not None and i <= self._decoded):
                        # a timestamp no packet had, or one going backwards: number frames as they decode
                        self._by_order = True
                        self._recent.clear()
                        return None
                self._decoded = i
                self._recent[i] = frame  # frames before the target too: the next ones a backward read asks for
                while len(self._recent) > RECENT_FRAMES:
                    self._recent.popitem(last=False)
                if i >= idx:
                    return frame if i == idx else None
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode frame {idx} of {self.path}: {e}") from None
        return None

    def _landed_past(self, idx: int) -> bool:
        """Whether the decoder, trusting timestamps, went past frame idx without giving it."""
        return not self._by_order and self._decoded is not None and self._decoded > idx

    def _seek(self, idx: int) -> None:
        self._container.seek(self._pts[idx], stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._decoded = None
        self.seeks += 1

    def _rewind(self) -> None:
        """Open the file again and decode from its first frame."""
        import av

        self._container.close()
        try:
            self._container = av.open(self.path)
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot open video {self.path}: {e}") from None
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = self._container.decode(self._stream)
        self._decoded = None
        self.seeks += 1
        self.rewinds += 1
