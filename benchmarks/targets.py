"""Issue 13's targets: what measuring them takes beyond ``benchmarks.run``'s scenarios, and their verdicts.

    .venv/bin/python -m benchmarks.targets [--products 100000] [--duration 10] [--warmup 4]

All at 2 workers as the Procfile starts them, 500 connections, every ratio within one run:

1. cached GETs (the first list page, category pages, products and batches of 20 from sets of random ids,
   304s of the first page), closed loop after a warm-up of the same: at least 50% of the requests/s of
   ``benchmarks.bare`` (the same Sanic and workers, no middleware, no logging, a fixed body the size of a
   20-product page), P95 under 200 ms, no timeouts;
2. ``benchmarks.load``'s mixed workload (60% list pages, 25% products, 10% batches, 5% PUTs of a price) sent
   at 1,000 requests/s whatever the answers' pace, on a fresh cache warmed up by the same load: P95 under
   200 ms, no timeouts, at least 80% response cache hits as the service counts them (``<prefix>:stats:r``);
3. misses, each request a product, ``page=N`` list page or batch of 20 that no request asked before, each
   kind on a fresh cache: at least 30%, 15% and 10% of the requests/s of one primary-key SELECT through the
   same app (``/_ceiling/pk``), no timeouts;
4. the access log line's cost: the cached first page with LOG_LEVEL=INFO (as shipped: a line per request)
   and LOG_LEVEL=WARNING (lines of slow requests only), two servers loaded in turn, on, off, on, off:
   1 - off/on of the servers' mean CPU a request, the share of a cached hit's time the line takes, under
   10% (the same from requests/s is shown beside it: wrk on the same cores moves it by several points);
5. read-your-writes: covered by tests (tests/test_consistency.py across workers, tests/cache/test_local.py and
   test_cache_workers.py for the workers' local copies), not measured here.

Errors (socket errors, answers other than 2xx/3xx) count against a target as timeouts do.

``python -m benchmarks.run`` measures these at every size beside its other scenarios and reports them in
BENCHMARKS.md (the cached GETs and the primary-key ceiling are its cache-on server's runs at 500
connections); ``python -m benchmarks.targets`` is the quick check: only these, at one size, the table printed.
"""

from __future__ import annotations

import argparse
import statistics
from typing import TYPE_CHECKING

from benchmarks.data import PAGE_SIZE, DataFacts
from benchmarks.fragments import STRIDE, WALK
from benchmarks.load import (
    LUA_DONE,
    OPEN_LOOP_CONNECTIONS,
    OPEN_LOOP_RATE,
    Req,
    Result,
    find,
)
from benchmarks.servers import start_bare, stop_server

if TYPE_CHECKING:
    from benchmarks.run import Bench

CONNECTIONS = OPEN_LOOP_CONNECTIONS  # 500
CACHED = {"first_page": "first list page", "category_page": "category pages", "product": "product by id",
          "batch20": "batch of 20", "conditional_304": "conditional GET (304)"}
BARE_SHARE = 0.5
P95_MS = 200.0
HIT_RATIO = 0.8
MISSES = {"miss_product": ("product by id", 0.30), "miss_page_n": ("20-product list page (page=N)", 0.15),
          "miss_batch20": ("batch of 20", 0.10)}
LOG_LEVELS = {"first_page_log_on": "INFO", "first_page_log_off": "WARNING"}
LOG_ROUNDS = 2
LOG_COST = 0.10
READ_YOUR_WRITES = ("tests/test_consistency.py::test_every_write_shows_on_the_next_read_on_either_worker`, "
                    "`tests/cache/test_local.py`, `tests/cache/test_cache_workers.py::"
                    "test_every_write_reaches_the_local_copies_of_both_workers")

# Each request of a miss scenario asks what no request asked before (benchmarks.fragments' walk): here 20
# ids that no other batch holds.
BATCH_WALK = STRIDE + """
function request()
  local first = step() * 20 + 1
  local ids = {{}}
  for i = 0, 19 do ids[#ids + 1] = tostring(first + i) end
  return wrk.format("GET", "/products/batch?ids=" .. table.concat(ids, ","))
end
"""


# ------------------------------------------------------------------------------------------ measuring


