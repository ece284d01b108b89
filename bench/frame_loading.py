"""Video file -> model inputs, ours vs Meta's frame loader, same H.264 clip, same run.

    python bench/frame_loading.py [--size 1920x1080] [--frames 30] [--image-size 1024] [--repeat 3]

Ours: PyAV decodes and scales each frame to S x S inside ffmpeg (as decord does for the reference), then
normalises; without PyAV: OpenCV decodes, torch resizes (bicubic). The reference: sam2's
load_video_frames_from_video_file (decord). Prints ms per frame and checks that ours equals the reference's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import print_table, timed


def write_clip(path: Path, frames: int, h: int, w: int) -> None:
    """An H.264 clip of moving synthetic frames (B-frames on, as encoders do by default)."""
    import av

    from tests.fixtures import synthetic_clip

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
        for f in synthetic_clip(frames, h, w):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="1920x1080", help="video WxH")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    s, n = args.image_size, args.frames

    from sam2.utils.misc import load_video_frames_from_video_file

    from model_core.av_frames import AVFileFrames
    from model_core.transforms import preprocess
    from model_core.video_io import VideoFileFrames

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_clip(path, n, h, w)

        def ours():
            src = AVFileFrames(path)
            return [preprocess(src.model_input(i, s), s) for i in range(len(src))]  # per frame, as predictors take them

        def ours_opencv():
            src = VideoFileFrames(path)
            return [preprocess(src[i], s, resize="bicubic") for i in range(len(src))]

        def reference():
            return load_video_frames_from_video_file(str(path), s, True, compute_device=torch.device("cpu"))[0]

        got, expected = torch.stack(ours()), reference()
        print(f"{n} frames {w}x{h} -> {s}x{s}; ours equal to the reference's: max |diff| "
              f"{(got - expected).abs().max().item():.2e}; OpenCV path: mean |diff| "
              f"{(torch.stack(ours_opencv()) - expected).abs().mean().item():.2e}")
        ref_t = timed(reference, args.repeat)
        rows = [("PyAV, scaled in the decoder (the default)", timed(ours, args.repeat) / n * 1e3, ref_t / n * 1e3),
                ("OpenCV + bicubic (without PyAV)", timed(ours_opencv, args.repeat) / n * 1e3, ref_t / n * 1e3)]
        print_table("video file -> normalised model inputs, ms per frame (the reference: decord)", rows, unit="ms")


if __name__ == "__main__":
    main()
