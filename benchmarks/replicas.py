"""Reads on a streaming replica: what routing them there does on one machine, and what read-your-writes costs.

    .venv/bin/python -m benchmarks.replicas                                   # about 2 minutes
    .venv/bin/python -m benchmarks.replicas --products 100000 --seconds 20 --connections 100

It makes a private primary (pgserver's PostgreSQL 16, as the tests do) seeded with --products, and two standbys
of it by ``pg_basebackup -R``: one streaming as fast as it can, one applying each commit 1 s late
(``recovery_min_apply_delay``). Every service runs the Procfile's way with 2 workers, the response cache off
(``CACHE_RESPONSES=false``: each read runs SQL) and Redis at --redis (a key prefix of its own, deleted after):

1. read throughput under wrk (price-range pages: their keys and their count are SQL every time), primary only
   and then primary + the streaming standby, with the share of statements a replica ran;
2. write-then-read: a PUT on one instance, at once a GET of the product on another, --rounds times; GET latency
   and which server answered, primary only and with the lagging standby, and how long after a write the lagging
   standby takes reads again;
3. the share of reads a replica takes while 5% of requests are PUTs, streaming vs lagging standby: what tracking
   only the latest write position (not one per generation) costs.

Caveat: the primary, the standbys, Redis, the service and wrk share this machine's cores (2 here), so a replica
adds no CPU: (1) shows what routing costs, not what a follower on a machine of its own adds. Compare the rows of
one run, not runs or machines. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from benchmarks import log
from benchmarks.load import Req, lua_script, run_wrk
from benchmarks.postgres import PrivatePostgres
from benchmarks.servers import (
    LOG_DIR,
    Server,
    forget_prefix,
    free_port,
    http_get,
    start_sanic,
    stop_server,
)
from catalog.seed import seed
from config.settings import PROJECT_ROOT

PASSWORD = "bench-Pa55"
WARMUP_S = 3
LAG_MS = 1000
STATEMENTS = re.compile(r'db;dur=[\d.]+;desc="(\d+) statements"')
REPLICA_STATEMENTS = re.compile(r'replica;desc="(\d+) statements"')


def app_url(cluster: PrivatePostgres) -> str:
    return cluster.url("catalog_app", PASSWORD, "catalog")


def make_clusters(stack: ExitStack, products: int) -> tuple[PrivatePostgres, PrivatePostgres, PrivatePostgres]:
    """The primary, seeded, then its streaming and its lagging standby; all stopped and removed on leaving."""
    roots = [Path(tempfile.mkdtemp(prefix=f"catalog_bench_{role}_")) for role in ("primary", "streaming", "lagging")]
    for root in roots:
        stack.callback(shutil.rmtree, root)
    primary = PrivatePostgres(roots[0], PASSWORD)
    primary.allow_replication()
    primary.start()
    stack.callback(primary.stop, "immediate")

    async def prepare() -> None:
        admin = await asyncpg.connect(primary.url("postgres", PASSWORD, "postgres"))
        try:
            await admin.execute(f"CREATE ROLE catalog_app LOGIN PASSWORD '{PASSWORD}'")
            await admin.execute("CREATE DATABASE catalog OWNER catalog_app")
        finally:
            await admin.close()

    asyncio.run(prepare())
    subprocess.run([sys.executable, "-m", "catalog", "migrate"], cwd=PROJECT_ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": app_url(primary)}, stdout=subprocess.DEVNULL)
    log(f"seeding {products:,} products")
    asyncio.run(seed(app_url(primary), products, progress=False))
    standbys = []
    for root, delay in zip(roots[1:], (0, LAG_MS), strict=True):
        standby = PrivatePostgres(root, PASSWORD, primary=primary, apply_delay_ms=delay)
        standby.start()
        stack.callback(standby.stop, "immediate")
        standbys.append(standby)
    return primary, standbys[0], standbys[1]


def start(stack: ExitStack, primary: PrivatePostgres, replica: PrivatePostgres | None, redis_url: str, prefix: str,
          name: str) -> Server:
    env = {**os.environ, "DATABASE_URL": app_url(primary), "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
           "CACHE_RESPONSES": "false", "LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": "2"}
    env.pop("DATABASE_REPLICA_URLS", None)
    if replica is not None:
        env["DATABASE_REPLICA_URLS"] = app_url(replica)
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"replicas_{name}.log"
    server = Server(start_sanic(env, port, log_path, 2), port, log_path)
    stack.callback(stop_server, server)
    return server


def statements(headers: dict[str, str]) -> tuple[int, int]:
    """A response's SQL statements, and how many of them a replica ran."""
    timing = headers.get("server-timing", "")
    found, replica = STATEMENTS.search(timing), REPLICA_STATEMENTS.search(timing)
    return int(found.group(1)) if found else 0, int(replica.group(1)) if replica else 0


@dataclass
class Share:
    """Statements of sampled reads, and those a replica ran."""

    statements: int = 0
    on_replica: int = 0

    def add(self, headers: dict[str, str]) -> None:
        total, replica = statements(headers)
        self.statements += total
        self.on_replica += replica

    def __str__(self) -> str:
        return f"{100 * self.on_replica / self.statements:.0f}%" if self.statements else "-"


@dataclass
class Sampler:
    """Reads sent beside a load, every 50 ms, to see where their statements ran."""

    port: int
    paths: list[str]
    share: Share = field(default_factory=Share)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stopping.wait(0.05):
            _, headers, _ = http_get(self.port, rng.choice(self.paths), timeout=10)
            self.share.add(headers)


def read_paths(seed_value: int, count: int = 500) -> list[str]:
    rng = random.Random(seed_value)
    paths = []
    for _ in range(count):
        low = round(rng.uniform(1, 450), 2)
        paths.append(f"/products?sort=price&min_price={low}&max_price={low + rng.uniform(5, 50):.2f}&page_size=20")
    return paths


