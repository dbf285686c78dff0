"""Load benchmark of the whole service against this machine's ceiling, at 100,000 and 1,000,000 products.

    python -m benchmarks.run [--sizes 100000,1000000] [--duration 20] [--warmup 5] [--quick] [--targets-only]

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
   (wrk with a Lua `delay()` that hands out send times on a fixed schedule; with the cache on, on a server
   of its own: step 6), and the first list page as
   `hey -c 500 -q 2` (one URL: hey cannot vary it);
4. records per scenario requests/s, latency P50/P95/P99/max (wrk's Lua `done()`), errors (connect, read,
   write, non-2xx/3xx status, timeouts: wrk's 2 s default), SQL statements and cache outcome per request
   (the Server-Timing header of sampled requests after the run), bytes per response (plain and gzip),
   CPU seconds of the server processes, PostgreSQL (auxiliary processes and this database's backends),
   Redis and the load generator (psutil deltas over the measured run), and the RSS of each worker when the
   server stops;
5. runs EXPLAIN (ANALYZE, BUFFERS) of the hot queries (the SQL Tortoise generates for them) at each size;
6. measures issue 13's targets (``benchmarks.targets``): the bare Sanic ceiling (``benchmarks.bare``) just
   before the cache-on server, whose runs at 500 connections are the cached GETs and the primary-key
   ceiling; then, each on servers of its own, the mixed workload as an open loop on a fresh cache with the
   response cache's hit ratio, the misses, and the access log line's cost (LOG_LEVEL=INFO against WARNING).
   ``--targets-only`` measures these alone and prints their table (``python -m benchmarks.targets``).

It writes BENCHMARKS.md at the repository root, benchmarks/chart.png, and the raw figures to
benchmarks/results.json. Numbers are for ratios within one run: the load generator shares the machine.

This module runs the steps; the databases are ``benchmarks.data``'s, the servers ``benchmarks.servers``',
the load and its figures ``benchmarks.load``'s, issue 13's targets ``benchmarks.targets``', the profile
``benchmarks.profiling``'s, and the report ``benchmarks.report``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import log, targets
from benchmarks.data import (
    Monitor,
    data_facts,
    db_name,
    explain_hot_queries,
    prepare_database,
)
from benchmarks.load import (
    OPEN_LOOP_CONNECTIONS,
    OPEN_LOOP_RATE,
    WRK_THREADS,
    Req,
    Result,
    children_cpu,
    cpu_delta,
    cpu_snapshot,
    deep_cursors,
    hit_ratios,
    lua_script,
    run_hey,
    run_wrk,
    sample,
    scenarios,
    workers,
)
from benchmarks.profiling import baseline_tree, profile_first_page
from benchmarks.report import (
    CHART,
    RESULTS,
    Figures,
    chart,
    load_results,
    report,
    save_results,
)
from benchmarks.servers import (
    DEFAULT_POOL_MAX,
    WORKERS,
    Server,
    forget_prefix,
    http_get,
    start_server,
    stop_server,
)
from config.settings import PROJECT_ROOT

SPARE_CONNECTIONS = 10
BOTH_COUNTS = ("ceiling_static", "ceiling_pk", "first_page", "deep_cursor")


class Bench(Figures):
    """A run: its figures, and what measuring them takes (the monitor connection, the Lua scripts, the pools'
    size)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.script_dir = Path(tempfile.mkdtemp(prefix="catalog-bench-lua-"))
        self.monitor: Monitor | None = None
        self.pool_max = DEFAULT_POOL_MAX

    def open_monitor(self) -> None:
        """The monitor connection, and the largest pool per worker (up to the default 50) that leaves it,
        a profile's two connections and a few spare under PostgreSQL's max_connections."""
        self.monitor = Monitor(self.args.pg)
        self.pool_max = min(DEFAULT_POOL_MAX, (self.monitor.max_connections - SPARE_CONNECTIONS) // WORKERS)
        self.args.pool_max = self.pool_max

    def measure(self, server: Server, size: int, cache: str, database: str, name: str, requests: list[Req] | str,
                connections: int, rate: float = 0.0, warmup: bool | list[Req] = True) -> Result:
        """``requests`` sent by wrk (one at random each time) for --duration after a --warmup of the same, or
        of ``warmup``'s requests, or of nothing; a ``str`` is a Lua script with a request() of its own (ending
        with ``LUA_DONE``). On the service, the hit ratios its caches count over the measured run as well."""
        script = self.script_dir / f"{name}{'_open' if rate else ''}.lua"
        script.write_text(requests if isinstance(requests, str) else lua_script(requests, rate / WRK_THREADS))
        self.monitor.wait_until_idle(database)
        if warmup and self.args.warmup > 0:
            warm = script
            if isinstance(warmup, list):
                warm = self.script_dir / f"{name}_warmup.lua"
                warm.write_text(lua_script(warmup))
            run_wrk(server, warm, connections, self.args.warmup, latency=False)
        if server.prefix:
            hit_ratios(self.args.redis, server.prefix, reset=True)
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
            **(hit_ratios(self.args.redis, server.prefix) if server.prefix else {}),
        )
        self.commands.append(command)
        self.results.append(result)
        hits = f"  hits {result.hits:.0%}" if result.hits is not None else ""
        log(f"  {size:>9,} cache {cache:<3} {name:<18} {result.loop:<6} c={connections:<3} "
            f"{result.rps:8.0f} req/s  p50 {result.p50_ms:7.1f}  p95 {result.p95_ms:7.1f}  p99 {result.p99_ms:7.1f} ms  "
            f"errors {result.errors} timeouts {result.timeouts}{hits}")
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

    @contextmanager
    def serving(self, database_url: str, database: str, name: str, cache: bool = True, pool_max: int = 0,
                overrides: dict[str, str] | None = None) -> Iterator[Server]:
        """The service as the Procfile starts it (``start_server``) on a cache prefix of its own, which is
        forgotten once it has stopped."""
        prefix = f"bench-{self.run_id}-{database}-{name}"
        server = start_server(database_url, self.args.redis, prefix, cache, pool_max or self.pool_max,
                              overrides=overrides)
        try:
            yield server
        finally:
            stop_server(server)
            forget_prefix(self.args.redis, prefix)

    def wanted(self, name: str, cache: str, connections: int) -> bool:
        """Every scenario at the highest count, the lower counts only where a target compares them; with
        --targets-only, what issue 13's targets read of these runs only."""
        if self.args.targets_only:
            return cache == "on" and connections == targets.CONNECTIONS and name in ("ceiling_pk", *targets.CACHED)
        return connections == max(self.args.connections) or name in BOTH_COUNTS

    def save(self) -> None:
        if not self.args.targets_only:
            save_results(self)

    def run_size(self, size: int) -> None:
        database_url = asyncio.run(prepare_database(self.args.pg, size))
        database = db_name(size)
        facts = asyncio.run(data_facts(database_url))
        log(f"{database}: {facts.products:,} products ({facts.active:,} active), {len(facts.categories)} categories")
        if not self.args.targets_only:
            self.explain[size] = asyncio.run(explain_hot_queries(database_url, facts))
        targets.measure_bare(self, size, database)  # next to the cached GETs it is the ceiling of
        cursors: list[str] = []
        for cache in ("on",) if self.args.targets_only else ("on", "off"):
            try:
                with self.serving(database_url, database, cache, cache == "on") as server:
                    if not cursors:
                        cursors = deep_cursors(server, facts, 30 if self.args.quick else 100, self.args.seed)
                    etag = http_get(server.port, "/products")[1]["etag"]
                    requests_of = scenarios(facts, cursors, etag, self.args.seed)
                    for name, requests in requests_of.items():
                        counts = [c for c in self.args.connections if self.wanted(name, cache, c)]
                        for connections in counts:
                            self.measure(server, size, cache, database, name, requests, connections)
                        if counts:
                            self.samples[(size, cache, name)] = sample(server, requests)
                    if not self.args.targets_only:
                        if cache == "off":  # with the cache on, it is target 2's, on a fresh cache
                            self.measure(server, size, cache, database, "mixed", requests_of["mixed"],
                                         OPEN_LOOP_CONNECTIONS, rate=OPEN_LOOP_RATE)
                        self.measure_hey(server, size, cache, database, "/products")
                        self.rss[(size, cache)] = [w.memory_info().rss / 2**20 for w in workers(server)]
                        log(f"  RSS per worker: {', '.join(f'{r:.0f} MB' for r in self.rss[(size, cache)])}")
            finally:  # what was measured is kept, whatever happens next
                self.save()
        try:
            targets.measure(self, size, database_url, database, facts, requests_of["mixed"])
        finally:
            self.save()
        if size == self.args.sizes[0] and not self.args.no_profile and not self.args.targets_only:
            self.profile_first_page(database_url, database)


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--targets-only", action="store_true",
                        help="issue 13's targets only, their table printed; nothing written (benchmarks.targets)")
    args = parser.parse_args(argv)
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
        chart(bench, CHART)
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
    if args.targets_only:
        print(f"\nissue 13's targets, {args.duration:g} s after a {args.warmup:g} s warm-up each, "
              f"{bench.timing['minutes']:.0f} min:\n")
        print("\n".join(targets.table(bench.results, args.sizes)))
        return
    save_results(bench)
    Path(args.output).write_text(report(bench))
    chart(bench, CHART)
    log(f"wrote {args.output}, {CHART}, {RESULTS}")


if __name__ == "__main__":
    main()
