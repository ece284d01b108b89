"""bench/step_overhead.py runs end to end at a small size, and its op counts show what the kept copies remove."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_step_overhead_bench_counts_fewer_ops_with_kept_weight_copies(tmp_path):
    out = tmp_path / "overhead.json"
    proc = subprocess.run([sys.executable, "bench/step_overhead.py", "--image-size", "64", "--objects", "1,2",
                           "--frames", "10", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    image = figures.pop("image")
    assert set(figures) == {"1", "2"}
    for what in ("set_image", "click"):  # the decoder and the encoder drop their casts too
        kept_ops = image[f"ops per {what}, ours keeping weight copies"]
        cast_ops = image[f"ops per {what}, ours casting on every call"]
        assert kept_ops[0] < cast_ops[0] - 20 and kept_ops[1] == cast_ops[1] > 0  # same reference count both times
    for sides in figures.values():
        (ops, casts, s), (ops_cast, casts_cast, _) = sides["ours"], sides["ours casting"]
        assert casts_cast - casts > 100  # every linear and convolution cast its weight and bias, once per step
        assert ops_cast - ops == casts_cast - casts  # and that is all that changes
        assert s > 0 and all(v > 0 for v in sides["reference"])