def wrk(server: Server, requests: list[Req], connections: int, seconds: float, sample: list[str]) -> tuple[dict, Share]:
    script = LOG_DIR / f"replicas_{uuid.uuid4().hex[:6]}.lua"
    script.write_text(lua_script(requests))
    run_wrk(server, script, connections, WARMUP_S, latency=False)
    sampler = Sampler(server.port, sample)
    thread = threading.Thread(target=sampler.run)
    thread.start()
    try:
        figures, _ = run_wrk(server, script, connections, seconds)
    finally:
        sampler.stopping.set()
        thread.join()
        script.unlink()
    return figures, sampler.share


def until_replica_reads(server: Server, paths: list[str], limit_s: float = 30) -> float:
    """Seconds until an uncached read runs on a replica."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        _, headers, _ = http_get(server.port, random.choice(paths))
        if statements(headers)[1]:
            return time.monotonic() - started
        time.sleep(0.01)
    raise RuntimeError(f"no read went to a replica within {limit_s} s")


@dataclass
class WriteThenRead:
    latencies_ms: list[float] = field(default_factory=list)
    share: Share = field(default_factory=Share)
    stale: int = 0
    caught_up_s: list[float] = field(default_factory=list)


def write_then_read(writer: Server, reader: Server, rounds: int, product_ids: list[int], paths: list[str],
                    wait_for_replica: bool) -> WriteThenRead:
    """A PUT on ``writer``, at once a GET of the product on ``reader``; with ``wait_for_replica``, then how long
    until ``reader`` reads on a replica again (every fifth round: each takes the standby's lag)."""
    result = WriteThenRead()
    for number in range(rounds):
        product = product_ids[number % len(product_ids)]
        price = round(100 + number + random.random(), 2)
        status, _, _ = http_get(writer.port, f"/products/{product}", method="PUT",
                                body=f'{{"price": {price}}}'.encode(), headers={"Content-Type": "application/json"})
        assert status == 200, status
        started = time.perf_counter()
        status, headers, body = http_get(reader.port, f"/products/{product}")
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.share.add(headers)
        result.stale += status != 200 or f'"price":{price}'.encode() not in body
        if wait_for_replica and number % 5 == 0:
            result.caught_up_s.append(until_replica_reads(reader, paths))
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    prefix = f"bench_replicas_{uuid.uuid4().hex[:8]}"
    rows: list[str] = []
    with ExitStack() as stack:
        stack.callback(forget_prefix, args.redis, prefix)
        primary, streaming, lagging = make_clusters(stack, args.products)
        paths = read_paths(1)
        reads = [Req(path) for path in read_paths(2)]
        product_ids = random.Random(3).sample(range(1, args.products + 1), 50)
        puts = [Req(f"/products/{i}", "PUT", (("Content-Type", "application/json"),), f'{{"price": {i % 400 + 1}}}')
                for i in product_ids]
        mixed = reads[:475] + puts[:25]  # 5% writes

        log("starting the services")
        alone = start(stack, primary, None, args.redis, prefix, "primary")
        fast = start(stack, primary, streaming, args.redis, prefix, "streaming")
        slow_writer = start(stack, primary, lagging, args.redis, prefix, "lagging_writer")
        slow_reader = start(stack, primary, lagging, args.redis, prefix, "lagging_reader")
        until_replica_reads(fast, paths)

        rows += ["| read throughput, cache off | requests/s | P50 ms | P95 ms | statements on a replica |",
                 "| --- | --- | --- | --- | --- |"]
        for label, server in (("primary only", alone), ("primary + 1 streaming replica", fast)):
            log(f"reads: {label}")
            figures, share = wrk(server, reads, args.connections, args.seconds, paths)
            rps = figures["requests"] / (figures["duration_us"] / 1e6)
            rows.append(f"| {label} | {rps:,.0f} | {figures['p50'] / 1000:.1f} | {figures['p95'] / 1000:.1f} | {share} |")

        rows += ["", "| write, then at once a GET of the product on another instance | GET P50 ms | GET P95 ms |"
                 " GET statements on a replica | stale | replica takes reads again after |",
                 "| --- | --- | --- | --- | --- | --- |"]
        log("write-then-read: primary only")
        baseline = write_then_read(alone, alone, args.rounds, product_ids, paths, wait_for_replica=False)
        log(f"write-then-read: a replica {LAG_MS} ms behind")
        behind = write_then_read(slow_writer, slow_reader, args.rounds, product_ids, paths, wait_for_replica=True)
        for label, result in (("primary only (one instance)", baseline), (f"replica {LAG_MS} ms behind", behind)):
            caught = f"{statistics.median(result.caught_up_s):.2f} s (median)" if result.caught_up_s else "-"
            rows.append(f"| {label} | {percentile(result.latencies_ms, 0.5):.1f} | "
                        f"{percentile(result.latencies_ms, 0.95):.1f} | {result.share} | {result.stale}/{args.rounds} |"
                        f" {caught} |")

        rows += ["", "| reads beside 5% PUTs (one write position for all writes) | requests/s |"
                 " statements of reads on a replica |", "| --- | --- | --- |"]
        for label, server in (("streaming replica", fast), (f"replica {LAG_MS} ms behind", slow_reader)):
            log(f"mixed: {label}")
            figures, share = wrk(server, mixed, args.connections, args.seconds, paths)
            rps = figures["requests"] / (figures["duration_us"] / 1e6)
            rows.append(f"| {label} | {rps:,.0f} | {share} |")

    print(f"\n{args.products:,} products, wrk -c {args.connections} for {args.seconds:g} s, 2 workers per service,"
          f" {os.cpu_count()} cores shared by everything\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
