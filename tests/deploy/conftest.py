"""Deployment checks: tools, a real `sam2-service serve` process, and a real Prometheus scraping it.

The tools come from `.ci/tools.sh` (into .tools/, or $SAM2_TOOLS_DIR) and from apt (prometheus, promtool).
Outside CI a missing tool skips the tests that need it; in CI (`SAM2_CI=1`, set by .ci/run) it fails them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.serve_process import ServeProcess

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("SAM2_TOOLS_DIR") or REPO / ".tools")
CHART = REPO / "deploy" / "helm" / "sam2-service"
DASHBOARD = REPO / "deploy" / "grafana" / "sam2-service.json"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
IN_CI = bool(os.environ.get("SAM2_CI"))

_TOOL_PATHS = {
    "helm": TOOLS / "bin" / "helm",
    "kubernetes-validate": TOOLS / "venv" / "bin" / "kubernetes-validate",
    "check-jsonschema": TOOLS / "venv" / "bin" / "check-jsonschema",
    "hadolint": TOOLS / "venv" / "bin" / "hadolint",
    "tools-python": TOOLS / "venv" / "bin" / "python",
    "node-modules": TOOLS / "npm" / "node_modules",
    "grafana-schema": TOOLS / "grafana-schema",
}


def unavailable(what: str) -> None:
    """Skip (locally) or fail (in CI) because a tool is missing."""
    msg = f"{what} is not available: run `bash .ci/tools.sh` (and apt-get install prometheus)"
    if IN_CI:
        pytest.fail(msg + " -- in CI (SAM2_CI=1) every deployment check must run", pytrace=False)
    pytest.skip(msg)


def tool(name: str) -> Path:
    """Path of a tool installed by .ci/tools.sh, or of a system one (promtool, prometheus, node)."""
    path = _TOOL_PATHS.get(name)
    if path is None:
        found = shutil.which(name)
        path = Path(found) if found else None
    if path is None or not path.exists():
        unavailable(name)
    return path


def run(cmd: list, *, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} -> {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
                    pytrace=False)
    return proc


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{log.read_text() if log else ''}")
        try:
            value = predicate()
            if value:
                return value
        except (httpx.TransportError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- a real service process ----------------------------------------------------------------------------

SERVICE_IMAGE_SIZE = 128


def png_bytes(width: int = 96, height: int = 64) -> bytes:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """`sam2-service serve` (tiny model, random weights, 128 px) on a free loopback port, with some traffic."""
    log = tmp_path_factory.mktemp("service") / "serve.log"
    proc = ServeProcess(log, ["--model", "sam2.1_t", "--weights", "random", "--device", "cpu"],
                        env={"SAM2_IMAGE_SIZE": str(SERVICE_IMAGE_SIZE), "SAM2_DTYPE": "fp32", "SAM2_MAX_WAIT_MS": "1"})
    base = proc.url
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(2):
                r = c.post("/v1/segment", files={"image": ("a.png", png_bytes(), "image/png")},
                           data={"objects": json.dumps([{"points": [[40, 30]], "labels": [1]}])})
                assert r.status_code == 200, r.text
            assert c.post("/v1/segment", json={"image_id": "nope", "objects": []}).status_code >= 400
        yield base
    finally:
        proc.stop()


def exported_samples(metrics_text: str) -> set[str]:
    """Every sample name the exposition declares: a family's TYPE gives its suffixes, with or without samples."""
    names: set[str] = set()
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"],
                "summary": ["_count", "_sum", "_created", ""], "gauge": [""], "untyped": [""], "info": ["_info"]}
    for line in io.StringIO(metrics_text):
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()[:4]
            base = family[: -len("_total")] if kind == "counter" and family.endswith("_total") else family
            names.update(base + s for s in suffixes.get(kind, [""]))
        elif line.strip() and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]
