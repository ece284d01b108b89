"""Image path speed, ours vs Meta's SAM2ImagePredictor, same random weights and image, same run.

    python bench/image_encoder.py [--model sam2.1_hiera_tiny] [--size 1024x768] [--repeat 3]

Prints set_image (encoder), one click, and eight boxes in one call, in fp32 and bf16 autocast (CPU).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import print_table, reference_and_ours, test_image, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--size", default="1024x768", help="image WxH")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtypes", default="fp32,bf16")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from model_core import ImagePredictor
    from model_core.precision import parse_dtype

    torch.set_grad_enabled(False)
    ref_model, our_model = reference_and_ours(args.model)
    image = test_image(h, w)
    point = dict(point_coords=np.array([[w // 2, h // 2]]), point_labels=np.array([1]))
    boxes = dict(box=np.array([[40 * i, 30 * i, w // 2 + 40 * i, h // 2 + 30 * i] for i in range(8)]),
                 multimask_output=False)
    rows = []
    for name in args.dtypes.split(","):
        dtype = parse_dtype(name)
        theirs, ours = SAM2ImagePredictor(ref_model), ImagePredictor(our_model, dtype=dtype)

        def ref_ctx(fn):
            def run():
                if dtype == torch.float32:
                    return fn()
                with torch.autocast("cpu", dtype=dtype):
                    return fn()
            return run

        rows.append((f"set_image {w}x{h} [{name}]", timed(lambda: ours.set_image(image), args.repeat),
                     timed(ref_ctx(lambda: theirs.set_image(image)), args.repeat)))
        rows.append((f"predict 1 point [{name}]", timed(lambda: ours.predict(**point), args.repeat * 3),
                     timed(ref_ctx(lambda: theirs.predict(**point)), args.repeat * 3)))
        rows.append((f"predict 8 boxes in one call [{name}]", timed(lambda: ours.predict(**boxes), args.repeat),
                     timed(ref_ctx(lambda: theirs.predict(**boxes)), args.repeat)))
    print_table(f"{args.model}, {w}x{h} image, {torch.get_num_threads()} threads, median of {args.repeat}", rows)


if __name__ == "__main__":
    main()
