"""Load benchmark of the whole service against this machine's ceiling, at 100,000 and 1,000,000 products.

    python -m benchmarks.run [--sizes 100000,1000000] [--duration 20] [--warmup 5] [--quick]

Needs `wrk` and `hey` on PATH (`apt-get install -y wrk hey`), PostgreSQL at --pg (default
postgres://postgres@127.0.0.1:5432), Redis at --redis, and the `bench` extra (matplotlib, psutil).
`--quick` is a smoke run: 100,000 products only, 5 s per scenario after a 2 s warm-up.

For each size it:

1. uses the database `bench_100k` / `bench_1m` (`bench_<n>` otherwise) on that server: created if missing,
   migrated with `python -m catalog migrate`, seeded with `catalog.seed` when empty, dropped and rebuilt
   when it holds another number of products, reused as it is when the count matches;
2. starts the service twice as the Procfile does (`python -m sanic catalog.app:create_app --factory
   --workers 2`, REDIS_URL set, a CACHE_PREFIX unique to the run), once with the response cache as
   shipped and once with CACHE_RESPONSES=false, both with BENCHMARK_ENDPOINTS=true so the ceilings
   `/_ceiling/static` (a 20-product-page-sized JSON body from memory) and `/_ceiling/pk` (one primary-key
   SELECT through the same Tortoise pool) run in the same Sanic set-up and middleware;
3. loads each scenario with wrk (closed loop, 50 and 500 connections, `--latency`, a generated Lua script
   that picks a random request of the scenario's set for each request) after a warm-up run of the same
   script; the mixed workload also runs as an open loop of 500 connections at ~1,000 requests/s in total
   (wrk with a Lua `delay()` that hands out send times on a fixed schedule), and the first list page as
   `hey -c 500 -q 2` (one URL: hey cannot vary it);
4. records per scenario requests/s, latency P50/P95/P99/max (wrk's Lua `done()`), errors (connect, read,
   write, non-2xx/3xx status, timeouts: wrk's 2 s default), SQL statements and cache outcome per request
   (the Server-Timing header of sampled requests after the run), bytes per response (plain and gzip),
   CPU seconds of the server processes, PostgreSQL (auxiliary processes and this database's backends),
   Redis and the load generator (psutil deltas over the measured run), and the RSS of each worker when the
   server stops;
5. runs EXPLAIN (ANALYZE, BUFFERS) of the hot queries (the SQL Tortoise generates for them) at each size.

It writes BENCHMARKS.md at the repository root, benchmarks/chart.png, and the raw figures to
benchmarks/results.json. Numbers are for ratios within one run: the load generator shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from benchmarks.servers import free_port, http_get, start_sanic, stop
from config.settings import PROJECT_ROOT

BENCH_DIR = PROJECT_ROOT / "benchmarks"
LOG_DIR = Path(tempfile.gettempdir()) / "catalog-bench"
DB_NAMES = {100_000: "bench_100k", 1_000_000: "bench_1m"}
PAGE_SIZE = 20
WRK_THREADS = 2
OPEN_LOOP_CONNECTIONS = 500
OPEN_LOOP_RATE = 1_000  # requests/s in total
WORKERS = 2  # as the Procfile starts them (WEB_CONCURRENCY's default)
DEFAULT_POOL_MAX = 50
SPARE_CONNECTIONS = 10
BOTH_COUNTS = ("ceiling_static", "ceiling_pk", "first_page", "deep_cursor")
LIST_SCENARIOS = ("first_page", "category_page", "deep_cursor", "deep_page_n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------- data


def db_name(size: int) -> str:
    return DB_NAMES.get(size, f"bench_{size}")


async def prepare_database(pg: str, size: int) -> str:
    """The database for ``size`` products, migrated and seeded (reused when its product count matches)."""
    name = db_name(size)
    url = f"{pg.rstrip('/')}/{name}"
    admin = await asyncpg.connect(f"{pg.rstrip('/')}/postgres")
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        present = None
        if exists:
            try:
                connection = await asyncpg.connect(url)
                try:
                    present = await connection.fetchval("SELECT count(*) FROM products")
                finally:
                    await connection.close()
            except asyncpg.UndefinedTableError:
                present = 0
        if exists and present not in (0, size):
            log(f"{name} holds {present:,} products, not {size:,}: rebuilding it")
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists, present = None, 0
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
            present = 0
    finally:
        await admin.close()
    subprocess.run([sys.executable, "-m", "catalog", "migrate"], cwd=PROJECT_ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": url}, stdout=subprocess.DEVNULL)
    if present == 0:
        from catalog.seed import seed

        log(f"seeding {name} with {size:,} products")
        await seed(url, size, progress=False)
    else:
        log(f"reusing {name}: {present:,} products")
    return url


@dataclass
class DataFacts:
    products: int
    active: int
    max_id: int
    categories: list[int]


async def data_facts(url: str) -> DataFacts:
    connection = await asyncpg.connect(url)
    try:
        products = await connection.fetchval("SELECT count(*) FROM products")
        active = await connection.fetchval("SELECT count(*) FROM products WHERE is_active")
        max_id = await connection.fetchval("SELECT max(id) FROM products")
        categories = [r["category_id"] for r in await connection.fetch(
            "SELECT category_id FROM products WHERE category_id IS NOT NULL AND is_active GROUP BY 1 ORDER BY 1")]
    finally:
        await connection.close()
    return DataFacts(products, active, max_id, categories)


# ------------------------------------------------------------------------------------------- server


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


def start_server(database_url: str, redis_url: str, prefix: str, cache: bool, pool_max: int, workers: int = WORKERS,
                 tree: Path = PROJECT_ROOT) -> Server:
    """The Procfile's web process with the ceilings' endpoints, once /health answers and every worker acked.

    ``tree`` is the source tree it runs (another revision's for ``--profile-baseline``)."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{prefix}.log"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
           "WEB_CONCURRENCY": str(workers), "CACHE_RESPONSES": "true" if cache else "false",
           "BENCHMARK_ENDPOINTS": "true", "PORT": str(port), "PYTHONPATH": str(tree), "DB_POOL_MAX": str(pool_max)}
    return Server(start_sanic(env, port, log_path, workers, tree), port, log_path)


def stop_server(server: Server) -> None:
    """Stopped, or killed with its workers when SIGTERM was not enough: the run goes on either way."""
    try:
        stop(server.process)
    except RuntimeError as error:
        log(str(error))


def forget_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    finally:
        client.close()


# ----------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Req:
    path: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None


