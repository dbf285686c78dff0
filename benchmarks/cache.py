"""What the cache buys, per endpoint, on a seeded catalog.

    python -m benchmarks.cache --database-url postgres://postgres@127.0.0.1:5432/bench_100k

Starts a 2-worker server (REDIS_URL as given, a fresh cache prefix), then reports for every GET
endpoint the SQL statements of the first (cold) and second (warm) request, read from the response's
Server-Timing header; the bytes of a 20-product page plain and gzipped; and, in the same run, the
latency of a cached list page (one URL repeated) against uncached ones (a different page each time).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.servers import free_port, start_sanic, stop

STATEMENTS = re.compile(r'db;dur=[\d.]+;desc="(\d+) statements"')


def statements(response: httpx.Response) -> int:
    return int(STATEMENTS.search(response.headers["server-timing"]).group(1))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed_ms(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    port = free_port()
    log = Path(tempfile.mkdtemp()) / "server.log"
    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url,
           "CACHE_PREFIX": f"bench_{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "WARNING"}
    server = start_sanic(env, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            # Sizes from a page nobody measures, so every endpoint below starts cold.
            last = -(-client.get("/products?page_size=99").json()["total"] // 20)
            endpoints = [
                "/products", "/products?category_id=1", f"/products?page={int(last * 0.95)}",
                "/products/50000", "/products/batch?ids=" + ",".join(str(50000 + i) for i in range(20)),
                "/categories", "/inventory/low-stock?threshold=2", "/products?sort=-price&include=category,inventory",
            ]
            lines = ["| endpoint | SQL cold | SQL warm | cache warm |", "| --- | ---: | ---: | --- |"]
            for url in endpoints:
                cold, warm = client.get(url), client.get(url)
                state = re.search(r'cache;dur=[\d.]+;desc="(\w+)"', warm.headers["server-timing"]).group(1)
                lines.append(f"| `{url[:60]}` | {statements(cold)} | {statements(warm)} | {state} |")

            plain = client.get("/products", headers={"accept-encoding": "identity"})
            zipped = client.get("/products", headers={"accept-encoding": "gzip"})
            wire = int(zipped.headers["content-length"])
            lines += ["", f"20-product page: {len(plain.content):,} bytes plain, {wire:,} gzipped "
                          f"({100 - 100 * wire / len(plain.content):.1f}% smaller)"]

            # Interleaved so that both see the same machine: a cached page vs a page never asked before.
            cached, uncached = [], []
            client.get("/products?page=2")
            for n in range(args.requests):
                cached.append(timed_ms(client, "/products?page=2"))
                uncached.append(timed_ms(client, f"/products?page={3 + n}"))
            lines += ["", f"| list page, {args.requests} requests each | median ms | p95 ms |", "| --- | ---: | ---: |"]
            for name, values in (("cached (hit)", cached), ("uncached (miss)", uncached)):
                lines.append(f"| {name} | {statistics.median(values):.2f} | {percentile(values, 0.95):.2f} |")
            lines.append(f"\nuncached / cached median: {statistics.median(uncached) / statistics.median(cached):.1f}x")
            print("\n".join(lines))
    finally:
        stop(server)


if __name__ == "__main__":
    main()
