"""The CPU image built for real and run, offline: `.ci/image.sh` bootstraps a Debian base with mmdebstrap and
builds docker/Dockerfile with podman (no Docker Hub). Checked from outside: it serves, exports metrics, runs as
uid 10001, can write only its data volume (and the sticky temp directories), passes its healthcheck, and
drains an in-flight request on SIGTERM. Then the compose stack (service + Redis + Prometheus; Grafana has no
offline image) from docker-compose.yml: a /v1/track session resumed after `podman restart` of Redis, and
Prometheus scraping the service.

Needs root (apt, mmdebstrap, podman with runc). Outside CI it skips where podman cannot run; in CI
(`SAM2_CI=1`) it never skips. First build ~5 min, a cached rebuild under a minute (README, Deployment).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time

import cv2
import httpx
import pytest

from tests.fixtures import free_port

from .conftest import IN_CI, REPO, TOOLS

IMAGE = "localhost/sam2-service:cpu"
WORK = TOOLS / "image"  # .ci/image.sh's tools, containers.conf and build record
EXAMPLE = REPO / "docs" / "example.jpg"
PROJECT = f"sam2test{os.getpid()}"  # compose project: its containers, network and volumes carry this name


def podman_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(WORK / "containers.conf"),
            "PATH": f"{WORK / 'compose' / 'bin'}:{os.environ['PATH']}", **extra}


def sh(*cmd, env: dict | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env=env or podman_env())
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                    pytrace=False)
    return proc


def podman_cannot_run() -> str | None:
    """Why this machine cannot build and run the image (None: it can)."""
    if os.geteuid() != 0:
        return "podman cannot run here: the offline image build needs root (apt, mmdebstrap, podman with runc)"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "podman is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    reason = podman_cannot_run()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} -- in CI (SAM2_CI=1) the image must be built", pytrace=False)
        pytest.skip(reason)
    started = time.monotonic()
    build = sh("bash", REPO / ".ci" / "image.sh", timeout=1800)
    print(f"\n.ci/image.sh: {time.monotonic() - started:.0f} s\n{build.stderr}")
    return IMAGE


def wait_ready(url: str, timeout: float, container: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    logs = sh("podman", "logs", container, check=False)
    pytest.fail(f"{container}: /readyz not 200 within {timeout} s\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


def run_container(image: str, port: int, *env: str) -> str:
    """A detached container of the image on 127.0.0.1:port (random weights, small model input)."""
    envs = [a for e in ("SAM2_WEIGHTS=random", "SAM2_IMAGE_SIZE=256", *env) for a in ("-e", e)]
    return sh("podman", "run", "-d", "--label", f"io.sam2-service.test={PROJECT}", "-p", f"127.0.0.1:{port}:8000",
              *envs, image).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def container(image):
    port = free_port()
    cid = run_container(image, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 180, cid)
        yield cid, f"http://127.0.0.1:{port}"
    finally:
        sh("podman", "rm", "-f", "-v", cid, check=False)


def segment(url: str) -> httpx.Response:
    objects = json.dumps([{"points": [[240, 180]], "labels": [1]}])
    return httpx.post(f"{url}/v1/segment", files={"image": ("example.jpg", EXAMPLE.read_bytes(), "image/jpeg")},
                      data={"objects": objects}, timeout=120)


# ---- the image, alone ----------------------------------------------------------------------------------------


def test_image_serves_a_segment_with_the_torch_the_build_recorded(container):
    cid, url = container
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    loaded = httpx.get(f"{url}/v1/models", timeout=10).json()["loaded"]
    assert loaded["random_weights"] and loaded["image_size"] == 256 and loaded["device"] == "cpu"
    r = segment(url)
    assert r.status_code == 200, r.text
    masks = r.json()
    assert (masks["width"], masks["height"]) == (480, 360)
    record = dict(kv.split("=", 1) for kv in (WORK / "build.env").read_text().split())
    torch = sh("podman", "exec", cid, "python", "-c", "import torch; print(torch.__version__, torch.version.cuda)")
    print(f"\nimage {IMAGE}: torch {torch.stdout.strip()} (build record: {record})")
    version, cuda = torch.stdout.split()
    assert cuda == "None"
    if record["TORCH_VERSION"] != "(Dockerfile default)":
        assert version == record["TORCH_VERSION"]


def test_image_exports_metrics(container):
    _, url = container
    assert segment(url).status_code == 200
    text = httpx.get(f"{url}/metrics", timeout=10).text
    count = [line for line in text.splitlines()
             if line.startswith('sam2_request_duration_seconds_count{method="POST",route="/v1/segment",status="200"}')]
    assert count and float(count[0].split()[-1]) >= 1, text[:2000]


def test_image_runs_as_uid_10001(container):
    cid, _ = container
    status = sh("podman", "exec", cid, "cat", "/proc/1/status").stdout  # the server process itself
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
    assert set(uids) == {"10001"} and set(gids) == {"10001"}, (uids, gids)
    assert sh("podman", "image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip() == "10001:10001"


def test_image_user_can_write_only_its_data_volume(image):
    """Every path the image's user may write: /weights (the data volume), else only sticky world-writable
    temp directories (/tmp, /var/tmp, /run/lock), where it cannot touch what others put."""
    find = sh("podman", "run", "--rm", "--no-healthcheck", "--entrypoint", "find", image, "/",
              "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", "/dev", ")", "-prune",
              "-o", "-writable", "-printf", r"%p %m %y\n", check=False)  # rc 1: unreadable dirs (/root)
    writable = [line.split() for line in find.stdout.splitlines()]
    assert ["/weights", "775", "d"] in writable, find.stdout
    others = [w for w in writable if w[0] != "/weights" and not w[0].startswith("/weights/")]
    # /var/lock is Debian's symlink to /run/lock (a link reports 777)
    assert all((mode, kind) == ("1777", "d") or (path, kind) == ("/var/lock", "l") for path, mode, kind in others), \
        others
    assert {w[0] for w in others} <= {"/tmp", "/var/tmp", "/run/lock", "/var/lock"}, others


def test_image_healthcheck_passes(container):
    cid, _ = container
    config = sh("podman", "inspect", "--format", "{{json .Config.Healthcheck}}", cid).stdout
    assert "/healthz" in config, config
    check = sh("podman", "healthcheck", "run", cid, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sigterm_drains_an_inflight_request(image):
    """A segment-everything (~3 s here) started before SIGTERM completes with 200; then the process exits 0."""
    port = free_port()
    cid = run_container(image, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 180, cid)

        def everything_steps() -> float:
            text = httpx.get(f"{url}/metrics", timeout=10).text
            line = [x for x in text.splitlines() if x.startswith('sam2_step_seconds_count{kind="everything"}')]
            return float(line[0].split()[-1]) if line else 0.0

        result: dict = {}

        def slow_request() -> None:
            with httpx.Client(timeout=60) as c:
                result["response"] = c.post(f"{url}/v1/segment/everything", data={"points_per_side": "20"},
                                            files={"image": ("example.jpg", EXAMPLE.read_bytes(), "image/jpeg")})
            result["done"] = time.monotonic()

        thread = threading.Thread(target=slow_request)
        thread.start()
        deadline = time.monotonic() + 60
        while everything_steps() < 1:  # the job is running: its first steps are done, most are still to come
            assert time.monotonic() < deadline and thread.is_alive(), result
            time.sleep(0.05)
        signalled = time.monotonic()
        sh("podman", "kill", "--signal", "TERM", cid)
        thread.join(60)
        exit_code = sh("podman", "wait", cid, timeout=60).stdout.strip()
        assert "response" in result
        assert result["response"].status_code == 200, result["response"].text
        assert result["done"] > signalled  # it was in flight when the signal came
        assert "annotations" in result["response"].json()
        assert exit_code == "0", sh("podman", "logs", cid, check=False).stderr[-3000:]
        logs = sh("podman", "logs", cid).stderr
        assert "Waiting for connections to close" in logs and "Application shutdown complete" in logs, logs[-3000:]
    finally:
        sh("podman", "rm", "-f", "-v", cid, check=False)


# ---- the compose stack ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(image):
    """docker-compose.yml's sam2 + redis + prometheus under podman-compose, on free loopback ports."""
    ports = {"SAM2_HTTP_PORT": free_port(), "PROMETHEUS_PORT": free_port()}
    env = podman_env(REDIS_PASSWORD=secrets.token_hex(16), SAM2_WEIGHTS="random", BIND_ADDRESS="127.0.0.1",
                     **{k: str(v) for k, v in ports.items()})
    compose = ["podman-compose", "-p", PROJECT, "-f", REPO / "docker-compose.yml"]
    try:
        sh(*compose, "up", "-d", "sam2", "redis", "prometheus", env=env, timeout=300)
        url = f"http://127.0.0.1:{ports['SAM2_HTTP_PORT']}"
        wait_ready(url, 300, f"{PROJECT}_sam2_1")  # the compose file serves the model at 1024 px
        yield {"url": url, "prometheus": f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}", "env": env}
    finally:
        sh(*compose, "down", "-v", env=env, check=False, timeout=300)
        left = {kind: sh("podman", kind, "ls", "-q", "--filter", f"name={PROJECT}", check=False).stdout.split()
                for kind in ("volume", "network")}
        left["container"] = sh("podman", "ps", "-aq", "--filter", f"name={PROJECT}", check=False).stdout.split()
        assert not any(left.values()), f"the compose stack left {left}"


