"""Host-side work of a tracking step under autocast: aten ops dispatched per step and ms per step at a small
image size, where the compute is small and the host's dispatching dominates, as it does for a step on a GPU
(bench/gpu_check.sh profiles that). Ours keeping autocast's weight copies, ours casting weights on every call,
and Meta's SAM2VideoPredictor (propagating inside one autocast block, as its README shows), same weights. Then
the ops of a set_image and of a click on the cached image, against Meta's SAM2ImagePredictor.

    python bench/step_overhead.py [--image-size 128] [--objects 1,8] [--dtype bf16] [--frames 16] [--json F]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import as_meta_builds_it, print_table
from torch.utils._python_dispatch import TorchDispatchMode
from video_tracking import WARM, _ref_tensor, clip, object_prompts

os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's progress bars


class Ops(TorchDispatchMode):
    """Counts the aten ops that reach the backend (autocast's casts included)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def ours(model, frames, k, dtype, keep: bool) -> tuple[int, int, float]:
    """(ops in the last step, of them dtype conversions, median s per step from frame WARM on)."""
    from model_core.modeling.autocast_weights import kept
    from model_core.video_tracker import VideoTracker

    tracker = VideoTracker(model, dtype=dtype)
    state = tracker.new_state(*frames[0].shape[:2])
    for i, (x, y) in enumerate(object_prompts(k)):
        tracker.add_prompt(state, i + 1, points=[[x, y]], labels=[1])
    times = []
    with kept(keep):
        for f in frames[:-1]:
            t = time.perf_counter()
            tracker.track(state, f)
            times.append(time.perf_counter() - t)
        with Ops() as counted:
            tracker.track(state, frames[-1])
    return _summary(counted, times)


def reference(ref, frames, k, dtype) -> tuple[int, int, float]:
    from tests.model_core.video_fixtures import reference_state

    state = reference_state(ref, frames, [_ref_tensor(ref, f) for f in frames], Path(tempfile.mkdtemp()))
    for i, (x, y) in enumerate(object_prompts(k)):
        ref.add_new_points_or_box(state, 0, i + 1, points=[[x, y]], labels=[1])
    times = []
    with torch.autocast("cpu", dtype=dtype):
        steps = ref.propagate_in_video(state)
        for _ in range(len(frames) - 1):
            t = time.perf_counter()
            next(steps)
            times.append(time.perf_counter() - t)
        with Ops() as counted:
            next(steps)
    return _summary(counted, times)


def counted_ops(fn) -> tuple[int, int]:
    """(aten ops, of them dtype conversions) of one fn() call after a first, warming one."""
    fn()
    with Ops() as counted:
        fn()
    return sum(counted.ops.values()), counted.ops["_to_copy"] + counted.ops["to"]


def image_rows(model, image_size: int, dtype) -> list[tuple[str, float, float]]:
    """Ops of a set_image and of a click on the cached image: ours (both ways) and SAM2ImagePredictor."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from _common import test_image
    from model_core import ImagePredictor
    from model_core.modeling.autocast_weights import kept
    from tests.reference import build_reference, fit_to_image_size

    image, click = test_image(192, 256), dict(point_coords=[[100.0, 80.0]], point_labels=[1])
    ours = ImagePredictor(model, dtype=dtype)
    theirs = fit_to_image_size(SAM2ImagePredictor(as_meta_builds_it(build_reference("sam2.1_hiera_tiny",
                                                                                    image_size))), image_size)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):  # as Meta's README runs it
        ref_set = counted_ops(lambda: theirs.set_image(image))
        ref_click = counted_ops(lambda: theirs.predict(**click))
    rows = []
    for keep, label in ((True, "keeping weight copies"), (False, "casting on every call")):
        with kept(keep):
            mine_set = counted_ops(lambda: ours.set_image(image))
            mine_click = counted_ops(lambda: ours.predict(**click))
        rows += [(f"ops per set_image, ours {label}", mine_set[0], ref_set[0]),
                 (f"ops per click, ours {label}", mine_click[0], ref_click[0])]
    return rows


def _summary(counted: Ops, times: list[float]) -> tuple[int, int, float]:
    casts = counted.ops["_to_copy"] + counted.ops["to"]
    return sum(counted.ops.values()), casts, statistics.median(times[WARM:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--objects", default="1,8")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--json", help="also write the figures here: {objects: {side: [ops, conversions, s]}, "
                    "image: {what: [ours, reference]}}")
    args = ap.parse_args()

    from model_core.precision import parse_dtype
    from tests.model_core.video_fixtures import reference_video_predictor
    from tests.reference import ours_from_reference

    torch.set_grad_enabled(False)
    dtype = parse_dtype(args.dtype)
    ref = reference_video_predictor("sam2.1_hiera_tiny", args.image_size)
    model = ours_from_reference(ref, "sam2.1_hiera_tiny", args.image_size)
    as_meta_builds_it(ref)
    frames = clip(args.frames)
    figures = {}
    for k in (int(v) for v in args.objects.split(",")):
        cast_each, kept_copies = ours(model, frames, k, dtype, keep=False), ours(model, frames, k, dtype, keep=True)
        theirs = reference(ref, frames, k, dtype)
        figures[k] = {"ours": kept_copies, "ours casting": cast_each, "reference": theirs}
        what = f"{k} object(s) [{args.dtype}]"
        print_table(f"tracking step, tiny @ {args.image_size}px, {what}; ratio = reference / ours", [
            ("ops per step, ours keeping weight copies", kept_copies[0], theirs[0]),
            ("ops per step, ours casting on every call", cast_each[0], theirs[0]),
            ("dtype conversions per step, ours keeping", kept_copies[1], theirs[1]),
            ("dtype conversions per step, ours casting", cast_each[1], theirs[1]),
            ("ms per step, ours keeping weight copies", kept_copies[2] * 1e3, theirs[2] * 1e3),
            ("ms per step, ours casting on every call", cast_each[2] * 1e3, theirs[2] * 1e3),
        ], unit=" ")
    rows = image_rows(model, args.image_size, dtype)
    print_table(f"image, tiny @ {args.image_size}px [{args.dtype}], 256x192 image; ratio = reference / ours", rows,
                unit=" ")
    figures["image"] = {what: [ours_n, ref_n] for what, ours_n, ref_n in rows}
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