class Monitor:
    """One connection to PostgreSQL kept for the whole run, opened before any server takes the others."""

    def __init__(self, pg: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(f"{pg.rstrip('/')}/postgres"))
        self.max_connections = int(self.loop.run_until_complete(self.connection.fetchval("SHOW max_connections")))

    def wait_until_idle(self, database: str, limit_s: float = 120) -> None:
        """Statements a scenario left running (wrk's timed-out requests, still being served) would be
        measured with the next scenario: wait until none of ``database``'s backends is busy."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            busy = self.loop.run_until_complete(self.connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active'", database))
            if not busy:
                return
            time.sleep(0.5)
        log(f"  {database}: statements still running after {limit_s:.0f} s, measuring anyway")

    def close(self) -> None:
        self.loop.run_until_complete(self.connection.close())
        self.loop.close()


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


LUA_TEMPLATE = r"""
-- generated by benchmarks/run.py
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_ts; int clock_gettime(int, bench_ts*); ]]
local specs = {
%(specs)s
}
local rate = %(rate)f  -- requests/s per thread; 0: closed loop
local formatted = {}
local next_ms = nil
local ts = ffi.new("bench_ts")
local threads_started = 0

local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function setup(thread)
  threads_started = threads_started + 1
  thread:set("thread_id", threads_started)
end

function init(args)
  math.randomseed(os.time() * 100 + (thread_id or 0) * 7919)
  for i, s in ipairs(specs) do
    formatted[i] = wrk.format(s[1], s[2], s[3], s[4])
  end
end

