"""Schemathesis over the OpenAPI document of a real `sam2-service serve` on 127.0.0.1: N generated requests,
answers tallied by class. A figure, not a test: the goal is 0 responses >= 500 other than 503 `overloaded` /
`queue-timeout` (counted apart; the server runs with a queue timeout one slow request cannot hit).

    python bench/fuzz.py --cases 10000
"""

from __future__ import annotations

import argparse
import collections
import math
import time

import requests
from hypothesis import HealthCheck, given, settings

import _common  # noqa: F401 - puts the repo root on sys.path
from tests.serve_process import ServeProcess


def bucket(r: requests.Response) -> str:
    if r.status_code == 503:
        kind = r.headers.get("content-type", "").startswith("application/problem+json") and r.json().get("type", "")
        return "503 " + (kind or "").rsplit(":", 1)[-1]
    if r.status_code >= 500:
        return f"{r.status_code} (error)"
    return f"{r.status_code // 100}xx"


def main() -> int:
    import schemathesis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000, help="generated requests in all (spread over the POSTs)")
    ap.add_argument("--log", default="/tmp/sam2-fuzz-server.log")
    args = ap.parse_args()

    from pathlib import Path

    server = ServeProcess(Path(args.log), ["--weights", "random", "--image-size", "64", "--dtype", "fp32",
                                           "--device", "cpu"],
                          env={"SAM2_WARMUP": "false", "SAM2_REQUEST_TIMEOUT": "300", "SAM2_QUEUE_SIZE": "256",
                               "SAM2_MAX_IMAGE_PIXELS": str(512 * 512)})
    tally: dict[tuple[str, str], int] = collections.Counter()
    failures: list[str] = []
    t0 = time.perf_counter()
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        ops = [result.ok() for result in schema.get_all_operations()]
        posts = [op for op in ops if op.method.upper() == "POST"]
        per_post = math.ceil(args.cases / max(len(posts), 1))
        session = requests.Session()
        def fuzz(op, n: int) -> None:
            @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(op.as_strategy())
            def run(case):
                r = case.call(base_url=server.url, session=session, timeout=120)
                b = bucket(r)
                tally[(op.label, b)] += 1
                if "(error)" in b and len(failures) < 10:
                    failures.append(f"{op.label}: {r.status_code} {r.text[:300]}")

            run()

        for op in ops:
            fuzz(op, per_post if op in posts else 20)
    finally:
        server.stop()
    elapsed = time.perf_counter() - t0
    total = sum(tally.values())
    errors = sum(v for (_, b), v in tally.items() if "(error)" in b)
    print(f"\nschemathesis against serve (random weights, 64 px, 1 process): {total} requests in {elapsed:.0f} s")
    print(f"| {'operation':34s} | {'answer':22s} | {'count':>7s} |")
    print(f"|{'-' * 36}|{'-' * 24}|{'-' * 9}|")
    for (label, b), v in sorted(tally.items()):
        print(f"| {label:34s} | {b:22s} | {v:7d} |")
    print(f"\nresponses >= 500 other than 503 overloaded/queue-timeout: {errors}")
    for f in failures:
        print("  ", f)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
