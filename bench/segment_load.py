"""POST /v1/segment under load over real HTTP, beside Meta's SAM2ImagePredictor in a loop, same weights, same run.

    python bench/segment_load.py [--size 1024x768] [--image-size 1024] [--clients 1,4,16]
                                 [--cold-requests 16] [--cached-requests 64] [--dtype fp32] [--max-batch 8]

Starts `sam2-service serve` on 127.0.0.1 (a free port) with the seeded random weights that the reference also
loads, then for 1, 4 and 16 concurrent clients sends
  - cold: a distinct JPEG per request (multipart) with one click: decode, encoder (batched across clients),
    decoder, RLE;
  - cached: one click on an `image_id` embedded beforehand: decoder and RLE only.
The reference does the same work in one Python loop: set_image + predict per image (cold), predict on the
set image (cached). Prints requests/s, p50 and p99 latency; ratio = our requests/s / the reference's.
The server and the reference never run at the same time (they would share the cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import reference_and_ours, test_image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def jpeg_variants(image: np.ndarray, start: int, count: int) -> list[bytes]:
    """`count` JPEGs of the image, each with its own 8x8 stamp so that no two share a content hash."""
    out = []
    for i in range(start, start + count):
        img = image.copy()
        img[:8, :8] = (i * 37 % 256, i * 91 % 256, i * 53 % 256)
        out.append(cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
                   .tobytes())
    return out


class Server:
    """`sam2-service serve` in a subprocess on 127.0.0.1; stopped by its pid."""

    def __init__(self, weights: Path, args) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SAM2_MAX_BATCH": str(args.max_batch), "SAM2_MAX_WAIT_MS": str(args.max_wait_ms),
               "SAM2_QUEUE_SIZE": "1024", "SAM2_REQUEST_TIMEOUT": "600"}
        cmd = [sys.executable, "-m", "service.cli", "serve", "--model", args.model, "--weights", str(weights),
               "--dtype", args.dtype, "--device", getattr(args, "device", "cpu"), "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning"]
        if args.image_size:
            cmd += ["--image-size", str(args.image_size)]
        self.log = tempfile.NamedTemporaryFile(prefix="segment_load_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def load(base: str, requests: list[dict], clients: int) -> tuple[list[float], float]:
    """Send the requests from `clients` concurrent connections; per-request latencies and the wall time."""
    import httpx

    latencies: list[float] = []
    todo = iter(requests)
    async with httpx.AsyncClient(base_url=base, timeout=600,
                                 limits=httpx.Limits(max_connections=clients)) as c:
        async def client() -> None:
            for kwargs in todo:
                t = time.perf_counter()
                r = await c.post("/v1/segment", **kwargs)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(clients)])
        return latencies, time.perf_counter() - t0


def batch_stats(base: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{base}/metrics").text

    def value(name: str) -> float:
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("sam2_batch_size_sum"), value("sam2_batch_size_count")


def click(i: int, w: int, h: int) -> list[dict]:
    rng = np.random.default_rng(i)
    return [{"points": [[float(rng.uniform(0, w)), float(rng.uniform(0, h))]], "labels": [1]}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--size", default="1024x768", help="image WxH")
    ap.add_argument("--image-size", type=int, default=None, help="model input side (default 1024)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--cold-requests", type=int, default=16, help="requests at each client level")
    ap.add_argument("--cached-requests", type=int, default=64, help="requests at each client level")
    ap.add_argument("--ref-cold", type=int, default=6, help="reference loop iterations, cold")
    ap.add_argument("--ref-cached", type=int, default=32, help="reference loop iterations, cached")
    ap.add_argument("--dtype", default="fp32", help="fp32 or bf16, for both")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5)
    ap.add_argument("--mix", action="store_true",
                    help="only: clicks on a cached image alone, then while segment-everything jobs run")
    args = ap.parse_args()
    if args.mix:
        return mix(args)
    w, h = (int(v) for v in args.size.split("x"))
    levels = [int(v) for v in args.clients.split(",")]

    from sam2.sam2_image_predictor import SAM2ImagePredictor

    torch.set_grad_enabled(False)
    ref_model, ours = reference_and_ours(args.model, args.image_size)
    image = test_image(h, w)
    rows: list[tuple] = []

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "random_weights.pt"
        torch.save({"model": ours.state_dict()}, ckpt)  # the server loads exactly the reference's weights
        del ours
        server = Server(ckpt, args)
        try:
            server.wait_ready()
            base = server.base
            offset = 0
            # warm-up: a few cold requests and a click, not measured
            asyncio.run(load(base, [{"files": {"image": ("w.jpg", b, "image/jpeg")},
                                     "data": {"objects": json.dumps(click(0, w, h))}}
                                    for b in jpeg_variants(image, 10_000, 2)], 2))
            for clients in levels:
                n = args.cold_requests
                jpegs = jpeg_variants(image, offset, n)
                offset += n
                reqs = [{"files": {"image": ("i.jpg", b, "image/jpeg")}, "data": {"objects": json.dumps(click(i, w, h))}}
                        for i, b in enumerate(jpegs)]
                s0, c0 = batch_stats(base)
                lat, wall = asyncio.run(load(base, reqs, clients))
                s1, c1 = batch_stats(base)
                mean_batch = (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")
                rows.append(("cold", clients, n / wall, lat, mean_batch))
                print(f"cold   {clients:2d} clients: {n / wall:7.2f} req/s (mean encoder batch {mean_batch:.1f})",
                      file=sys.stderr)
            import httpx

            image_id = httpx.post(f"{base}/v1/embed", files={"image": ("c.jpg", jpeg_variants(image, 20_000, 1)[0],
                                                                          "image/jpeg")}, timeout=600).json()["image_id"]
            for clients in levels:
                n = args.cached_requests
                reqs = [{"json": {"image_id": image_id, "objects": click(i, w, h)}} for i in range(n)]
                lat, wall = asyncio.run(load(base, reqs, clients))
                rows.append(("cached", clients, n / wall, lat, float("nan")))
                print(f"cached {clients:2d} clients: {n / wall:7.2f} req/s", file=sys.stderr)
        finally:
            server.stop()

    # the reference, alone on the machine now
    from tests.reference import fit_to_image_size

    predictor = fit_to_image_size(SAM2ImagePredictor(ref_model), args.image_size or 1024)
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16"
           else torch.autocast("cpu", enabled=False))
    ref = {}
    with ctx:
        imgs = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                for b in jpeg_variants(image, 30_000, args.ref_cold + 1)]

        def cold_once(i):
            predictor.set_image(imgs[i])
            (pt,) = click(i, w, h)
            predictor.predict(point_coords=np.array(pt["points"]), point_labels=np.array(pt["labels"]))

        cold_once(args.ref_cold)  # warm-up
        lat = []
        t0 = time.perf_counter()
        for i in range(args.ref_cold):
            t = time.perf_counter()
            cold_once(i)
            lat.append(time.perf_counter() - t)
        ref["cold"] = (args.ref_cold / (time.perf_counter() - t0), lat)

        predictor.set_image(imgs[0])
        lat = []
        t0 = time.perf_counter()
        for i in range(args.ref_cached):
            (pt,) = click(i, w, h)
            t = time.perf_counter()
            predictor.predict(point_coords=np.array(pt["points"]), point_labels=np.array(pt["labels"]))
            lat.append(time.perf_counter() - t)
        ref["cached"] = (args.ref_cached / (time.perf_counter() - t0), lat)

    size = args.image_size or 1024
    print(f"\nPOST /v1/segment over HTTP on 127.0.0.1 vs SAM2ImagePredictor in a loop: {args.model} at {size} px, "
          f"{w}x{h} JPEG, one click per request, {args.dtype}, max_batch {args.max_batch}, "
          f"max_wait_ms {args.max_wait_ms:g}, {torch.get_num_threads()} threads")
    print(f"| {'work':7s} | {'clients':>7s} | {'ours req/s':>10s} | {'p50':>8s} | {'p99':>8s} | {'batch':>5s} "
          f"| {'ref req/s':>9s} | {'ref p50':>8s} | {'ref p99':>8s} | {'ours/ref':>8s} |")
    print("|" + "|".join("-" * (n + 2) for n in (7, 7, 10, 8, 8, 5, 9, 8, 8, 8)) + "|")
    for work, clients, rps, lat, mean_batch in rows:
        ref_rps, ref_lat = ref[work]
        batch = f"{mean_batch:5.1f}" if mean_batch == mean_batch else "    -"
        print(f"| {work:7s} | {clients:7d} | {rps:10.2f} | {statistics.median(lat) * 1e3:6.0f}ms | "
              f"{percentile(lat, 99) * 1e3:6.0f}ms | {batch} | {ref_rps:9.2f} | "
              f"{statistics.median(ref_lat) * 1e3:6.0f}ms | {percentile(ref_lat, 99) * 1e3:6.0f}ms | "
              f"{rps / ref_rps:7.2f}x |")


def mix(args) -> None:
    """Click latency on a cached image alone and while a 32x32-point segment-everything job runs."""
    import httpx

    w, h = (int(v) for v in args.size.split("x"))
    image = test_image(h, w)
    with tempfile.TemporaryDirectory() as tmp:
        from model_core import build_model

        ckpt = Path(tmp) / "w.pt"
        torch.save({"model": build_model(args.model, weights="random", image_size=args.image_size).state_dict()},
                   ckpt)
        server = Server(ckpt, args)
        try:
            server.wait_ready()
            base = server.base
            image_id = httpx.post(f"{base}/v1/embed", timeout=600, files={
                "image": ("c.jpg", jpeg_variants(image, 1, 1)[0], "image/jpeg")}).json()["image_id"]

            async def clicks(n: int) -> list[float]:
                lat = []
                async with httpx.AsyncClient(base_url=base, timeout=600) as c:
                    for i in range(n):
                        t = time.perf_counter()
                        r = await c.post("/v1/segment", json={"image_id": image_id, "objects": click(i, w, h)})
                        assert r.status_code == 200, r.text
                        lat.append(time.perf_counter() - t)
                return lat

            async def during() -> tuple[list[float], float, bool]:
                async with httpx.AsyncClient(base_url=base, timeout=600) as c:
                    t = time.perf_counter()
                    job = asyncio.create_task(c.post("/v1/segment/everything",
                                                     json={"image_id": image_id, "points_per_side": 32}))
                    await asyncio.sleep(0.2)
                    lat = []
                    while not job.done():
                        lat += await clicks(1)
                    r = await job
                    assert r.status_code == 200, r.text
                    return lat, time.perf_counter() - t, True

            alone = asyncio.run(clicks(20))
            lat, amg_s, _ = asyncio.run(during())
        finally:
            server.stop()
    print(f"\nclicks on a cached image, {args.model} at {args.image_size or 1024} px, {torch.get_num_threads()} threads")
    print("| clicks | n | p50 | p99 |")
    print("|---|---|---|---|")
    for name, v in (("alone", alone), (f"during segment-everything ({amg_s:.1f} s)", lat)):
        print(f"| {name} | {len(v)} | {statistics.median(v) * 1e3:.0f} ms | {percentile(v, 99) * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