function request()
  return formatted[math.random(#formatted)]
end

if rate > 0 then
  -- An open loop: send times are handed out on a fixed schedule, whichever connection is free.
  function delay()
    local now = now_ms()
    if next_ms == nil then next_ms = now end
    next_ms = next_ms + 1000 / rate
    local wait = next_ms - now
    if wait < 0 then return 0 end
    return math.floor(wait)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50": %%d, "p95": %%d, "p99": %%d, "max": %%d, "mean": %%f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_script(requests: list[Req], rate_per_thread: float = 0.0) -> str:
    specs = []
    for r in requests:
        headers = "{" + ", ".join(f"[ {lua_string(k)} ] = {lua_string(v)}" for k, v in r.headers) + "}"
        body = lua_string(r.body) if r.body is not None else "nil"
        specs.append(f"  {{{lua_string(r.method)}, {lua_string(r.path)}, {headers}, {body}}},")
    return LUA_TEMPLATE % {"specs": "\n".join(specs), "rate": rate_per_thread}


# ---------------------------------------------------------------------------------------------- CPU

CPU_GROUPS = ("server", "postgres", "redis", "load generator")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def cpu_snapshot(server: Server, database: str) -> dict[tuple[str, int], float]:
    """CPU seconds per (group, pid): the server's processes, PostgreSQL's auxiliary processes and this
    database's backends (other databases' backends, such as concurrent test runs, are left out), Redis."""
    snapshot: dict[tuple[str, int], float] = {}
    main = psutil.Process(server.process.pid)
    for process in [main, *main.children(recursive=True)]:
        try:
            snapshot[("server", process.pid)] = _cpu(process)
        except psutil.Error:
            pass
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            name = process.info["name"] or ""
            title = " ".join(process.info["cmdline"] or [])
            if name.startswith("redis-server") or title.startswith("redis-server"):
                snapshot[("redis", process.pid)] = _cpu(process)
            elif name.startswith("postgres") or title.startswith("postgres"):
                is_backend = "127.0.0.1(" in title or "[local]" in title or "::1(" in title
                if is_backend and f" {database} " not in f" {title} ":
                    continue
                snapshot[("postgres", process.pid)] = _cpu(process)
        except psutil.Error:
            pass
    return snapshot


def cpu_delta(before: dict, after: dict, loadgen_seconds: float) -> dict[str, float]:
    totals = {group: 0.0 for group in CPU_GROUPS}
    for key, value in after.items():
        totals[key[0]] += max(0.0, value - before.get(key, 0.0))
    totals["load generator"] = loadgen_seconds
    return totals


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------ running


@dataclass
class Result:
    size: int
    cache: str  # "on" | "off"
    scenario: str
    loop: str  # "closed" | "open"
    connections: int
    tool: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    errors: int = 0  # connect + read + write + non-2xx/3xx
    status_errors: int = 0
    timeouts: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # cores used on average
    command: str = ""


def run_wrk(server: Server, script: Path, connections: int, seconds: float, latency: bool = True) -> tuple[dict, str]:
    command = ["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "-s", str(script)]
    if latency:
        command.append("--latency")
    command.append(f"http://127.0.0.1:{server.port}")
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120).stdout
    match = re.search(r"BENCH_JSON (\{.*\})", output)
    if not match:
        raise RuntimeError(f"wrk gave no summary: {output[-2000:]}")
    return json.loads(match.group(1)), " ".join(command[:-2] + [script.name, "--latency", command[-1]])


def run_hey(server: Server, path: str, connections: int, per_worker_qps: float, seconds: float) -> tuple[dict, str]:
    command = ["hey", "-c", str(connections), "-q", str(per_worker_qps), "-z", f"{int(seconds)}s",
               f"http://127.0.0.1:{server.port}{path}"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else 0.0

    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    bad = sum(count for code, count in statuses.items() if code >= 400)
    error_lines = output.split("Error distribution:")[1] if "Error distribution:" in output else ""
    failures = sum(int(n) for n in re.findall(r"\[(\d+)\]", error_lines))
    timeouts = sum(int(n) for n, text in re.findall(r"\[(\d+)\]\s+(.*)", error_lines) if "timeout" in text.lower()
                   or "deadline" in text.lower())
    summary = {
        "requests": sum(statuses.values()), "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50": number(r"50%+ in ([\d.]+) secs") * 1e6, "p95": number(r"95%+ in ([\d.]+) secs") * 1e6,
        "p99": number(r"99%+ in ([\d.]+) secs") * 1e6, "max": number(r"Slowest:\s+([\d.]+) secs") * 1e6,
        "status": bad, "errors": failures, "timeout": timeouts,
    }
    return summary, " ".join(command[:-1] + [f"http://127.0.0.1:PORT{path}"])


@dataclass
class Sample:
    statements: float
    cache: str
    plain_bytes: float
    gzip_bytes: float | None


def sample(server: Server, requests: list[Req], count: int = 6) -> Sample:
    """A few of the scenario's requests: SQL statements and cache outcome (Server-Timing), bytes plain and gzip."""
    rng = random.Random(1)
    chosen = [r for r in requests if r.method == "GET"]
    chosen = rng.sample(chosen, min(count, len(chosen)))
    statements, caches, plain, gzipped = [], [], [], []
    for r in chosen:
        status, headers, body = http_get(server.port, r.path, dict(r.headers))
        timing = headers.get("server-timing", "")
        found = re.search(r'db;dur=[\d.]+;desc="(\d+) statements"', timing)
        statements.append(int(found.group(1)) if found else 0)
        cache = re.search(r'cache;dur=[\d.]+;desc="([^"]*)"', timing)
        caches.append(cache.group(1) if cache else "?")
        plain.append(len(body))
        status, headers, body = http_get(server.port, r.path, {**dict(r.headers), "Accept-Encoding": "gzip"})
        if headers.get("content-encoding") == "gzip":
            gzipped.append(len(body))
    counts = {c: caches.count(c) for c in dict.fromkeys(caches)}
    return Sample(
        statistics.mean(statements) if statements else 0.0,
        " ".join(f"{c} {n}/{len(caches)}" for c, n in counts.items()),
        statistics.mean(plain) if plain else 0.0,
        statistics.mean(gzipped) if gzipped else None,
    )


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: list[Result] = []
        self.samples: dict[tuple[int, str, str], Sample] = {}
        self.rss: dict[tuple[int, str], list[float]] = {}
        self.explain: dict[int, list[dict]] = {}
        self.profile: dict[str, object] = {}
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.script_dir = Path(tempfile.mkdtemp(prefix="catalog-bench-lua-"))
        self.commands: list[str] = []
        self.timing: dict[str, object] = {}  # started, finished, minutes
        self.monitor: Monitor | None = None
        self.pool_max = DEFAULT_POOL_MAX

    def open_monitor(self) -> None:
        """The monitor connection, and the largest pool per worker (up to the default 50) that leaves it,
        a profile's two connections and a few spare under PostgreSQL's max_connections."""
        self.monitor = Monitor(self.args.pg)
        self.pool_max = min(DEFAULT_POOL_MAX, (self.monitor.max_connections - SPARE_CONNECTIONS) // WORKERS)
        self.args.pool_max = self.pool_max

    # scenarios -------------------------------------------------------------------------------

    def scenarios(self, server: Server, facts: DataFacts, deep_cursors: list[str], etag: str) -> dict[str, list[Req]]:
        rng = random.Random(self.args.seed)
        pages = max(1, facts.active // PAGE_SIZE)
        deep_pages = [rng.randint(int(pages * 0.9) + 1, pages) for _ in range(500)]
        product_ids = [rng.randint(1, facts.max_id) for _ in range(2000)]
        category = [Req(f"/products?category_id={c}") for c in facts.categories]
        first = [Req("/products")]
        cursors = [Req(f"/products?cursor={c}") for c in deep_cursors]
        page_n = [Req(f"/products?page={n}") for n in deep_pages]
        products = [Req(f"/products/{i}") for i in product_ids]
        batches = [Req("/products/batch?ids=" + ",".join(str(rng.randint(1, facts.max_id)) for _ in range(20)))
                   for _ in range(500)]
        # Mixed: 60% list pages (first, categories, shallow and deep pages), 25% products, 10% batches, 5% PUTs.
        mixed: list[Req] = []
        for _ in range(2000):
            roll = rng.random()
            if roll < 0.15:
                mixed.append(first[0])
            elif roll < 0.35:
                mixed.append(rng.choice(category))
            elif roll < 0.45:
                mixed.append(Req(f"/products?page={rng.randint(2, 50)}"))
            elif roll < 0.52:
                mixed.append(rng.choice(cursors))
            elif roll < 0.60:
                mixed.append(Req(f"/products?page={rng.randint(1, pages)}"))
            elif roll < 0.85:
                mixed.append(Req(f"/products/{rng.randint(1, facts.max_id)}"))
            elif roll < 0.95:
                mixed.append(rng.choice(batches))
            else:
                mixed.append(Req(f"/products/{rng.randint(1, facts.max_id)}", "PUT",
                                 (("Content-Type", "application/json"),),
                                 json.dumps({"price": round(rng.uniform(1, 500), 2)})))
        return {
            "ceiling_static": [Req("/_ceiling/static")],
            "ceiling_pk": [Req("/_ceiling/pk")],
            "first_page": first,
            "category_page": category,
            "deep_cursor": cursors,
            "deep_page_n": page_n,
            "product": products,
            "batch20": batches,
            "conditional_304": [Req("/products", headers=(("If-None-Match", etag),))],
            "mixed": mixed,
        }

    # measuring -------------------------------------------------------------------------------

    def measure(self, server: Server, size: int, cache: str, database: str, name: str, requests: list[Req],
                connections: int, rate: float = 0.0) -> Result:
        script = self.script_dir / f"{name}{'_open' if rate else ''}.lua"
        script.write_text(lua_script(requests, rate / WRK_THREADS if rate else 0.0))
        self.monitor.wait_until_idle(database)
        if self.args.warmup > 0:
            run_wrk(server, script, connections, self.args.warmup, latency=False)
        before, loadgen_before, started = cpu_snapshot(server, database), children_cpu(), time.monotonic()
        summary, command = run_wrk(server, script, connections, self.args.duration)
        wall = time.monotonic() - started
        cpu = cpu_delta(before, cpu_snapshot(server, database), children_cpu() - loadgen_before)
        result = Result(
            size, cache, name, "open" if rate else "closed", connections, "wrk",
            rps=summary["requests"] / (summary["duration_us"] / 1e6),
            p50_ms=summary["p50"] / 1000, p95_ms=summary["p95"] / 1000, p99_ms=summary["p99"] / 1000,
            max_ms=summary["max"] / 1000, requests=summary["requests"],
            errors=summary["connect"] + summary["read"] + summary["write"] + summary["status"],
            status_errors=summary["status"], timeouts=summary["timeout"],
            cpu={group: seconds / wall for group, seconds in cpu.items()}, command=command,
        )
        self.commands.append(command)
        self.results.append(result)
        log(f"  {size:>9,} cache {cache:<3} {name:<16} {result.loop:<6} c={connections:<3} "
            f"{result.rps:8.0f} req/s  p50 {result.p50_ms:7.1f}  p95 {result.p95_ms:7.1f}  p99 {result.p99_ms:7.1f} ms  "
            f"errors {result.errors} timeouts {result.timeouts}")
        return result

    def measure_hey(self, server: Server, size: int, cache: str, database: str, path: str) -> Result:
        per_worker = OPEN_LOOP_RATE / OPEN_LOOP_CONNECTIONS
        self.monitor.wait_until_idle(database)
        if self.args.warmup > 0:
            run_hey(server, path, OPEN_LOOP_CONNECTIONS, per_worker, max(1, self.args.warmup))
        before, loadgen_before, started = cpu_snapshot(server, database), children_cpu(), time.monotonic()
        summary, command = run_hey(server, path, OPEN_LOOP_CONNECTIONS, per_worker, self.args.duration)
        wall = time.monotonic() - started
        cpu = cpu_delta(before, cpu_snapshot(server, database), children_cpu() - loadgen_before)
        result = Result(
            size, cache, "first_page", "open", OPEN_LOOP_CONNECTIONS, "hey", rps=summary["rps"],
            p50_ms=summary["p50"] / 1000, p95_ms=summary["p95"] / 1000, p99_ms=summary["p99"] / 1000,
            max_ms=summary["max"] / 1000, requests=summary["requests"], errors=summary["errors"] + summary["status"],
            status_errors=summary["status"], timeouts=summary["timeout"],
            cpu={group: seconds / wall for group, seconds in cpu.items()}, command=command,
        )
        self.commands.append(command)
        self.results.append(result)
        log(f"  {size:>9,} cache {cache:<3} first_page (hey) open   c=500 {result.rps:8.0f} req/s  "
            f"p95 {result.p95_ms:7.1f} ms errors {result.errors}")
        return result

    def deep_cursors(self, server: Server, facts: DataFacts, count: int) -> list[str]:
        """X-Next-Cursor of real `page=N` responses past 90% of the catalog."""
        rng = random.Random(self.args.seed + 1)
        pages = max(1, facts.active // PAGE_SIZE)
        cursors = []
        for n in sorted(rng.sample(range(int(pages * 0.9) + 1, pages), min(count, pages // 10 - 1))):
            status, headers, _ = http_get(server.port, f"/products?page={n}")
            if status == 200 and "x-next-cursor" in headers:
                cursors.append(headers["x-next-cursor"])
        return cursors

    def profile_first_page(self, database_url: str, database: str) -> None:
        """The uncached first page profiled on this checkout and, with --profile-baseline, on that revision:
        each on a fresh server (cache off) on the same database, the same way, so the before/after is one run's."""
        runs: list[dict] = []
        self.profile = {"runs": runs}
        trees: list[tuple[str, str, Path | None]] = [("this checkout", "HEAD", None)]
        if self.args.profile_baseline:
            trees.append(("baseline", self.args.profile_baseline, baseline_tree(self.args.profile_baseline)))
        for label, revision, tree in trees:
            commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=PROJECT_ROOT, capture_output=True,
                                    text=True).stdout.strip()
            code = f"{label}: {revision} ({commit})"
            prefix = f"bench-{self.run_id}-profile-{commit}"
            log(f"profiling the uncached first page: {code}")
            server = start_server(database_url, self.args.redis, prefix, False, self.pool_max, tree=tree or PROJECT_ROOT)
            try:
                runs.append({"code": code, **profile_first_page(server, database_url, database, self.args,
                                                                tree or PROJECT_ROOT)})
            except Exception as error:  # a profile that fails must not lose the run's figures
                log(f"profile failed: {error!r}")
                runs.append({"code": code, "error": repr(error)})
            finally:
                stop_server(server)
                forget_prefix(self.args.redis, prefix)
                if tree is not None:
                    shutil.rmtree(tree, ignore_errors=True)

    def run_size(self, size: int) -> None:
        database_url = asyncio.run(prepare_database(self.args.pg, size))
        database = db_name(size)
        facts = asyncio.run(data_facts(database_url))
        log(f"{database}: {facts.products:,} products ({facts.active:,} active), {len(facts.categories)} categories")
        self.explain[size] = asyncio.run(explain_hot_queries(database_url, facts))
        cursors: list[str] = []
        for cache in ("on", "off"):
            prefix = f"bench-{self.run_id}-{database}-{cache}"
            server = start_server(database_url, self.args.redis, prefix, cache == "on", self.pool_max)
            try:
                if not cursors:
                    cursors = self.deep_cursors(server, facts, 30 if self.args.quick else 100)
                etag = http_get(server.port, "/products")[1]["etag"]
                scenarios = self.scenarios(server, facts, cursors, etag)
                for name, requests in scenarios.items():
                    # Every scenario at the highest count; the lower counts only where a target compares them.
                    for connections in self.args.connections:
                        if connections != max(self.args.connections) and name not in BOTH_COUNTS:
                            continue
                        self.measure(server, size, cache, database, name, requests, connections)
                    self.samples[(size, cache, name)] = sample(server, requests)
                self.measure(server, size, cache, database, "mixed", scenarios["mixed"], OPEN_LOOP_CONNECTIONS,
                             rate=OPEN_LOOP_RATE)
                self.measure_hey(server, size, cache, database, "/products")
                self.rss[(size, cache)] = [w.memory_info().rss / 2**20 for w in server.workers()]
                log(f"  RSS per worker: {', '.join(f'{r:.0f} MB' for r in self.rss[(size, cache)])}")
            finally:
                stop_server(server)
                forget_prefix(self.args.redis, prefix)
                save_results(self)
        if size == self.args.sizes[0] and not self.args.no_profile:
            self.profile_first_page(database_url, database)


# ------------------------------------------------------------------------------------------ EXPLAIN


async def explain_hot_queries(database_url: str, facts: DataFacts) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL Tortoise generates for the hot reads, in the service's
    session settings (random_page_cost, enable_mergejoin); median of 5 executions."""
    from dataclasses import replace

    from tortoise import Tortoise

    from catalog.models import Product
    from catalog.queries import ANCHORS_SQL, Keyset, Ordering, ProductFilter, product_rows, reviews_of
    from config.settings import Settings
    from config.tortoise import tortoise_config

    await Tortoise.init(config=tortoise_config(database_url, replace(Settings(), db_pool_min=1, db_pool_max=1)))
    try:
        connection = Tortoise.get_connection("default")
        _, rows = await connection.execute_query(
            "SELECT id FROM products WHERE is_active ORDER BY id OFFSET $1 LIMIT 1", [int(facts.active * 0.95)])
        deep_id = rows[0]["id"]
        _, rows = await connection.execute_query(
            "SELECT category_id, count(*) AS n FROM products WHERE is_active AND category_id IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
        big_category = rows[0]["category_id"]
        active = ProductFilter()
        ordering = Ordering()
        skip = (max(1, facts.active // PAGE_SIZE) - 10) * PAGE_SIZE

        def page(queryset):
            return product_rows(queryset.order_by("id").limit(PAGE_SIZE + 1)).sql(params_inline=True)

        first_page_ids = [p.id for p in await active.apply(Product.all()).order_by("id").limit(PAGE_SIZE)]
        statements = {
            "first page (products + category + inventory)": page(active.apply(Product.all())),
            "first page reviews (IN, 20 ids)": reviews_of(first_page_ids).sql(params_inline=True),
            "deep cursor page (past 95%)": page(ordering.beyond(active.apply(Product.all()), Keyset(None, deep_id))),
            # Tortoise leaves a subquery's parameters as $n even with params_inline: the same SQL, inlined here.
            # page=N in the default order: from the nearest anchor (at most PAGE_ANCHOR_EVERY - 1 rows
            # skipped); the anchors are computed once until a product enters or leaves the list.
            "page=N deep, from its anchor (how the service runs it)": page(active.apply(Product.all())).replace(
                'WHERE "products"."is_active"=true',
                f'WHERE "products"."is_active"=true AND "products"."id">{deep_id} AND "products"."id">=(SELECT "id" '
                f'FROM "products" WHERE "is_active"=true AND "id">{deep_id} ORDER BY "id" ASC LIMIT 1 OFFSET 999)'),
            "page anchors (every 1000th id; once per membership change)": ANCHORS_SQL.format(
                where="is_active = true").replace("$1", "999"),
            "page=N deep, plain OFFSET (without Redis, or another sort)": page(active.apply(Product.all())).replace(
                'WHERE "products"."is_active"=true',
                'WHERE "products"."is_active"=true AND "products"."id">=(SELECT "id" FROM "products" WHERE '
                f'"is_active"=true ORDER BY "id" ASC LIMIT 1 OFFSET {skip})'),
            f"category page (largest category, {big_category})": page(
                ProductFilter(category_id=big_category).apply(Product.all())),
            "count of active products": active.apply(Product.all()).count().sql(params_inline=True),
            "product by id": product_rows(Product.filter(id=facts.max_id // 2).limit(1)).sql(params_inline=True),
        }
        out = []
        for label, sql in statements.items():
            times, planning, buffers = [], [], ""
            if "$" in sql:
                log(f"EXPLAIN skipped for {label}: parameters not inlined")
                continue
            for _ in range(5):
                _, rows = await connection.execute_query(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")
                plan = rows[0][0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                times.append(plan[0]["Execution Time"])
                planning.append(plan[0]["Planning Time"])
                top = plan[0]["Plan"]
                buffers = f"hit {top.get('Shared Hit Blocks', 0)}, read {top.get('Shared Read Blocks', 0)}"
                node = top["Node Type"]
            out.append({"query": label, "execution_ms": statistics.median(times),
                        "planning_ms": statistics.median(planning), "buffers": buffers, "top_node": node,
                        "sql": sql})
        return out
    finally:
        await Tortoise.close_connections()


# ------------------------------------------------------------------------------------------ profile


def profile_first_page(server: Server, database_url: str, database: str, args: argparse.Namespace,
                       tree: Path = PROJECT_ROOT) -> dict:
    """Where an uncached first list page spends its time, in the code of ``tree`` (served by ``server``).

    (1) wrk at 50 connections on /products: requests/s and the server's CPU milliseconds per request,
    while py-spy samples one worker (on-CPU only); its frames are grouped into SQL driver, ORM, serialisation,
    middleware, the rest of Sanic and the loop. (2) benchmarks/page_breakdown.py, run on ``tree``: medians
    of the page's SQL over raw asyncpg, queries.products_page, the serialisation and one HTTP request.
    """
    result: dict[str, object] = {}
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    worker = max(server.workers(), key=lambda p: p.memory_info().rss)  # a Sanic worker, not a helper process
    raw = LOG_DIR / f"first_page_profile_{server.port}.txt"
    seconds = max(5, int(args.duration))
    script = Path(tempfile.mkdtemp()) / "first.lua"
    script.write_text(lua_script([Req("/products")]))
    run_wrk(server, script, 50, max(2, args.warmup), latency=False)
    spy = subprocess.Popen([py_spy, "record", "--pid", str(worker.pid), "--format", "raw", "--rate", "250",
                            "--duration", str(seconds), "-o", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    before = cpu_snapshot(server, database)
    summary, _ = run_wrk(server, script, 50, seconds, latency=False)
    cpu = cpu_delta(before, cpu_snapshot(server, database), 0.0)
    _, error = spy.communicate(timeout=60)
    result["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    result["server_cpu_ms_per_request"] = 1000 * cpu["server"] / max(1, summary["requests"])
    result["postgres_cpu_ms_per_request"] = 1000 * cpu["postgres"] / max(1, summary["requests"])
    if raw.exists():
        result["py_spy"] = classify_stacks(raw.read_text())
        result["py_spy_command"] = f"py-spy record --pid <worker> --format raw --rate 250 --duration {seconds}"
    else:
        result["py_spy_error"] = (error or "")[-500:]
    breakdown = subprocess.run(
        [sys.executable, str(BENCH_DIR / "page_breakdown.py"), database_url, str(server.port)],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=600)
    if breakdown.returncode == 0:
        result["in_process"] = json.loads(breakdown.stdout.strip().splitlines()[-1])
    else:  # e.g. PostgreSQL's max_connections taken by the server's pools
        result["in_process_error"] = breakdown.stderr[-500:]
    return result


def baseline_tree(revision: str) -> Path:
    """``revision``'s files (git archive) in a temporary directory, to run beside this checkout."""
    target = Path(tempfile.mkdtemp(prefix="catalog-baseline-"))
    archive = subprocess.run(["git", "archive", revision], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


PROFILE_GROUPS = (
    # (group, substrings of a frame, checked leaf-first per stack: the innermost matching frame wins)
    ("serialisation (catalog.serialize, orjson)", ("catalog/serialize.py",)),
    ("SQL driver (asyncpg protocol, pool)", ("asyncpg/",)),
    ("ORM: building models, select_related, prefetch (tortoise)", ("tortoise/", "pypika")),
    ("response cache + counts (catalog.cache, redis client)", ("catalog/cache.py", "redis/")),
    ("middleware: ETag hash, gzip, timing, logging (catalog.http, logging)", ("catalog/http.py", "logging/",
                                                                             "hashlib", "gzip")),
    ("cursor signing / validation (catalog.cursor, catalog.validation)", ("catalog/cursor.py",
                                                                          "catalog/validation.py")),
    ("Sanic: HTTP parsing, routing, response writing", ("sanic/", "sanic_ext/", "sanic_routing/", "httptools")),
    ("event loop, other", ("",)),
)


def classify_stacks(collapsed: str) -> list[tuple[str, float]]:
    """Share of on-CPU samples per group; a stack counts for its innermost frame that belongs to a group
    other than the last (catch-all)."""
    counts = {group: 0 for group, _ in PROFILE_GROUPS}
    total = 0
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        chosen = PROFILE_GROUPS[-1][0]
        for frame in reversed(frames):
            hit = next((g for g, needles in PROFILE_GROUPS[:-1] if any(n in frame for n in needles)), None)
            if hit:
                chosen = hit
                break
        counts[chosen] += samples
    return [(group, 100 * n / total if total else 0.0) for group, n in counts.items()] + [("samples", total)]


# ------------------------------------------------------------------------------------------- report

SCENARIO_LABELS = {
    "ceiling_static": "ceiling: static 20-product body",
    "ceiling_pk": "ceiling: one PK SELECT",
    "first_page": "first list page",
    "category_page": "list by category (first page, all categories)",
    "deep_cursor": "deep cursor page (past 90%)",
    "deep_page_n": "page=N deep (past 90%)",
    "product": "product by id (random)",
    "batch20": "batch of 20 random ids",
    "conditional_304": "conditional GET (If-None-Match, 304)",
    "mixed": "mixed workload",
}


def find(results: list[Result], size: int, cache: str, scenario: str, connections: int = 500, loop: str = "closed",
         tool: str = "wrk") -> Result | None:
    return next((r for r in results if r.size == size and r.cache == cache and r.scenario == scenario
                 and r.connections == connections and r.loop == loop and r.tool == tool), None)


def machine() -> dict[str, str]:
    def run(command: str) -> str:
        return subprocess.run(command, shell=True, capture_output=True, text=True).stdout.strip()

    return {
        "nproc": run("nproc"),
        "free": subprocess.run("free -h", shell=True, capture_output=True, text=True).stdout.rstrip(),
        "cpu": run("lscpu | grep 'Model name' | sed 's/Model name: *//'"),
        "kernel": platform.release(),
        "postgres": run("psql -h 127.0.0.1 -U postgres -Atc 'show server_version'") or "?",
        "redis": run("redis-cli -h 127.0.0.1 info server | grep redis_version | tr -d '\\r'") or "?",
        "python": platform.python_version(),
        "wrk": run("wrk -v 2>&1 | head -1"),
    }


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def targets(bench: Bench) -> list[tuple[str, str, bool | None]]:
    r, sizes = bench.results, bench.args.sizes
    rows: list[tuple[str, str, bool | None]] = []
    for size in sizes:
        tag = f"{size:,}"
        cached, static = find(r, size, "on", "first_page"), find(r, size, "on", "ceiling_static")
        if cached and static:
            tput = cached.rps / static.rps
            p95 = cached.p95_ms / static.p95_ms if static.p95_ms else float("inf")
            rows.append((f"{tag}: cached first page, 500 conn closed loop: >= 50% of static ceiling's req/s",
                         f"{cached.rps:,.0f} / {static.rps:,.0f} = {tput:.0%}", tput >= 0.5))
            rows.append((f"{tag}: cached first page P95 <= 2x static ceiling's P95",
                         f"{cached.p95_ms:.1f} / {static.p95_ms:.1f} ms = {p95:.2f}x", p95 <= 2))
            rows.append((f"{tag}: cached first page, 0 errors", f"{cached.errors} errors, {cached.timeouts} timeouts",
                         cached.errors == 0 and cached.timeouts == 0))
        for cache in ("on", "off"):
            mixed = find(r, size, cache, "mixed", OPEN_LOOP_CONNECTIONS, "open")
            if mixed:
                rows.append((f"{tag}: open loop 500 conn ~1,000 req/s mixed (cache {cache}): P95 < 200 ms, 0 errors, "
                             "0 timeouts", f"{mixed.rps:,.0f} req/s, P95 {mixed.p95_ms:.1f} ms, {mixed.errors} errors, "
                             f"{mixed.timeouts} timeouts",
                             mixed.p95_ms < 200 and mixed.errors == 0 and mixed.timeouts == 0))
        pk = find(r, size, "off", "ceiling_pk")
        for scenario, share in (("first_page", 0.2), ("product", 0.4)):
            got = find(r, size, "off", scenario)
            if got and pk:
                rows.append((f"{tag}: cache off, {SCENARIO_LABELS[scenario]} >= {share:.0%} of PK ceiling (500 conn)",
                             f"{got.rps:,.0f} / {pk.rps:,.0f} = {got.rps / pk.rps:.0%}", got.rps / pk.rps >= share))
        off500 = [x for x in r if x.size == size and x.cache == "off" and x.connections == 500 and x.loop == "closed"]
        service = [x for x in off500 if not x.scenario.startswith("ceiling_")]
        if service:
            timeouts = sum(x.timeouts for x in service)
            worst = max(service, key=lambda x: x.timeouts)
            static_timeouts = next((x.timeouts for x in off500 if x.scenario == "ceiling_static"), 0)
            rows.append((f"{tag}: cache off, 0 timeouts at 500 connections (every scenario but the ceilings)",
                         f"{timeouts} timeouts" + (f" (most: {worst.scenario} {worst.timeouts})" if timeouts else "")
                         + f"; the static ceiling itself: {static_timeouts}", timeouts == 0))
        for connections in bench.args.connections:
            first, deep = find(r, size, "off", "first_page", connections), find(r, size, "off", "deep_cursor",
                                                                                connections)
            if first and deep:
                ratio = first.rps / deep.rps
                rows.append((f"{tag}: cache off, deep cursor page within 1.1x of first page throughput "
                             f"({connections} conn)", f"{first.rps:,.0f} / {deep.rps:,.0f} = {ratio:.2f}x",
                             ratio <= 1.1))
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for cache in ("on", "off"):
            for connections in bench.args.connections:
                parts, ok = [], True
                for scenario in LIST_SCENARIOS:
                    a, b = find(r, small, cache, scenario, connections), find(r, large, cache, scenario, connections)
                    if a and b:
                        ratio = a.rps / b.rps if b.rps else float("inf")
                        ok = ok and ratio <= 1.2
                        parts.append(f"{scenario} {ratio:.2f}x")
                if parts:
                    rows.append((f"{large:,} within 1.2x of {small:,} for every list scenario (cache {cache}, "
                                 f"{connections} conn)", ", ".join(parts), ok))
    for size in sizes:
        s = bench.samples.get((size, "on", "first_page"))
        if s and s.gzip_bytes:
            saved = 1 - s.gzip_bytes / s.plain_bytes
            rows.append((f"{size:,}: gzip of a 20-product page >= 70% smaller",
                         f"{s.plain_bytes:,.0f} -> {s.gzip_bytes:,.0f} bytes: {saved:.0%} smaller", saved >= 0.7))
    rss = [(key, value) for key, values in bench.rss.items() for value in values]
    if rss:
        worst = max(value for _, value in rss)
        rows.append(("RSS per worker < 150 MB (after each server's run)", f"max {worst:.0f} MB", worst < 150))
    return rows


def fmt_cpu(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu.get(group, 0):.2f}" for group in CPU_GROUPS)


def report(bench: Bench) -> str:
    args, r = bench.args, bench.results
    info = machine()
    out = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py` (see `benchmarks/README.md`); do not edit by hand. "
        f"Run started {bench.timing.get('started', '?')}, finished {bench.timing.get('finished', '?')} "
        f"({bench.timing.get('minutes', 0):.0f} min).",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, `nproc` = {info['nproc']} (the load generator, the 2 Sanic workers, PostgreSQL "
        "and Redis all share these cores)",
        f"- PostgreSQL {info['postgres']} at 127.0.0.1:5432, Redis {info['redis'].split(':')[-1]}, Python "
        f"{info['python']}, {info['wrk']}, kernel {info['kernel']}",
        "",
        "```",
        info["free"],
        "```",
        "",
        "## How it was run",
        "",
        "```sh",
        f"python -m benchmarks.run {' '.join(a for a in (getattr(args, 'argv', None) or sys.argv[1:]) if a != '--from-results')}".rstrip(),
        "```",
        "",
        f"Sizes: {', '.join(f'{s:,}' for s in args.sizes)} products. Each scenario: a {args.warmup:g} s warm-up run "
        f"(discarded), then {args.duration:g} s measured. Closed loop: `wrk -t {WRK_THREADS} -c <50|500> -d "
        f"{args.duration:g}s -s <scenario>.lua --latency` (timeouts are wrk's default 2 s). Open loop: the same "
        f"Lua script with a `delay()` that hands out send times at {OPEN_LOOP_RATE:,} req/s in total over "
        f"{OPEN_LOOP_CONNECTIONS} connections, and `hey -c 500 -q 2 -z {int(args.duration)}s` on the first page. "
        "Server: `python -m sanic catalog.app:create_app --factory --workers 2` (the Procfile's command; "
        f"DB_POOL_MIN 20, DB_POOL_MAX {getattr(args, 'pool_max', DEFAULT_POOL_MAX)}: the default 50 when "
        "2 x 50 fits under PostgreSQL's max_connections beside the harness's own connections, else the most that "
        "does), REDIS_URL set, a CACHE_PREFIX per run, once as shipped "
        "(cache on) and once with CACHE_RESPONSES=false (cache off; counts stay cached), both with "
        "BENCHMARK_ENDPOINTS=true for the ceilings. Ratios compare figures of this one run.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    for label, figure, ok in targets(bench):
        out.append(f"| {label} | {figure} | {verdict(ok) if ok is not None else 'n/a'} |")
    for size in args.sizes:
        out += ["", f"## {size:,} products", "",
                "Latency in ms. errors: connect/read/write errors + non-2xx/3xx responses; timeouts: no answer "
                "within 2 s. SQL/req and cache: from the Server-Timing header of 6 sampled requests after the run. "
                "CPU: cores used on average during the measured run by server / PostgreSQL / Redis / load generator.",
                "",
                "| scenario | cache | loop | conn | req/s | P50 | P95 | P99 | max | errors | timeouts | SQL/req | "
                "cache (sampled) | bytes plain | bytes gzip | CPU srv/pg/redis/load |",
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
        for x in [x for x in r if x.size == size]:
            s = bench.samples.get((size, x.cache, x.scenario))
            label = SCENARIO_LABELS[x.scenario] + (" (hey)" if x.tool == "hey" else "")
            out.append(
                f"| {label} | {x.cache} | {x.loop} | {x.connections} | {x.rps:,.0f} | {x.p50_ms:.1f} | {x.p95_ms:.1f} "
                f"| {x.p99_ms:.1f} | {x.max_ms:.0f} | {x.errors} | {x.timeouts} | "
                f"{s.statements:.1f} | {s.cache} | {s.plain_bytes:,.0f} | "
                f"{'-' if s.gzip_bytes is None else f'{s.gzip_bytes:,.0f}'} | {fmt_cpu(x.cpu)} |"
                if s else
                f"| {label} | {x.cache} | {x.loop} | {x.connections} | {x.rps:,.0f} | {x.p50_ms:.1f} | {x.p95_ms:.1f} "
                f"| {x.p99_ms:.1f} | {x.max_ms:.0f} | {x.errors} | {x.timeouts} | | | | | {fmt_cpu(x.cpu)} |")
        rss = {cache: values for (s, cache), values in bench.rss.items() if s == size}
        out += ["", "RSS per worker when the server stopped: " + "; ".join(
            f"cache {cache}: {', '.join(f'{v:.0f} MB' for v in values)}" for cache, values in rss.items()) + ".", ""]
        if size in bench.explain:
            out += ["EXPLAIN (ANALYZE, BUFFERS) of the hot queries (the SQL Tortoise generates; the service's session "
                    "settings random_page_cost=1.1, enable_mergejoin=off; median of 5):", "",
                    "| query | execution ms | planning ms | top node | buffers |", "| --- | ---: | ---: | --- | --- |"]
            for e in bench.explain[size]:
                out.append(f"| {e['query']} | {e['execution_ms']:.3f} | {e['planning_ms']:.3f} | {e['top_node']} | "
                           f"{e['buffers']} |")
    if bench.profile:
        out += profile_report(bench)
    out += ["", "## Commands run", "", "```sh"] + sorted(set(bench.commands)) + ["```", ""]
    return "\n".join(out)


PROFILE_STEPS = (
    ("sql", "the page's SQL statements over raw asyncpg (round trips + execution)"),
    ("orm", "`queries.products_page` (the same statements through Tortoise, rows to objects)"),
    ("tortoise", "of which Tortoise's own work (difference)"),
    ("serialise", "`serialize.product_page` + `orjson.dumps`"),
    ("http", "whole HTTP request seen by the client"),
    ("server_total", "of which in the handler + middleware (Server-Timing total)"),
    ("server_db", "of which in the database (Server-Timing db, incl. the count lookup)"),
)


def profile_report(bench: Bench) -> list[str]:
    runs = bench.profile.get("runs", [])
    if not runs:
        return []
    columns = [run["code"] for run in runs]
    out = ["", f"## Profile of the uncached first list page ({bench.args.sizes[0]:,} products)", "",
           "Each column is one source tree, served and measured the same way in this run (`--profile-baseline` "
           "adds the older revision's column). Load: `wrk -c 50` on `/products`, response cache off.", "",
           "| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]

    def row(label: str, values: list[str]) -> None:
        out.append(f"| {label} | " + " | ".join(values) + " |")

    row("requests/s (2 workers, 50 connections)", [f"{run.get('rps', 0):,.0f}" for run in runs])
    row("server CPU ms per request", [f"{run.get('server_cpu_ms_per_request', 0):.2f}" for run in runs])
    row("PostgreSQL CPU ms per request", [f"{run.get('postgres_cpu_ms_per_request', 0):.2f}" for run in runs])
    out += ["", "Medians, one request at a time, in ms (`benchmarks/page_breakdown.py`):", "",
            "| step | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for key, label in PROFILE_STEPS:
        values = []
        for run in runs:
            t = run.get("in_process", {})
            value = t.get("orm", 0) - t.get("sql", 0) if key == "tortoise" else t.get(key)
            values.append("-" if value is None or not t else f"{value:.2f}")
        row(label, values)
    row("SQL statements per page", [f"{run.get('in_process', {}).get('statements', 0):.0f}" for run in runs])
    sampled = [run for run in runs if "py_spy" in run]
    if sampled:
        out += ["", f"On-CPU samples of one worker during that load (`{sampled[0]['py_spy_command']}`), grouped by "
                "the innermost recognised frame:", "", "| where | " + " | ".join(columns) + " |",
                "| --- |" + " ---: |" * len(columns)]
        for index, (group, _) in enumerate(sampled[0]["py_spy"]):
            values = []
            for run in runs:
                shares = run.get("py_spy")
                share = shares[index][1] if shares else None
                values.append("-" if share is None else f"{share:,.0f}" if group == "samples" else f"{share:.1f}%")
            row(group, values)
    for run in runs:
        for problem in ("error", "py_spy_error", "in_process_error"):
            if problem in run:
                out.append(f"\n{run['code']}: {problem}: `{run[problem]}`")
    return out


def chart(bench: Bench, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = bench.args.sizes
    scenarios = list(SCENARIO_LABELS)
    fig, axes = plt.subplots(len(sizes), 2, figsize=(16, 5 * len(sizes)), squeeze=False)
    for row, size in enumerate(sizes):
        for col, (metric, title) in enumerate((("rps", "requests/s"), ("p95_ms", "P95 latency (ms)"))):
            ax = axes[row][col]
            width = 0.38
            for offset, cache, color in ((-width / 2, "on", "#2b7bba"), (width / 2, "off", "#e8743b")):
                values = []
                for scenario in scenarios:
                    if scenario == "mixed":
                        found = find(bench.results, size, cache, scenario, OPEN_LOOP_CONNECTIONS, "open")
                    else:
                        found = find(bench.results, size, cache, scenario)
                    values.append(getattr(found, metric) if found else 0)
                ax.bar([i + offset for i in range(len(scenarios))], values, width, label=f"cache {cache}", color=color)
            ax.set_xticks(range(len(scenarios)))
            ax.set_xticklabels([SCENARIO_LABELS[s].replace(" (", "\n(") for s in scenarios], rotation=35, ha="right",
                               fontsize=8)
            ax.set_title(f"{size:,} products: {title}, 500 conn closed loop (mixed: open loop ~1,000 req/s)")
            if metric == "p95_ms":
                ax.set_yscale("log")
            ax.legend()
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated product counts")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=5, help="warm-up seconds per scenario (discarded)")
    parser.add_argument("--connections", default="50,500", help="closed-loop connection counts")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100,000 only, 5 s after a 2 s warm-up")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL, no db")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy / in-process profile")
    parser.add_argument("--profile-baseline", metavar="REV",
                        help="also profile the uncached first page on this git revision, for a before/after")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "BENCHMARKS.md"))
    parser.add_argument("--from-results", action="store_true",
                        help="only rewrite BENCHMARKS.md and chart.png from benchmarks/results.json")
    parser.add_argument("--refresh-explain", action="store_true",
                        help="with --from-results: run the EXPLAINs again on the benchmark databases first")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.duration, args.warmup = "100000", 5, 2
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.connections = [int(c) for c in args.connections.split(",")]
    for tool in ("wrk", "hey"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not on PATH: apt-get install -y wrk hey")
    started = time.monotonic()
    bench = Bench(args)
    if args.from_results:
        load_results(bench)
        if args.refresh_explain:
            for size in bench.args.sizes:
                database_url = f"{args.pg.rstrip('/')}/{db_name(size)}"
                bench.explain[size] = asyncio.run(explain_hot_queries(database_url, asyncio.run(data_facts(database_url))))
            save_results(bench)
        Path(args.output).write_text(report(bench))
        chart(bench, BENCH_DIR / "chart.png")
        return
    bench.timing["started"] = time.strftime("%Y-%m-%d %H:%M")
    bench.open_monitor()
    try:
        for size in args.sizes:
            bench.run_size(size)
            save_results(bench)
    finally:
        bench.monitor.close()
    bench.timing.update(finished=time.strftime("%Y-%m-%d %H:%M"), minutes=(time.monotonic() - started) / 60)
    save_results(bench)
    Path(args.output).write_text(report(bench))
    chart(bench, BENCH_DIR / "chart.png")
    log(f"wrote {args.output}, {BENCH_DIR / 'chart.png'}, {BENCH_DIR / 'results.json'}")


def load_results(bench: Bench) -> None:
    data = json.loads((BENCH_DIR / "results.json").read_text())
    bench.args.__dict__.update(data.get("args", {}))
    bench.results = [Result(**x) for x in data["results"]]
    bench.samples = {(int(k.split("/")[0]), *k.split("/")[1:]): Sample(**v) for k, v in data["samples"].items()}
    bench.rss = {(int(k.split("/")[0]), k.split("/")[1]): v for k, v in data["rss_mb"].items()}
    bench.explain = {int(k): v for k, v in data["explain"].items()}
    bench.profile = data["profile"]
    bench.commands = data.get("commands", [])
    bench.args.argv = data.get("argv")
    bench.timing = data.get("timing", {})


def save_results(bench: Bench) -> None:
    (BENCH_DIR / "results.json").write_text(json.dumps({
        "args": {k: v for k, v in vars(bench.args).items() if k in ("sizes", "duration", "warmup", "connections", "pool_max")},
        "argv": sys.argv[1:], "commands": bench.commands,
        "results": [vars(x) for x in bench.results],
        "samples": {f"{k[0]}/{k[1]}/{k[2]}": vars(v) for k, v in bench.samples.items()},
        "rss_mb": {f"{k[0]}/{k[1]}": v for k, v in bench.rss.items()},
        "explain": bench.explain, "profile": bench.profile, "timing": bench.timing,
    }, indent=1, default=str))


if __name__ == "__main__":
    main()
