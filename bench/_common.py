"""Shared bench helpers: the reference oracle with our weights, timing, and the ratio table."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/x.py` from the repo root


def timed(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def print_table(title: str, rows: list[tuple[str, float, float]], unit: str = "s") -> None:
    """rows: (what, ours, reference). Ratio = reference / ours (> 1: we are faster)."""
    print(f"\n{title}")
    print(f"| {'measurement':44s} | {'ours':>10s} | {'reference':>10s} | {'ref/ours':>8s} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 12}|{'-' * 10}|")
    for what, ours, ref in rows:
        ratio = ref / ours if ours else float("nan")
        print(f"| {what:44s} | {ours:9.3f}{unit[0]} | {ref:9.3f}{unit[0]} | {ratio:7.2f}x |")


def as_meta_builds_it(ref):
    """The reference's weights as Meta's build_sam2 leaves them, requiring grad. Under no_grad (Meta's image
    predictor and mask generator) autocast then casts each weight once per autocast block rather than on every
    call, as it does for Meta's users; under inference mode (its video predictor) it casts on every call either
    way. Bench runs before 2026-11-28 turned grad off, so the reference cast on every call everywhere."""
    return ref.requires_grad_(True)


def reference_and_ours(name: str = "sam2.1_hiera_tiny", image_size: int | None = None):
    """Meta's model (as Meta builds it) and ours with the same seeded random weights (needs the test extra)."""
    from tests.reference import build_reference, ours_from_reference

    ref = build_reference(name, image_size)
    ours = ours_from_reference(ref, name, image_size)
    return as_meta_builds_it(ref), ours


def test_image(h: int = 768, w: int = 1024):
    from tests.fixtures import synthetic_image

    return synthetic_image(h, w)
