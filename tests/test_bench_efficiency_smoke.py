"""bench/efficiency.py runs end to end at a small size (CI keeps it from rotting; its figures mean nothing here)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_efficiency_bench_measures_every_pass_for_both_models(tmp_path):
    out = tmp_path / "fractions.json"
    proc = subprocess.run([sys.executable, "bench/efficiency.py", "--encoder-size", "128", "--track-size", "128",
                           "--objects", "1,2", "--pairs", "2", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert set(rows) == {"image encoder @ 128px", "click on a cached image", "tracking step @ 128px, 1 object(s)",
                         "tracking step @ 128px, 2 object(s)"}
    for what, sides in rows.items():  # FLOPs counted (attention and fused linears included) and timed
        assert all(0 < f < 5 for f in sides["ours"] + sides["reference"]), (what, sides)
        assert len(sides["ours"]) == len(sides["reference"]) == 2
    assert "fraction of this machine's fp32 GEMM rate" in proc.stdout
