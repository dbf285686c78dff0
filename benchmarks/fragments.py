"""Product fragments against the commit before them, side by side in one run, on one seeded database.

    .venv/bin/python -m benchmarks.fragments [--baseline 3021136] [--duration 10] [--warmup 3] [--only abcdef]

Serves the baseline's tree (``git archive``, same venv, same database) and this checkout, each with 2
workers, and loads each with wrk (50 connections) in turn: (a) the first list page and (b) products by
random id with the response cache off; (c) products by id and (d) ``page=N`` list pages never asked
before, on an empty cache prefix, each request a different id or page; (e) the mixed workload of
``benchmarks.run`` (list pages across categories and depths, products, batches, 5% PUTs of a price),
response cache on; (f) as (b), the ids drawn from 5,000 rather than all. Prints requests/s, P95, server
CPU per request (psutil over the server's processes), the fragment hit ratio and the response cache's
(the ``<prefix>:stats:f`` and ``<prefix>:stats:r`` hashes the lookup scripts count in, where the tree
has them), then baseline vs new with ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil
import redis

from benchmarks.data import PAGE_SIZE, data_facts
from benchmarks.load import WRK_THREADS, hit_ratio, lua_script
from benchmarks.load import scenarios as load_scenarios
from config.settings import PROJECT_ROOT

DATABASE = "bench_100k"

# A walk through 0 .. n - 1 (``step()``) that asks nothing twice until it has asked all n: ids and pages never
# asked before, as scenarios (c) and (d) need. The k-th request of thread t takes index k * threads + t - 1,
# so no two threads ask the same (a stride per thread made the threads' walks one walk shifted, which met
# itself after a few hundred requests where n is a few thousand), and index i is i strides from 0, the stride
# prime to n so that n steps visit every value once.
STRIDE = f"""
local n, threads, counter, tid, started = {{n}}, {WRK_THREADS}, 0, 1, 0
function setup(thread) started = started + 1; thread:set("tid", started) end
function init(args) tid = tonumber(wrk.thread:get("tid")) or 1 end
local function gcd(a, b) while b ~= 0 do a, b = b, a % b end return a end
local stride = 7919
n = math.max(n, 1)
while gcd(stride, n) ~= 1 do stride = stride + 1 end
local function step()
  local index = counter * threads + tid - 1
  counter = counter + 1
  return (index * stride) % n
end
"""
WALK = STRIDE + """
function request() return wrk.format("GET", string.format("{path}", step() + 1)) end
"""
RANDOM = """
math.randomseed(os.time())
function request() return wrk.format("GET", string.format("{path}", math.random(1, {n}))) end
"""
STATIC = """
function request() return wrk.format("GET", "{path}") end
"""
DONE = """
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %f %d %d\\n", summary.requests, latency:percentile(95) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout))
end
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str | Callable[[int], str]  # or made from the port of the server it loads
    cache_responses: bool