def measure_bare(bench: Bench, size: int, database: str) -> None:
    """Target 1's ceiling: ``benchmarks.bare`` at 500 connections."""
    server = start_bare()
    try:
        bench.measure(server, size, "-", database, "ceiling_bare", [Req("/")], CONNECTIONS)
    finally:
        stop_server(server)


def measure_mixed(bench: Bench, size: int, database_url: str, database: str, mixed: list[Req]) -> None:
    """Target 2: the mixed workload as an open loop, on a fresh cache that only its warm-up filled."""
    with bench.serving(database_url, database, "mixed") as server:
        bench.measure(server, size, "on", database, "mixed", mixed, OPEN_LOOP_CONNECTIONS, rate=OPEN_LOOP_RATE)


def measure_misses(bench: Bench, size: int, database_url: str, database: str, facts: DataFacts) -> None:
    """Target 3: each kind of miss walked on a fresh cache, so that none finds what another put there (a
    product walk's fragments in a batch); the warm-up opens the pools with PK SELECTs and reads none of it."""
    pages = facts.active // PAGE_SIZE - 1
    walks = {"miss_product": WALK.format(path="/products/%d", n=facts.max_id),
             "miss_page_n": WALK.format(path="/products?page=%d", n=pages),
             "miss_batch20": BATCH_WALK.format(n=facts.max_id // 20 - 1)}
    for name, walk in walks.items():
        with bench.serving(database_url, database, name) as server:
            bench.measure(server, size, "on", database, name, walk + LUA_DONE, CONNECTIONS,
                          warmup=[Req("/_ceiling/pk")])


def measure_log_line(bench: Bench, size: int, database_url: str, database: str) -> None:
    """Target 4: two servers alike but for LOG_LEVEL, up at once and loaded in turn; each has half the pool,
    as both hold theirs at once (a cached page asks the database nothing)."""
    (on, on_level), (off, off_level) = LOG_LEVELS.items()
    pool_max = max(1, bench.pool_max // 2)
    with bench.serving(database_url, database, "log-on", pool_max=pool_max, overrides={"LOG_LEVEL": on_level}) as a, \
            bench.serving(database_url, database, "log-off", pool_max=pool_max, overrides={"LOG_LEVEL": off_level}) as b:
        for turn in range(LOG_ROUNDS):
            for name, server in ((on, a), (off, b)):
                bench.measure(server, size, "on", database, name, [Req("/products")], CONNECTIONS, warmup=turn == 0)


def measure(bench: Bench, size: int, database_url: str, database: str, facts: DataFacts, mixed: list[Req]) -> None:
    """Targets 2 to 4 at ``size``; target 1's ceiling is measured before the cache-on server's runs."""
    measure_mixed(bench, size, database_url, database, mixed)
    measure_misses(bench, size, database_url, database, facts)
    measure_log_line(bench, size, database_url, database)


# ------------------------------------------------------------------------------------------- verdicts


def failures(result: Result) -> str:
    if not result.requests:  # its "0 timeouts" would say nothing then
        return "no request answered within the run"
    return f"{result.timeouts} timeouts" + (f", {result.errors} errors" if result.errors else "")


def clean(result: Result) -> bool:
    return result.requests > 0 and result.timeouts == 0 and result.errors == 0


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.0%}"


def rows(results: list[Result], size: int) -> list[tuple[str, str | None, bool]]:
    """Each target at ``size``: what it asks, the figure measured (None: not measured) and whether it is met."""
    out: list[tuple[str, str | None, bool]] = []
    bare, pk = find(results, size, "-", "ceiling_bare"), find(results, size, "on", "ceiling_pk")
    for name, label in CACHED.items():
        target = (f"1. cached {label}: >= {BARE_SHARE:.0%} of the bare ceiling's req/s, P95 < {P95_MS:.0f} ms, "
                  "0 timeouts")
        got = find(results, size, "on", name)
        if got is None or bare is None:
            out.append((target, None, False))
            continue
        share = got.rps / bare.rps
        out.append((target, f"{share:.0%} ({got.rps:,.0f} / {bare.rps:,.0f} req/s), P95 {got.p95_ms:.1f} ms, "
                    f"{failures(got)}", share >= BARE_SHARE and got.p95_ms < P95_MS and clean(got)))
    mixed = find(results, size, "on", "mixed", OPEN_LOOP_CONNECTIONS, "open")
    target = (f"2. mixed workload, open loop at {OPEN_LOOP_RATE:,} req/s over {OPEN_LOOP_CONNECTIONS} connections: "
              f"P95 < {P95_MS:.0f} ms, 0 timeouts, response cache hits >= {HIT_RATIO:.0%}")
    out.append((target, None, False) if mixed is None else (
        target, f"P95 {mixed.p95_ms:.1f} ms, {failures(mixed)}, hits {percent(mixed.hits)} ({mixed.rps:,.0f} req/s "
        "answered)", mixed.p95_ms < P95_MS and clean(mixed) and (mixed.hits or 0) >= HIT_RATIO))
    for name, (label, share) in MISSES.items():
        target = f"3. miss, {label}: >= {share:.0%} of the primary-key ceiling's req/s, 0 timeouts"
        got = find(results, size, "on", name)
        if got is None or pk is None:
            out.append((target, None, False))
            continue
        out.append((target, f"{got.rps / pk.rps:.0%} ({got.rps:,.0f} / {pk.rps:,.0f} req/s), P95 {got.p95_ms:.1f} ms, "
                    f"{failures(got)}, hits {percent(got.hits)} / {percent(got.fragment_hits)} (responses / fragments)",
                    got.rps >= share * pk.rps and clean(got)))
    out.append(log_line(results, size))
    return out


def log_line(results: list[Result], size: int) -> tuple[str, str | None, bool]:
    """Target 4, as the server's CPU a request (cores / req/s): cost = 1 - off / on, means of each level's runs;
    beside it the same from requests/s (1 - on / off), which turn-to-turn noise in the load moves as much."""
    target = (f"4. the access log line's cost, cached first page: 1 - server CPU a request off / on (LOG_LEVEL "
              f"{' / '.join(LOG_LEVELS.values())}, {LOG_ROUNDS} turns each, means) < {LOG_COST:.0%}")
    on, off = ([r for r in results if r.size == size and r.scenario == name] for name in LOG_LEVELS)
    if not on or not off:
        return target, None, False

    def cpu_us(result: Result) -> float:
        return 1e6 * result.cpu.get("server", 0.0) / max(result.rps, 1.0)

    cpu_on, cpu_off = statistics.mean(map(cpu_us, on)), statistics.mean(map(cpu_us, off))
    cost = 1 - cpu_off / cpu_on
    mean_on, mean_off = statistics.mean(r.rps for r in on), statistics.mean(r.rps for r in off)
    turns = ", ".join(f"{1 - a.rps / b.rps:.1%}" for a, b in zip(on, off))
    figure = (f"{cost:.1%} (server CPU {cpu_on:.0f} / {cpu_off:.0f} us a request on / off); by requests/s "
              f"{1 - mean_on / mean_off:.1%} (on {' / '.join(f'{r.rps:,.0f}' for r in on)} req/s, off "
              f"{' / '.join(f'{r.rps:,.0f}' for r in off)}; each turn {turns})")
    if not all(clean(r) for r in on + off):
        figure += "; " + ", ".join(f"{level} {sum(r.timeouts for r in runs)} timeouts, {sum(r.errors for r in runs)} errors"
                                   for level, runs in (("on", on), ("off", off)))
    return target, figure, cost < LOG_COST


def table(results: list[Result], sizes: list[int]) -> list[str]:
    """The targets, a row each, with the figure and the verdict at each size."""
    by_size = {size: rows(results, size) for size in sizes}
    out = ["| target | " + " | ".join(f"{size:,} products" for size in sizes) + " |",
           "| --- |" + " --- |" * len(sizes)]
    for index, (target, _, _) in enumerate(by_size[sizes[0]]):
        cells = []
        for size in sizes:
            _, figure, ok = by_size[size][index]
            cells.append("not measured" if figure is None else f"{figure}: {'met' if ok else '**not met**'}")
        out.append(f"| {target} | " + " | ".join(cells) + " |")
    return out + ["", f"5. Read-your-writes is covered by the tests (`{READ_YOUR_WRITES}`), not by this benchmark."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    from benchmarks.run import main as run  # here: benchmarks.run imports this module

    run(["--targets-only", "--sizes", str(args.products), "--duration", str(args.duration), "--warmup",
         str(args.warmup), "--pg", args.pg, "--redis", args.redis])


if __name__ == "__main__":
    main()
