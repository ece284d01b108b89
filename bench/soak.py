"""Soak: 8 tracking sessions against a real `sam2-service serve` with a real redis-server, for N minutes.
Every 10 s the server's RSS and Redis' used memory are sampled (they should stay flat); every frame sent must be
answered (masks, busy or dropped): none may be lost silently. Each session also drops its socket and resumes
every `--resume-every` frames.

    python bench/soak.py --minutes 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import _common  # noqa: F401 - puts the repo root on sys.path
import numpy as np
import redis
from websockets.sync.client import connect

from service.track_sessions import encode_raw_frame
from tests.fixtures import synthetic_clip
from tests.redis_server import RedisServer
from tests.serve_process import ServeProcess

H, W = 96, 160


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Session(threading.Thread):
    """One client: start, a prompt, then frames two at a time (so back-pressure is exercised) until `stop`."""

    def __init__(self, url: str, frames: list[bytes], stop: threading.Event, resume_every: int) -> None:
        super().__init__(daemon=True)
        self.url, self.frames, self.stop, self.resume_every = url, frames, stop, resume_every
        self.sent = self.masks = self.busy = self.dropped = self.resumes = 0
        self.other: list[dict] = []
        self.track_ms: list[float] = []

    def answer(self, ws, msg: dict) -> int:
        """Frames this message accounts for."""
        kind = msg["type"]
        if kind == "masks" and not msg.get("refined"):
            self.masks += 1
            self.track_ms.append(msg["timings"]["track_ms"])
            return 1
        if kind == "busy":
            self.busy += 1
            return 1
        if kind == "dropped":
            self.dropped += len(msg["seq"])
            return len(msg["seq"])
        if kind not in ("ack", "store_recovered", "pong"):
            self.other.append(msg)
        return 0

    def run(self) -> None:
        hello = None
        i = 0
        while not self.stop.is_set():
            with connect(self.url, max_size=None, open_timeout=60) as ws:
                if hello is None:
                    ws.send(json.dumps({"type": "start", "width": W, "height": H}))
                    hello = json.loads(ws.recv(timeout=60))
                    ws.send(json.dumps({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]}))
                else:
                    ws.send(json.dumps({"type": "resume", "session_id": hello["session_id"],
                                        "resume_token": hello["resume_token"]}))
                    msg = json.loads(ws.recv(timeout=60))
                    assert msg["type"] == "session", msg
                    self.resumes += 1
                for _ in range(self.resume_every // 2):
                    if self.stop.is_set():
                        break
                    for _ in range(2):
                        ws.send(self.frames[i % len(self.frames)])
                        i += 1
                        self.sent += 1
                    owed = 2
                    while owed > 0:
                        owed -= self.answer(ws, json.loads(ws.recv(timeout=120)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--resume-every", type=int, default=40, help="frames between a dropped socket and a resume")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sam2-soak-"))
    rds = RedisServer(work, appendonly=False).start()
    server = ServeProcess(work / "server.log", ["--weights", "random", "--image-size", "128", "--dtype", "fp32",
                                                "--device", "cpu"],
                          env={"SAM2_WARMUP": "false", "SAM2_REDIS_URL": rds.url, "SAM2_TRACK_QUEUE_FRAMES": "1"})
    frames = [encode_raw_frame(f) for f in synthetic_clip(8, H, W)]
    stop = threading.Event()
    clients = [Session(server.ws_url, frames, stop, args.resume_every) for _ in range(args.sessions)]
    r = redis.Redis(port=rds.port)
    samples = []
    try:
        for c in clients:
            c.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.minutes * 60:
            samples.append((time.monotonic() - t0, rss_mb(server.proc.pid), r.info("memory")["used_memory"] / 2**20,
                            sum(c.sent for c in clients)))
            time.sleep(10)
        stop.set()
        for c in clients:
            c.join(180)
    finally:
        stop.set()
        server.stop()
        rds.stop()
    print(f"\nsoak: {args.sessions} sessions, {args.minutes:g} min, resume every {args.resume_every} frames "
          f"(random weights, 128 px, CPU, real Redis)")
    print("| t (s) | server RSS (MiB) | Redis used (MiB) | frames sent |")
    print("|------:|-----------------:|-----------------:|------------:|")
    for t, rss, used, sent in samples:
        print(f"| {t:5.0f} | {rss:16.1f} | {used:16.2f} | {sent:11d} |")
    sent = sum(c.sent for c in clients)
    answered = sum(c.masks + c.busy + c.dropped for c in clients)
    print(f"\nframes sent {sent}, answered {answered} (masks {sum(c.masks for c in clients)}, "
          f"busy {sum(c.busy for c in clients)}, dropped {sum(c.dropped for c in clients)}), "
          f"resumes {sum(c.resumes for c in clients)}, unexpected messages {sum(len(c.other) for c in clients)}")
    track_ms = [t for c in clients for t in c.track_ms]
    if track_ms:
        print(f"model time per frame (track_ms, includes waiting for the worker): median "
              f"{np.median(track_ms):.0f} ms, p90 {np.percentile(track_ms, 90):.0f} ms; host load average "
              f"{Path('/proc/loadavg').read_text().split()[0]}")
    for c in clients:
        for msg in c.other[:3]:
            print("  unexpected:", msg)
    half = len(samples) // 2
    if half:
        growth = np.mean([s[1] for s in samples[half:]]) - np.mean([s[1] for s in samples[1:half] or samples[:1]])
        print(f"RSS, second half minus first half (after the first sample): {growth:+.1f} MiB")
    return 0 if sent == answered and not any(c.other for c in clients) else 1


if __name__ == "__main__":
    raise SystemExit(main())
