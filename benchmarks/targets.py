"""Issue 13's first two targets in one run: cached GETs against the bare Sanic ceiling, and the mixed
workload with writes as an open loop.

    .venv/bin/python -m benchmarks.targets [--products 100000] [--connections 500] [--duration 10]

Serves ``benchmarks.bare`` (the same Sanic and 2 workers, no middleware, no logging, a fixed body the size
of a 20-product page) and loads it with wrk; then the service as the Procfile starts it (response cache
on, LOG_LEVEL=INFO: the log line is part of what is measured), each scenario warmed up and then loaded:
the first list page, category pages, products and batches of 20 from sets of random ids, and 304s of the
first page. Prints requests/s, its share of the bare ceiling's, P95 and timeouts (wrk's 2 s), and whether
the target (at least 50% of the ceiling, P95 under 200 ms, no timeouts) is met. Then, on a fresh cache warmed up by
the same load, ``benchmarks.run``'s mixed workload (60% list pages, 25% products, 10% batches, 5% PUTs of a price) sent
at 1,000 requests/s over 500 connections whatever the answers' pace: P95, timeouts and the response
cache's hit ratio from its own counts (``<prefix>:stats:r``), against P95 under 200 ms, no timeouts and
80% hits. Last, target 3: products, list pages and batches of 20 that no request asked before, against
one primary-key SELECT through the same app (``/_ceiling/pk``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from pathlib import Path

from benchmarks import log
from benchmarks.data import PAGE_SIZE, DataFacts, data_facts, prepare_database
from benchmarks.fragments import STATIC, STRIDE, WALK, wrk
from benchmarks.load import (
    OPEN_LOOP_CONNECTIONS,
    OPEN_LOOP_RATE,
    WRK_THREADS,
    Req,
    deep_cursors,
    lua_script,
    run_wrk,
    scenarios,
)
from benchmarks.servers import (
    LOG_DIR,
    Server,
    forget_prefix,
    free_port,
    http_get,
    start_sanic,
    stop,
)

CACHED = ("first_page", "category_page", "product", "batch20", "conditional_304")


def load(server: Server, requests: list[Req], args: argparse.Namespace, name: str, rate: float = 0.0,
         connections: int | None = None, redis_url: str | None = None, prefix: str = "") -> dict:
    """The scenario's figures after a warm-up with the same load (which fills the cache); with ``redis_url``,
    also the response cache's hit ratio over the measured part (``hits``)."""
    script = LOG_DIR / f"targets-{name}.lua"
    script.write_text(lua_script(requests, rate / WRK_THREADS))
    run_wrk(server, script, connections or args.connections, args.warmup, latency=False)
    if redis_url is None:
        return run_wrk(server, script, connections or args.connections, args.duration)[0]
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(f"{prefix}:stats:r")
        summary, _ = run_wrk(server, script, connections or args.connections, args.duration)
        counted = {key.decode(): int(value) for key, value in client.hgetall(f"{prefix}:stats:r").items()}
    finally:
        client.close()
    summary["hits"] = counted["hits"] / counted["wanted"] if counted.get("wanted") else None
    return summary


def serve(app: str, env: dict[str, str], name: str) -> Server:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"targets-{name}.log"
    return Server(start_sanic({**env, "PORT": str(port)}, port, log_path, app=app), port, log_path)


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


