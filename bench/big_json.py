"""What one oversized JSON body costs the server before it is refused: a /v1/segment body of N tiny objects
(600k: ~13 MB), sent in-process; wall time, CPU time and peak RSS growth of this process.

    python bench/big_json.py --objects 600000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import _common  # noqa: F401 - puts the repo root on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=600_000)
    args = ap.parse_args()

    import httpx

    from service.app import create_app
    from service.settings import Settings

    from service.engine import Engine

    engine = Engine(Settings(weights="random", image_size=64, warmup=False, device="cpu")).start()
    assert engine.wait_ready(120), engine.status_detail()
    app = create_app(engine.settings, engine)
    body = json.dumps({"image_id": "x", "objects": [{"points": [[1, 2]]}] * args.objects}).encode()

    async def post():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v1/segment", content=body, headers={"content-type": "application/json"})

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    r = asyncio.run(post())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"body {len(body) / 1e6:.1f} MB, {args.objects} objects -> {r.status_code} "
          f"{r.json().get('type', '')}: {wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS +{rss1 - rss0:.0f} MiB")
    engine.stop()


if __name__ == "__main__":
    main()
