"""/v1/track throughput: 1, 4 and 8 concurrent sessions against a real server, MemoryStore vs RedisStore.

    python bench/track_sessions.py [--image-size 256] [--frames 20] [--sessions 1,4,8] [--in-flight 1,3]
                                   [--deflate-ab | --read-ahead-ab] [--memory-only]

Starts `sam2-service serve --weights random` twice on 127.0.0.1 (in-process store, then a redis-server it
starts too), runs sessions in threads with the Python client (one object each, frames as PNG encoded before
the timing, each session keeping --in-flight frames unanswered) and prints aggregate frames/s, client-side
per-frame p50/p99, the server's own split of a frame's time (medians of the masks messages' `timings`) and the
bytes the store writes per frame. Random weights: the work per frame is the real work.
--deflate-ab: instead, the in-process store with WebSocket per-message deflate on (SAM2_WS_DEFLATE=true, the
client offering it) and off; --read-ahead-ab: the in-process store with SAM2_TRACK_READ_AHEAD on and off.
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

from service.client import TrackSession, _image_bytes  # noqa: E402
from tests.fixtures import synthetic_clip  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402


def serve(image_size: int, redis_url: str | None, log: Path, device: str = "cpu", dtype: str = "fp32",
          model: str = "sam2.1_t", deflate: bool = False, read_ahead: str = "auto") -> ServeProcess:
    env = {"SAM2_TRACK_QUEUE_FRAMES": "64", "SAM2_TRACK_SESSIONS_PER_KEY": "64", "SAM2_WS_DEFLATE": str(deflate),
           "SAM2_TRACK_READ_AHEAD": read_ahead}
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


def run_sessions(port: int, n_sessions: int, frames, deflate: bool = False, in_flight: int = 1) -> dict:
    """Sessions in threads, each keeping `in_flight` frames sent and not yet answered (1: send, wait, send...).
    Latency: a frame's send to its masks; the server's own split of it comes from the messages' timings."""
    latencies: list[float] = []
    timings: list[dict] = []
    lock = threading.Lock()
    encoded = [_image_bytes(f) for f in frames]  # encoded once, outside the timing (a camera sends JPEG/PNG)

    def one():
        s = TrackSession.open(f"ws://127.0.0.1:{port}/v1/track", deflate=deflate)
        s.add_prompt(1, points=[[200, 240]], labels=[1])
        sent: list[float] = []
        mine, split = [], []
        for data in encoded:
            if len(sent) - len(mine) >= in_flight:
                split.append(s.next_result()["timings"])
                mine.append(time.perf_counter() - sent[len(mine)])
            sent.append(time.perf_counter())
            s.send_frame_nowait(data)
        while len(mine) < len(sent):
            split.append(s.next_result()["timings"])
            mine.append(time.perf_counter() - sent[len(mine)])
        s.close()
        with lock:
            latencies.extend(mine[2:])  # the first frames carry the prompt and start-up
            timings.extend(split[2:])

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
        "server_ms": {k: statistics.median(t[k] for t in timings) for k in (timings[0] if timings else {})},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--sessions", default="1,4,8")
    ap.add_argument("--in-flight", default="1", help="frames each session keeps unanswered, e.g. 1,3")
    ap.add_argument("--deflate-ab", action="store_true", help="per-message deflate on vs off (in-process store)")
    ap.add_argument("--memory-only", action="store_true", help="the in-process store only (no redis-server)")
    ap.add_argument("--read-ahead-ab", action="store_true",
                    help="instead, the in-process store with SAM2_TRACK_READ_AHEAD on and off")
    args = ap.parse_args()
    frames = synthetic_clip(args.frames, 480, 640)
    tmp = Path(tempfile.mkdtemp())
    ab = args.deflate_ab or args.read_ahead_ab
    redis = None if ab or args.memory_only else RedisServer(tmp, appendonly=False).start()
    if args.deflate_ab:
        runs = [("memory, deflate", None, True, "auto"), ("memory, no deflate", None, False, "auto")]
    elif args.read_ahead_ab:
        runs = [("memory, read ahead", None, False, "on"), ("memory, no read ahead", None, False, "off")]
    else:
        runs = [("memory", None, False, "auto")] + ([("redis", redis.url, False, "auto")] if redis else [])
    rows = []
    try:
        for store, url, deflate, read_ahead in runs:
            server = serve(args.image_size, url, tmp / f"{store}.log", deflate=deflate, read_ahead=read_ahead)
            try:
                run_sessions(server.port, 1, frames[:4], deflate)  # warm-up
                for n in (int(v) for v in args.sessions.split(",")):
                    for k in (int(v) for v in args.in_flight.split(",")):
                        rows.append((store, n, k, run_sessions(server.port, n, frames, deflate, k)))
            finally:
                server.stop()
    finally:
        if redis is not None:
            redis.stop()
    print(f"\n/v1/track, tiny @ {args.image_size}px, 640x480 PNG frames (encoded before timing), {args.frames} "
          "frames per session, 1 object, fp32 CPU; server ms: medians of the masks messages' timings")
    print("| store | sessions | in flight | frames/s (all) | p50 ms/frame | p99 ms/frame | server ms: decode / prepare "
          "/ track / store / total | store KiB/write | sessions per tracking step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for store, n, k, r in rows:
        t = r["server_ms"]
        split = " / ".join(f"{t.get(key, float('nan')):.1f}"
                           for key in ("decode_ms", "prepare_ms", "track_ms", "store_ms", "total_ms"))
        print(f"| {store} | {n} | {k} | {r['fps']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {split} | "
              f"{r['store_kib']:.1f} | {r['batch']:.2f} |")


if __name__ == "__main__":
    main()