def misses(env: dict[str, str], facts: DataFacts, args: argparse.Namespace) -> list[str]:
    """Target 3: never-asked products, list pages and batches against one primary-key SELECT (``/_ceiling/pk``)."""
    prefix = f"{env['CACHE_PREFIX']}_misses"
    service = serve("catalog.app:create_app", {**env, "CACHE_PREFIX": prefix, "BENCHMARK_ENDPOINTS": "true"}, "misses")
    pages = facts.active // PAGE_SIZE - 1
    cases = [("product by id", WALK.format(path="/products/%d", n=facts.max_id), 0.30),
             ("20-product list page (page=N)", WALK.format(path="/products?page=%d", n=pages), 0.15),
             ("batch of 20", BATCH_WALK.format(n=facts.max_id // 20 - 1), 0.10)]
    try:
        wrk(service.port, STATIC.format(path="/_ceiling/pk"), args.warmup, LOG_DIR, args.connections)
        requests, _, _ = wrk(service.port, STATIC.format(path="/_ceiling/pk"), args.duration, LOG_DIR, args.connections)
        pk_rps = requests / args.duration
        lines = [f"\nmisses, every request new, wrk -c {args.connections}: one primary-key SELECT (`/_ceiling/pk`) "
                 f"{pk_rps:,.0f} req/s\n", "| miss | req/s | of the PK ceiling | P95 ms | errors + timeouts | target |",
                 "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, script, share in cases:
            log(f"misses: {name}")
            requests, p95, errors = wrk(service.port, script, args.duration, LOG_DIR, args.connections)
            rps = requests / args.duration
            met = rps >= share * pk_rps and errors == 0
            lines.append(f"| {name} | {rps:,.0f} | {rps / pk_rps:.0%} (target {share:.0%}) | {p95:.1f} | {errors} |"
                         f" {'met' if met else 'NOT MET'} |")
        return lines
    finally:
        stop(service.process)
        forget_prefix(args.redis, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    database_url = asyncio.run(prepare_database(args.pg, args.products))
    facts = asyncio.run(data_facts(database_url))
    prefix = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": args.redis, "CACHE_PREFIX": prefix,
           "LOG_LEVEL": "INFO", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rows = []
    bare = serve("benchmarks.bare:create_app", env, "bare")
    try:
        ceiling = load(bare, [Req("/")], args, "bare")
    finally:
        stop(bare.process)
    ceiling_rps = ceiling["requests"] / (ceiling["duration_us"] / 1e6)
    service = serve("catalog.app:create_app", env, "service")
    try:
        etag = http_get(service.port, "/products")[1]["etag"]
        requests = scenarios(facts, deep_cursors(service, facts, 20, 1), etag, 1)
        for name in CACHED:
            log(f"{name}: {args.connections} connections")
            rows.append((name, load(service, requests[name], args, name)))
    finally:
        stop(service.process)
        forget_prefix(args.redis, prefix)
    mixed_prefix = f"{prefix}_mixed"
    service = serve("catalog.app:create_app", {**env, "CACHE_PREFIX": mixed_prefix}, "mixed")
    try:
        log(f"mixed: {OPEN_LOOP_RATE:,} requests/s over {OPEN_LOOP_CONNECTIONS} connections")
        mixed = load(service, requests["mixed"], args, "mixed", OPEN_LOOP_RATE, OPEN_LOOP_CONNECTIONS, args.redis,
                     mixed_prefix)
    finally:
        stop(service.process)
        forget_prefix(args.redis, mixed_prefix)
    print(f"\n{args.products:,} products, 2 workers each, wrk -c {args.connections}, {args.duration:g} s after a "
          f"{args.warmup:g} s warm-up; bare ceiling: {ceiling_rps:,.0f} req/s, P95 {ceiling['p95'] / 1000:.1f} ms, "
          f"{ceiling['timeout']} timeouts\n")
    print("| cached GET | req/s | of the ceiling | P95 ms | timeouts | errors | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, summary in rows:
        rps = summary["requests"] / (summary["duration_us"] / 1e6)
        errors = summary["connect"] + summary["read"] + summary["write"] + summary["status"]
        met = rps >= ceiling_rps / 2 and summary["p95"] < 200_000 and summary["timeout"] == 0
        print(f"| {name} | {rps:,.0f} | {rps / ceiling_rps:.0%} | {summary['p95'] / 1000:.1f} | {summary['timeout']}"
              f" | {errors} | {'met' if met else 'NOT MET'} |")
    rps = mixed["requests"] / (mixed["duration_us"] / 1e6)
    hits = mixed["hits"]
    met = mixed["p95"] < 200_000 and mixed["timeout"] == 0 and hits is not None and hits >= 0.8
    print(f"\nmixed workload, open loop at {OPEN_LOOP_RATE:,} requests/s over {OPEN_LOOP_CONNECTIONS} connections, "
          f"after a warm-up of the same: {rps:,.0f} req/s, P95 {mixed['p95'] / 1000:.1f} ms, {mixed['timeout']} timeouts, "
          f"response cache hits {'-' if hits is None else f'{hits:.0%}'}: {'met' if met else 'NOT MET'}")
    print("\n".join(misses(env, facts, args)))


if __name__ == "__main__":
    main()
