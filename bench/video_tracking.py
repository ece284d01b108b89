"""Video tracking speed and memory, ours vs Meta's SAM2VideoPredictor, same clip and weights, same run.

    python bench/video_tracking.py [--image-size 1024] [--frames 12] [--objects 1,3,8] [--dtypes fp32,bf16]
    python bench/video_tracking.py --rss-frames 300 --image-size 512     # peak RSS of a long stream

Steady state: frames from index 8 on (the memory bank is full by then; earlier frames are cheaper).
Ours is the streaming VideoTracker (objects batched); the reference loops over objects.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch
from _common import as_meta_builds_it, print_table

WARM = 8


def clip(n: int, h: int = 480, w: int = 640) -> list[np.ndarray]:
    from tests.fixtures import synthetic_clip

    return synthetic_clip(n, h, w)


def object_prompts(k: int, h: int = 480, w: int = 640) -> list[tuple[float, float]]:
    rng = np.random.default_rng(0)
    return [(float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.1, 0.9) * h)) for _ in range(k)]


def ours_fps(model, frames, k, dtype, warm: int = WARM, sync=None) -> float:
    """Our frames/s with k clicked objects, from frame `warm` on (memory bank full). sync: called after each
    frame, so that a frame's time includes its device work (`torch.cuda.synchronize` on a GPU)."""
    from model_core.video_tracker import VideoTracker

    tracker = VideoTracker(model, dtype=dtype)
    state = tracker.new_state(*frames[0].shape[:2], num_frames=len(frames))
    for i, (x, y) in enumerate(object_prompts(k)):
        tracker.add_prompt(state, i + 1, points=[[x, y]], labels=[1])
    times = []
    for f in frames:
        t = time.perf_counter()
        tracker.track(state, f)
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t)
    return len(times[warm:]) / sum(times[warm:])


def reference_fps(ref, frames, k, dtype, tmp) -> float:
    from tests.model_core.video_fixtures import reference_state

    state = reference_state(ref, frames, [_ref_tensor(ref, f) for f in frames], tmp)
    for i, (x, y) in enumerate(object_prompts(k)):
        ref.add_new_points_or_box(state, 0, i + 1, points=[[x, y]], labels=[1])
    times, t = [], time.perf_counter()
    ctx = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else torch.inference_mode()
    with ctx:
        for _ in ref.propagate_in_video(state):
            now = time.perf_counter()
            times.append(now - t)
            t = now
    return len(times[WARM:]) / sum(times[WARM:])


def _ref_tensor(ref, frame):
    from model_core.transforms import preprocess

    return preprocess(frame, ref.image_size)


def peak_rss_child(which: str, frames: int, image_size: int) -> float:
    """Peak RSS (MiB) of a fresh process streaming `frames` frames with one object."""
    code = f"""
import sys, resource, tempfile, pathlib
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import torch; torch.set_grad_enabled(False)
from video_tracking import clip, object_prompts
frames = clip({frames})
if "{which}" == "ours":
    from model_core import build_model
    from model_core.video_tracker import VideoTracker
    t = VideoTracker(build_model("sam2.1_t", weights="random", image_size={image_size}))
    s = t.new_state(480, 640)
    t.add_prompt(s, 1, points=[list(object_prompts(1)[0])], labels=[1])
    for f in frames:
        t.track(s, f)
else:
    from tests.model_core.video_fixtures import reference_video_predictor, reference_state
    from model_core.transforms import preprocess
    ref = reference_video_predictor("sam2.1_hiera_tiny", {image_size})
    st = reference_state(ref, frames, [preprocess(f, {image_size}) for f in frames], pathlib.Path(tempfile.mkdtemp()))
    ref.add_new_points_or_box(st, 0, 1, points=[list(object_prompts(1)[0])], labels=[1])
    for _ in ref.propagate_in_video(st):
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=12, help=f"frames per run; the first {WARM} are warm-up")
    ap.add_argument("--objects", default="1,3,8")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--rss-frames", type=int, default=0, help="also measure peak RSS of a stream this long")
    args = ap.parse_args()

    import tempfile
    from pathlib import Path

    from model_core.precision import parse_dtype
    from tests.model_core.video_fixtures import reference_video_predictor
    from tests.reference import ours_from_reference

    torch.set_grad_enabled(False)
    ref = reference_video_predictor("sam2.1_hiera_tiny", args.image_size)
    ours = ours_from_reference(ref, "sam2.1_hiera_tiny", args.image_size)
    as_meta_builds_it(ref)
    frames = clip(args.frames)
    rows = []
    for name in args.dtypes.split(","):
        dtype = parse_dtype(name)
        for k in (int(v) for v in args.objects.split(",")):
            o = ours_fps(ours, frames, k, dtype)
            r = reference_fps(ref, frames, k, dtype, Path(tempfile.mkdtemp()))
            rows.append((f"{k} object(s), s per frame [{name}]", 1 / o, 1 / r))
    print_table(f"tracking, tiny @ {args.image_size}px, 640x480 clip, s/frame from frame {WARM} on "
                f"(ratio = speedup)", rows)
    if args.rss_frames:
        rss = [(f"peak RSS, {args.rss_frames}-frame stream, 1 object (MiB)",
                peak_rss_child("ours", args.rss_frames, args.image_size),
                peak_rss_child("ref", args.rss_frames, args.image_size))]
        print_table(f"memory @ {args.image_size}px (ratio = reference / ours)", rss, unit="M")


if __name__ == "__main__":
    main()
