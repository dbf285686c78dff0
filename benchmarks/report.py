"""The report of a run: BENCHMARKS.md (targets met or not, tables per size, the profile), the chart, and
results.json, which keeps the figures so that the report can be written again without measuring."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import targets
from benchmarks.load import (
    CPU_GROUPS,
    OPEN_LOOP_CONNECTIONS,
    OPEN_LOOP_RATE,
    WRK_THREADS,
    Result,
    Sample,
    find,
)
from benchmarks.servers import DEFAULT_POOL_MAX
from config.settings import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results.json"
CHART = PROJECT_ROOT / "benchmarks" / "chart.png"
LIST_SCENARIOS = ("first_page", "category_page", "deep_cursor", "deep_page_n")


@dataclass
class Figures:
    """What a run measured, as results.json keeps it."""

    args: argparse.Namespace
    results: list[Result] = field(default_factory=list)
    samples: dict[tuple[int, str, str], Sample] = field(default_factory=dict)
    rss: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    explain: dict[int, list[dict]] = field(default_factory=dict)
    profile: dict[str, object] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    timing: dict[str, object] = field(default_factory=dict)  # started, finished, minutes


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
CHART_SCENARIOS = tuple(SCENARIO_LABELS)
SCENARIO_LABELS.update({  # issue 13's targets' own runs (benchmarks.targets)
    "ceiling_bare": "bare Sanic ceiling (benchmarks/bare.py)",
    "miss_product": "miss: product never asked",
    "miss_page_n": "miss: page=N never asked",
    "miss_batch20": "miss: batch of 20 never asked",
    "first_page_log_on": "first list page, log line on (LOG_LEVEL=INFO)",
    "first_page_log_off": "first list page, log line off (LOG_LEVEL=WARNING)",
})


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


def earlier_targets(bench: Figures) -> list[tuple[str, str, bool | None]]:
    r, sizes = bench.results, bench.args.sizes
    rows: list[tuple[str, str, bool | None]] = []
    for size in sizes:
        tag = f"{size:,}"
        # Issue 13's targets say what the cached runs, the mixed workload with the cache on and the misses must
        # do (benchmarks.targets); the earlier targets on the same figures are left out.
        mixed = find(r, size, "off", "mixed", OPEN_LOOP_CONNECTIONS, "open")
        if mixed:
            rows.append((f"{tag}: open loop 500 conn ~1,000 req/s mixed (cache off): P95 < 200 ms, 0 errors, "
                         "0 timeouts", f"{mixed.rps:,.0f} req/s, P95 {mixed.p95_ms:.1f} ms, {mixed.errors} errors, "
                         f"{mixed.timeouts} timeouts", mixed.p95_ms < 200 and mixed.errors == 0 and mixed.timeouts == 0))
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


def report(bench: Figures) -> str:
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
        f"DB_POOL_MIN 2 as shipped, DB_POOL_MAX {getattr(args, 'pool_max', DEFAULT_POOL_MAX)}: the default 50 when "
        "2 x 50 fits under PostgreSQL's max_connections beside the harness's own connections, else the most that "
        "does), REDIS_URL set, a CACHE_PREFIX per run, once as shipped "
        "(cache on) and once with CACHE_RESPONSES=false (cache off; counts stay cached), both with "
        "BENCHMARK_ENDPOINTS=true for the ceilings, LOG_LEVEL=INFO as shipped (a line per request). Issue 13's "
        "targets start more servers at each size: `benchmarks/bare.py` just before the cache-on server, then a "
        "cache-on server on a fresh prefix for the mixed open loop, one for each kind of miss, and two at once "
        "for the log line's cost (LOG_LEVEL=INFO and WARNING, half the pool each). Ratios compare figures of "
        "this one run.",
        "",
        "## Targets",
        "",
        "### Issue 13",
        "",
        f"At {targets.CONNECTIONS} connections, 2 workers, against figures of this run: the cached GETs are the "
        "cache-on server's closed-loop runs after their warm-up, the bare ceiling is `benchmarks/bare.py` (the same "
        "Sanic and workers, no middleware, no logging, a fixed body of a page's size), the primary-key ceiling "
        "the cache-on server's `/_ceiling/pk`, the hit ratio the service's own count (`<prefix>:stats:r`) over "
        "the measured run; the misses ask, each request, a product, page or batch no request asked before. "
        "Errors (socket errors, answers other than 2xx/3xx) count against a target as timeouts do. "
        "See `benchmarks/targets.py`.",
        "",
        *targets.table(r, args.sizes),
        "",
        "### Earlier targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    for label, figure, ok in earlier_targets(bench):
        out.append(f"| {label} | {figure} | {verdict(ok) if ok is not None else 'n/a'} |")
    for size in args.sizes:
        out += ["", f"## {size:,} products", "",
                "Latency in ms. errors: connect/read/write errors + non-2xx/3xx responses; timeouts: no answer "
                "within 2 s. hits resp/frag: the response cache's and the product fragments' hit ratios the service "
                "counted over the measured run. SQL/req and cache: from the Server-Timing header of 6 sampled "
                "requests after the run. "
                "CPU: cores used on average during the measured run by server / PostgreSQL / Redis / load generator.",
                "",
                "| scenario | cache | loop | conn | req/s | P50 | P95 | P99 | max | errors | timeouts | hits resp/frag "
                "| SQL/req | cache (sampled) | bytes plain | bytes gzip | CPU srv/pg/redis/load |",
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: "
                "| ---: | --- |"]
        for x in [x for x in r if x.size == size]:
            s = bench.samples.get((size, x.cache, x.scenario))
            label = SCENARIO_LABELS[x.scenario] + (" (hey)" if x.tool == "hey" else "")
            hits = "" if x.hits is None and x.fragment_hits is None else \
                f"{targets.percent(x.hits)} / {targets.percent(x.fragment_hits)}"
            sampled = " | | | " if s is None else (
                f"{s.statements:.1f} | {s.cache} | {s.plain_bytes:,.0f} | "
                f"{'-' if s.gzip_bytes is None else f'{s.gzip_bytes:,.0f}'}")
            out.append(f"| {label} | {x.cache} | {x.loop} | {x.connections} | {x.rps:,.0f} | {x.p50_ms:.1f} | "
                       f"{x.p95_ms:.1f} | {x.p99_ms:.1f} | {x.max_ms:.0f} | {x.errors} | {x.timeouts} | {hits} | "
                       f"{sampled} | {fmt_cpu(x.cpu)} |")
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


def profile_report(bench: Figures) -> list[str]:
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


def chart(bench: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = bench.args.sizes
    scenarios = CHART_SCENARIOS
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


def load_results(bench: Figures) -> None:
    data = json.loads(RESULTS.read_text())
    bench.args.__dict__.update(data.get("args", {}))
    bench.results = [Result(**x) for x in data["results"]]
    bench.samples = {(int(k.split("/")[0]), *k.split("/")[1:]): Sample(**v) for k, v in data["samples"].items()}
    bench.rss = {(int(k.split("/")[0]), k.split("/")[1]): v for k, v in data["rss_mb"].items()}
    bench.explain = {int(k): v for k, v in data["explain"].items()}
    bench.profile = data["profile"]
    bench.commands = data.get("commands", [])
    bench.args.argv = data.get("argv")
    bench.timing = data.get("timing", {})


def save_results(bench: Figures) -> None:
    RESULTS.write_text(json.dumps({
        "args": {k: v for k, v in vars(bench.args).items() if k in ("sizes", "duration", "warmup", "connections", "pool_max")},
        "argv": sys.argv[1:], "commands": bench.commands,
        "results": [vars(x) for x in bench.results],
        "samples": {f"{k[0]}/{k[1]}/{k[2]}": vars(v) for k, v in bench.samples.items()},
        "rss_mb": {f"{k[0]}/{k[1]}": v for k, v in bench.rss.items()},
        "explain": bench.explain, "profile": bench.profile, "timing": bench.timing,
    }, indent=1, default=str))
