"""Segment-everything speed, ours vs Meta's SAM2AutomaticMaskGenerator, same weights and image, same run.

    python bench/amg.py [--points-per-side 32] [--points-per-batch 64] [--dtypes fp32,bf16]

Random weights make most masks fail the default quality thresholds; the work done per point (decoder,
upsampling, scoring) is the same, and both generators are given the same parameters.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import print_table, reference_and_ours, test_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.8)
    ap.add_argument("--stability-score-thresh", type=float, default=0.95)
    ap.add_argument("--dtypes", default="fp32,bf16")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from model_core.automatic_mask_generator import AutomaticMaskGenerator
    from model_core.precision import parse_dtype

    torch.set_grad_enabled(False)
    ref_model, our_model = reference_and_ours(args.model)
    image = test_image(h, w)
    params = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                  pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh)
    rows = []
    for name in args.dtypes.split(","):
        dtype = parse_dtype(name)
        ours = AutomaticMaskGenerator(our_model, dtype=dtype, **params)
        theirs = SAM2AutomaticMaskGenerator(ref_model, **params)
        t = time.perf_counter()
        n_ours = len(ours.generate(image))
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        if dtype == torch.float32:
            n_ref = len(theirs.generate(image))
        else:
            with torch.autocast("cpu", dtype=dtype):
                n_ref = len(theirs.generate(image))
        t_ref = time.perf_counter() - t
        rows.append((f"generate, {args.points_per_side}^2 points [{name}] ({n_ours} vs {n_ref} masks)", t_ours, t_ref))
    print_table(f"AMG {args.model}, {w}x{h}, {params}", rows)


if __name__ == "__main__":
    main()
