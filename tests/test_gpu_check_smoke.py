"""bench/gpu_check.sh --smoke: every part of the GPU check runs on the CPU (tiny, 128 px), so it never rots."""

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_part(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--smoke", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    parts = {json.loads(line)["part"] for line in (out / "results.jsonl").read_text().splitlines()}
    assert parts == {"image", "amg", "video", "service", "compile", "refcompile"}
    assert "passed" in (out / "tests.log").read_text() and "failed" not in (out / "tests.log").read_text()
    assert (out / "results.md").read_text().count("###") == 6
    assert "tracking steps" in (out / "profile.txt").read_text()
    assert "segment-everything" in (out / "profile.txt").read_text()
