"""/v1/track throughput: 1, 4 and 8 concurrent sessions against a real server, MemoryStore vs RedisStore.

    python bench/track_sessions.py [--image-size 256] [--frames 20] [--sessions 1,4,8] [--deflate-ab]

Starts `sam2-service serve --weights random` twice on 127.0.0.1 (in-process store, then a redis-server it
starts too), runs sessions in threads with the Python client (one object each, frames as PNG) and prints
aggregate frames/s, client-side per-frame p50/p99, and the store's cost per frame (ms and bytes, from the
server's own metrics). Random weights: the work per frame is the real work. --deflate-ab: instead, the in-process
store with WebSocket per-message deflate on (SAM2_WS_DEFLATE=true, the client offering it) and off.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.client import TrackSession  # noqa: E402
from tests.fixtures import synthetic_clip  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402


def serve(image_size: int, redis_url: str | None, log: Path, device: str = "cpu", dtype: str = "fp32",
          model: str = "sam2.1_t", deflate: bool = False) -> ServeProcess:
    env = {"SAM2_TRACK_QUEUE_FRAMES": "64", "SAM2_TRACK_SESSIONS_PER_KEY": "64", "SAM2_WS_DEFLATE": str(deflate)}
    if redis_url:
        env["SAM2_REDIS_URL"] = redis_url
    args = ["--model", model, "--weights", "random", "--image-size", image_size, "--dtype", dtype,
            "--device", device]
    return ServeProcess(log, args, env, ready_timeout=300)


def metric_sum(port: int, name: str, labels: str = "") -> tuple[float, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    total = re.search(rf"^{name}_sum{re.escape(labels)} (\S+)", text, re.M)
    count = re.search(rf"^{name}_count{re.escape(labels)} (\S+)", text, re.M)
    return (float(total.group(1)), float(count.group(1))) if total and count else (0.0, 0.0)


def run_sessions(port: int, n_sessions: int, frames, deflate: bool = False) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()

    def one():
        s = TrackSession.open(f"ws://127.0.0.1:{port}/v1/track", deflate=deflate)
        s.add_prompt(1, points=[[200, 240]], labels=[1])
        mine = []
        for f in frames:
            t = time.perf_counter()
            s.send_frame(f)
            mine.append(time.perf_counter() - t)
        s.close()
        with lock:
            latencies.extend(mine[2:])  # the first frames carry the prompt and start-up

    before = [metric_sum(port, "sam2_store_write_seconds"), metric_sum(port, "sam2_store_write_bytes"),
              metric_sum(port, 'sam2_step_batch', '{kind="track"}')]
    threads = [threading.Thread(target=one) for _ in range(n_sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = [metric_sum(port, "sam2_store_write_seconds"), metric_sum(port, "sam2_store_write_bytes"),
             metric_sum(port, 'sam2_step_batch', '{kind="track"}')]
    writes = after[0][1] - before[0][1]
    lat = sorted(latencies)
    return {
        "fps": n_sessions * len(frames) / wall,
        "p50": statistics.median(lat) * 1e3,
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3,
        "store_ms": (after[0][0] - before[0][0]) / max(writes, 1) * 1e3,
        "store_kib": (after[1][0] - before[1][0]) / max(writes, 1) / 1024,
        "batch": (after[2][0] - before[2][0]) / max(after[2][1] - before[2][1], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--sessions", default="1,4,8")
    ap.add_argument("--deflate-ab", action="store_true", help="per-message deflate on vs off (in-process store)")
    args = ap.parse_args()
    frames = synthetic_clip(args.frames, 480, 640)
    tmp = Path(tempfile.mkdtemp())
    redis = None if args.deflate_ab else RedisServer(tmp, appendonly=False).start()
    runs = ([("memory, deflate", None, True), ("memory, no deflate", None, False)] if args.deflate_ab
            else [("memory", None, False), ("redis", redis.url, False)])
    rows = []
    try:
        for store, url, deflate in runs:
            server = serve(args.image_size, url, tmp / f"{store}.log", deflate=deflate)
            try:
                run_sessions(server.port, 1, frames[:4], deflate)  # warm-up
                for n in (int(v) for v in args.sessions.split(",")):
                    r = run_sessions(server.port, n, frames, deflate)
                    rows.append((store, n, r))
            finally:
                server.stop()
    finally:
        if redis is not None:
            redis.stop()
    print(f"\n/v1/track, tiny @ {args.image_size}px, 640x480 PNG frames, {args.frames} frames per session, "
          f"1 object, fp32 CPU")
    print("| store | sessions | frames/s (all) | p50 ms/frame | p99 ms/frame | store ms/write | store KiB/write "
          "| sessions per tracking step |")
    print("|---|---|---|---|---|---|---|---|")
    for store, n, r in rows:
        print(f"| {store} | {n} | {r['fps']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['store_ms']:.2f} | "
              f"{r['store_kib']:.1f} | {r['batch']:.2f} |")


if __name__ == "__main__":
    main()
