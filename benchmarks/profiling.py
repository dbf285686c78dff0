"""Where an uncached first list page spends its time, on this checkout and on a baseline revision's tree."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.load import Req, cpu_delta, cpu_snapshot, lua_script, run_wrk, workers
from benchmarks.servers import LOG_DIR, Server
from config.settings import PROJECT_ROOT

PAGE_BREAKDOWN = Path(__file__).with_name("page_breakdown.py")


def profile_first_page(server: Server, database_url: str, database: str, args: argparse.Namespace,
                       tree: Path = PROJECT_ROOT) -> dict:
    """Where an uncached first list page spends its time, in the code of ``tree`` (served by ``server``).

    (1) wrk at 50 connections on /products: requests/s and the server's CPU milliseconds per request,
    while py-spy samples one worker (on-CPU only); its frames are grouped into SQL driver, ORM, serialisation,
    middleware, the rest of Sanic and the loop. (2) benchmarks/page_breakdown.py, run on ``tree``: medians
    of the page's SQL over raw asyncpg, the ORM read of the page, the serialisation and one HTTP request.
    """
    result: dict[str, object] = {}
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    worker = max(workers(server), key=lambda p: p.memory_info().rss)  # a Sanic worker, not a helper process
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
        [sys.executable, str(PAGE_BREAKDOWN), database_url, str(server.port)],
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
    ("response cache + counts (catalog.cache, redis client)", ("catalog/cache", "redis/")),
    ("middleware: ETag hash, gzip, timing, logging (catalog.http, logging)", ("catalog/http.py", "logging/",
                                                                             "catalog/representation.py",
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