def mixed_workload(database_url: str) -> Callable[[int], str]:
    """benchmarks.run's mixed workload, its deep cursors read from the server it is about to load."""

    def script(port: int) -> str:
        facts = asyncio.run(data_facts(database_url))
        cursors = []
        for page in range(facts.active // PAGE_SIZE - 100, facts.active // PAGE_SIZE - 90):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/products?page={page}", timeout=30) as response:
                cursors.append(response.headers["X-Next-Cursor"])
        return lua_script(load_scenarios(facts, cursors, etag="", seed=1)["mixed"])

    return script


def scenarios(products: int, database_url: str) -> list[Scenario]:
    pages = int(products * 0.9) // 20 - 1
    return [
        Scenario("(a) first page, responses uncached", STATIC.format(path="/products"), False),
        Scenario("(b) product by random id, responses uncached", RANDOM.format(path="/products/%d", n=products), False),
        Scenario("(c) product never loaded (empty cache)", WALK.format(path="/products/%d", n=products), True),
        Scenario("(d) page=N never loaded (empty cache)", WALK.format(path="/products?page=%d", n=pages), True),
        Scenario("(e) mixed workload with 5% writes", mixed_workload(database_url), True),
        # The same where traffic has favourites: ids drawn from the first 5,000, as a TTL's worth of them.
        Scenario("(f) product by id of 5,000, responses uncached", RANDOM.format(path="/products/%d", n=5000), False),
    ]


@dataclass
class Result:
    rps: float
    p95_ms: float
    cpu_ms: float
    errors: int
    hit_ratio: float | None  # fragments
    response_hit_ratio: float | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def ensure_database(server: str, products: int) -> str:
    url = f"{server.rstrip('/')}/{DATABASE}"
    admin = await asyncpg.connect(f"{server.rstrip('/')}/postgres")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    subprocess.run([sys.executable, "-m", "catalog", "migrate"], cwd=PROJECT_ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": url}, capture_output=True)
    connection = await asyncpg.connect(url)
    try:
        count = await connection.fetchval("SELECT count(*) FROM products")
    finally:
        await connection.close()
    if count != products:
        from catalog.seed import seed

        log(f"seeding {products:,} products into {DATABASE} (found {count:,})")
        if count:
            connection = await asyncpg.connect(url)
            await connection.execute("TRUNCATE reviews, inventory, products, categories RESTART IDENTITY CASCADE")
            await connection.close()
        await seed(url, products, progress=False)
    return url


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(tree: Path, env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "sanic", "catalog.app:create_app", "--factory", "--workers", "2",
               "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                               stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200 and len(psutil.Process(process.pid).children(recursive=True)) >= 2:
                    return process
        except OSError:
            pass
        assert process.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.3)
    raise RuntimeError(f"server in {tree} did not start: {log_path.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def cpu_seconds(process: subprocess.Popen) -> float:
    total = 0.0
    root = psutil.Process(process.pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def wrk(port: int, script: str, seconds: float, workdir: Path, connections: int = 50) -> tuple[int, float, int]:
    """Requests, P95 ms, and errors with timeouts, of ``script`` (a Lua ``request()``) sent for ``seconds``."""
    path = workdir / f"s{uuid.uuid4().hex[:6]}.lua"
    path.write_text(script + DONE)
    output = subprocess.run(["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "-s", str(path),
                             f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\d+) ([\d.]+) (\d+) (\d+)", output)
    assert found, output
    return int(found.group(1)), float(found.group(2)), int(found.group(3)) + int(found.group(4))


def measure(tree: Path, scenario: Scenario, base_env: dict[str, str], args: argparse.Namespace,
            client: redis.Redis, workdir: Path) -> Result:
    prefix = f"bench_fragments_{uuid.uuid4().hex[:10]}"  # a fresh, empty cache for every run
    env = {**base_env, "CACHE_PREFIX": prefix, "CACHE_RESPONSES": str(scenario.cache_responses).lower()}
    port = free_port()
    process = start(tree, env, port, workdir / f"{prefix}.log")
    try:
        script = scenario.script(port) if callable(scenario.script) else scenario.script
        # The warm-up opens the pools without touching what the scenario reads when it must be unread.
        warmup = script if not scenario.name.startswith(("(c)", "(d)")) else STATIC.format(path="/categories")
        wrk(port, warmup, args.warmup, workdir)
        client.delete(f"{prefix}:stats:f", f"{prefix}:stats:r")
        cpu_before = cpu_seconds(process)
        requests, p95, errors = wrk(port, script, args.duration, workdir)
        cpu = cpu_seconds(process) - cpu_before
        return Result(requests / args.duration, p95, cpu * 1000 / max(requests, 1), errors,
                      hit_ratio(client, f"{prefix}:stats:f"), hit_ratio(client, f"{prefix}:stats:r"))
    finally:
        stop(process)
        for key in client.scan_iter(f"{prefix}*", count=10_000):
            client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="3021136")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--only", default="abcdef", help="the scenarios to run, by letter (default all)")
    args = parser.parse_args()
    database_url = asyncio.run(ensure_database(args.pg, args.products))
    client = redis.Redis.from_url(args.redis)
    base_env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    base_env.update(DATABASE_URL=database_url, REDIS_URL=args.redis, LOG_LEVEL="WARNING")
    with tempfile.TemporaryDirectory(prefix="catalog-fragments-") as tmp:
        workdir = Path(tmp)
        baseline = workdir / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=PROJECT_ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive.stdout, check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        rows = []
        for scenario in [s for s in scenarios(args.products, database_url) if s.name[1] in args.only]:
            results = {}
            for label, tree in (("baseline", baseline), ("new", PROJECT_ROOT)):
                log(f"{scenario.name}: {label}")
                results[label] = measure(tree, scenario, base_env, args, client, workdir)
                log(f"  {results[label]}")
            rows.append((scenario, results["baseline"], results["new"]))
    print(f"\nbaseline {args.baseline} vs new {head}: {args.products:,} products, 2 workers, wrk -c 50, "
          f"{args.duration:g} s after {args.warmup:g} s\n")
    print("| scenario | req/s base | req/s new | ratio | P95 ms base | P95 ms new | CPU ms/req base | CPU ms/req new"
          " | errors base/new | fragment hits | response hits base/new |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario, old, new in rows:
        print(f"| {scenario.name} | {old.rps:.0f} | {new.rps:.0f} | {new.rps / old.rps:.2f}x | {old.p95_ms:.1f}"
              f" | {new.p95_ms:.1f} | {old.cpu_ms:.2f} | {new.cpu_ms:.2f} | {old.errors}/{new.errors}"
              f" | {percent(new.hit_ratio)} | {percent(old.response_hit_ratio)}/{percent(new.response_hit_ratio)} |")


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.0%}"


if __name__ == "__main__":
    main()