def frame(width: int = 240, height: int = 180) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(EXAMPLE)), (width, height)))
    assert ok
    return buf.tobytes()


def test_compose_track_session_resumes_after_redis_restarts(stack):
    from service.client import TrackError, TrackSession

    ws_url = stack["url"].replace("http://", "ws://") + "/v1/track"
    session = TrackSession.open(ws_url)
    try:
        session.add_prompt(1, points=[[120, 90]], labels=[1])
        assert [session.send_frame(frame())["frame_idx"] for _ in range(2)] == [0, 1]
    finally:
        session.close(end_session=False)  # disconnect; the session stays in Redis
    sid, token = session.session_id, session.resume_token

    redis = f"{PROJECT}_redis_1"
    started = sh("podman", "inspect", "--format", "{{.State.StartedAt}}", redis).stdout
    sh("podman", "restart", redis, timeout=60)
    assert sh("podman", "inspect", "--format", "{{.State.StartedAt}}", redis).stdout != started

    deadline = time.monotonic() + 60
    while True:  # Redis reloads its append-only file; the service's client reconnects on its next command
        try:
            resumed = TrackSession.resume(ws_url, sid, token)
            break
        except TrackError as exc:
            assert exc.code == "store_unavailable" and time.monotonic() < deadline, exc
            time.sleep(1)
    try:
        assert resumed.frame_idx == 2
        masks = resumed.send_frame(frame())
        assert masks["frame_idx"] == 2 and [o["obj_id"] for o in masks["objects"]] == [1]
    finally:
        resumed.close()  # ends the session: deleted from Redis


def test_compose_prometheus_scrapes_the_service(stack):
    assert segment(stack["url"]).status_code == 200

    def query(q: str) -> list:
        r = httpx.get(f"{stack['prometheus']}/api/v1/query", params={"query": q}, timeout=10)
        return r.json()["data"]["result"] if r.status_code == 200 else []

    deadline = time.monotonic() + 120  # DNS discovery refreshes every 15 s, scrapes every 5 s
    want = {'up{job="sam2-service"}': 1,
            'sum(sam2_request_duration_seconds_count{job="sam2-service",route="/v1/segment",status="200"})': 1}
    while True:
        got = {q: [float(r["value"][1]) for r in query(q)] for q in want}
        if all(v and min(v) >= want[q] for q, v in got.items()):
            break
        assert time.monotonic() < deadline, got
        time.sleep(2)
    buckets = query('sam2_request_duration_seconds_bucket{job="sam2-service",route="/v1/segment",status="200"}')
    assert len(buckets) > 1 and max(float(b["value"][1]) for b in buckets) >= 1, buckets
