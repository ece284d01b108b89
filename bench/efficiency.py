"""How much of this machine's own fp32 GEMM rate each workload reaches, ours vs Meta's, same weights, same run.

    python bench/efficiency.py [--model sam2.1_hiera_tiny] [--encoder-size 1024] [--track-size 512] [--pairs 7]
    python bench/efficiency.py --host-malloc system      # glibc's default allocator, for an A/B

FLOPs are counted with torch.utils.flop_counter (matmuls, convolutions, attention) on an untimed call of the same
work. The host's speed drifts, so every timing is paired with a GEMM timing taken just before
it, and each row shows the median over pairs of (FLOPs / time) / GEMM FLOP/s, with the pairs' range. Both sides
get the same preprocessed tensors, so only the networks and their glue are compared.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import reference_and_ours, test_image
from video_tracking import object_prompts
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

WARM = 16  # tracking frames before the memory bank and the pointer list are full (constant work per frame after)


def gemm_rate(n: int = 1536, repeat: int = 3) -> float:
    """fp32 FLOP/s of an n x n x n matmul right now (best of `repeat`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _cpu_attention_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _fused_linear_flops(x, w, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x[:-1]) * x[-1] * w[0]


# torch's counter knows the CUDA attention kernels but not the one SDPA picks on the CPU (without it, attention,
# most of a tracking step's work, would count as zero FLOPs), nor oneDNN's fused linear (our modeling/linear.py)
_CPU_OPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    _CPU_OPS[torch.ops.mkldnn._linear_pointwise] = _fused_linear_flops


def flops_of(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=_CPU_OPS) as counter:
        fn()
    return counter.get_total_flops()


def paired(fns_flops: list[tuple[callable, int]]) -> list[float]:
    """For each (fn, flops): a GEMM timing, then fn timed once; the achieved fraction of the GEMM rate."""
    out = []
    for fn, flops in fns_flops:
        rate = gemm_rate()
        t = time.perf_counter()
        fn()
        out.append(flops / (time.perf_counter() - t) / rate)
    return out


def repeated(fn, pairs: int) -> list[float]:
    """The same call `pairs` times (after one warm-up), paired with GEMM timings."""
    fn()
    return paired([(fn, flops_of(fn))] * pairs)


def encoder_rows(ref, ours, size: int, pairs: int) -> dict:
    x = torch.randn(1, 3, size, size)
    return {f"image encoder @ {size}px": (repeated(lambda: ours.forward_image(x), pairs),
                                          repeated(lambda: ref.forward_image(x), pairs))}


def click_rows(ref, ours, pairs: int) -> dict:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from model_core import ImagePredictor

    from tests.reference import fit_to_image_size

    image = test_image(768, 1024)
    theirs, mine = fit_to_image_size(SAM2ImagePredictor(ref), ours.image_size), ImagePredictor(ours)
    theirs.set_image(image)
    mine.set_image(image)
    point = dict(point_coords=np.array([[512, 384]]), point_labels=np.array([1]))
    return {"click on a cached image": (repeated(lambda: mine.predict(**point), pairs),
                                        repeated(lambda: theirs.predict(**point), pairs))}


def ours_steps(model, frames: list[torch.Tensor], k: int, size: int):
    """A function that tracks the next frame each call (frame 0 carries k clicks)."""
    from model_core.video_tracker import VideoTracker

    tracker = VideoTracker(model)
    state = tracker.new_state(size, size, num_frames=len(frames))
    for i, p in enumerate(object_prompts(k, size, size)):
        tracker.add_prompt(state, i + 1, points=[list(p)], labels=[1])
    it = iter(frames)
    return lambda: tracker.track(state, next(it))


def reference_steps(ref, frames: list[torch.Tensor], k: int, size: int):
    from tests.model_core.video_fixtures import reference_state

    pixels = [np.zeros((size, size, 3), np.uint8)] * len(frames)
    state = reference_state(ref, pixels, frames, Path(tempfile.mkdtemp()))
    for i, p in enumerate(object_prompts(k, size, size)):
        ref.add_new_points_or_box(state, 0, i + 1, points=[list(p)], labels=[1])
    gen = ref.propagate_in_video(state)
    return lambda: next(gen)


def tracking_rows(ref, ours, size: int, pairs: int, objects: list[int]) -> dict:
    """Steady-state tracking steps: FLOPs counted on the frames just before and after the timed ones (equal)."""
    torch.manual_seed(0)
    frames = [torch.randn(3, size, size) for _ in range(WARM + pairs + 2)]
    rows = {}
    for k in objects:
        fractions = []
        for make, model in ((ours_steps, ours), (reference_steps, ref)):
            step = make(model, frames, k, size)
            for _ in range(WARM):
                step()
            before = flops_of(step)
            fractions.append(paired([(step, before)] * pairs))
            after = flops_of(step)
            if after != before:
                raise RuntimeError(f"tracking work is not steady yet: {before} then {after} FLOPs per frame")
        rows[f"tracking step @ {size}px, {k} object(s)"] = tuple(fractions)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--encoder-size", type=int, default=1024)
    ap.add_argument("--track-size", type=int, default=512)
    ap.add_argument("--objects", default="1,8")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--only", default="encoder,click,tracking")
    ap.add_argument("--json", type=Path, help="also write the fractions here")
    ap.add_argument("--host-malloc", choices=("keep", "system"), default="keep",
                    help="glibc malloc as the service sets it (SAM2_HOST_MALLOC, both sides share it), or its default")
    ap.add_argument("--plain-linear", action="store_true",
                    help="ours without the bias fused into oneDNN's GEMM (modeling/linear.py), for an A/B")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.plain_linear:
        from model_core.modeling import linear

        linear._FUSED = None
    if args.host_malloc == "keep":
        from model_core.host_memory import keep_freed_memory

        keep_freed_memory()
    parts = args.only.split(",")

    rows = {}
    if "encoder" in parts or "click" in parts:
        ref, ours = reference_and_ours(args.model, args.encoder_size)
        ref.requires_grad_(False)  # the FLOP counter's module hooks need it under no_grad; fp32: no autocast
        if "encoder" in parts:
            rows |= encoder_rows(ref, ours, args.encoder_size, args.pairs)
        if "click" in parts:
            rows |= click_rows(ref, ours, args.pairs)
    if "tracking" in parts:
        from tests.model_core.video_fixtures import reference_video_predictor
        from tests.reference import ours_from_reference

        ref = reference_video_predictor(args.model, args.track_size)
        ours = ours_from_reference(ref, args.model, args.track_size)
        rows |= tracking_rows(ref, ours, args.track_size, args.pairs, [int(v) for v in args.objects.split(",")])

    print(f"\n{args.model}, {torch.get_num_threads()} threads, fp32, host malloc {args.host_malloc}; fraction of this machine's fp32 GEMM rate "
          f"(median of {args.pairs} pairs, [min-max])")
    print(f"| {'workload':40s} | {'ours':>17s} | {'reference':>17s} | {'ours/ref':>8s} |")
    print(f"|{'-' * 42}|{'-' * 19}|{'-' * 19}|{'-' * 10}|")
    for what, (mine, theirs) in rows.items():
        m, t = statistics.median(mine), statistics.median(theirs)
        print(f"| {what:40s} | {m:5.0%} [{min(mine):3.0%}-{max(mine):3.0%}] | "
              f"{t:5.0%} [{min(theirs):3.0%}-{max(theirs):3.0%}] | {m / t:7.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({k: {"ours": v[0], "reference": v[1]} for k, v in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
