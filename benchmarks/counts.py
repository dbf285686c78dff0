"""What an exact `total` costs: the timings behind EXACT_COUNT_MAX_ROWS.

    python -m benchmarks.counts --database-url postgres://postgres@127.0.0.1:5432/bench_1m [--products 1000000]

With --products, migrates the database and seeds it up to that many products first. Then times, through
the service's own queries and session settings, for the active and the inactive list and for the
largest and a median category: the exact count (`queries.count_products`, the background recount), the
count capped at each candidate threshold (`queries.count_products_up_to`, what a request on a missing
count runs), and the planner's estimate alone (`products_estimate`, which that statement calls at its cap). Medians of --rounds runs after
one warm-up, in milliseconds; for comparing on one machine, not as absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from tortoise import Tortoise

from benchmarks.browse import prepare
from catalog import queries
from catalog.domain import ProductFilter
from config.settings import Settings
from config.tortoise import tortoise_config

CAPS = (50_000, 100_000, 200_000, 500_000)


async def median_ms(call: Callable[[], Awaitable[object]], rounds: int) -> float:
    await call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def estimate(filters: ProductFilter) -> int:
    _, rows = await Tortoise.get_connection("default").execute_query(
        "SELECT products_estimate($1, $2)", [filters.is_active, filters.category_id]
    )
    return rows[0][0]


async def lists() -> dict[str, ProductFilter]:
    _, rows = await Tortoise.get_connection("default").execute_query(
        "SELECT category_id FROM products WHERE is_active AND category_id IS NOT NULL"
        " GROUP BY category_id ORDER BY count(*) DESC"
    )
    by_size = [row["category_id"] for row in rows]
    return {
        "all active": ProductFilter(True),
        "all inactive": ProductFilter(False),
        "largest category": ProductFilter(True, by_size[0]),
        "median category": ProductFilter(True, by_size[len(by_size) // 2]),
    }


async def run(url: str, rounds: int) -> list[str]:
    await Tortoise.init(config=tortoise_config(url, replace(Settings(), db_pool_min=1, db_pool_max=2)))
    try:
        _, rows = await Tortoise.get_connection("default").execute_query("SELECT count(*) FROM products")
        lines = [
            f"{rows[0][0]:,} products; medians of {rounds} runs, ms.",
            "",
            "| list | rows | exact count | " + " | ".join(f"capped at {cap:,}" for cap in CAPS) + " | estimate |",
            "| --- | ---: | ---: | " + " | ".join("---:" for _ in CAPS) + " | ---: |",
        ]
        for name, filters in (await lists()).items():
            exact = await queries.count_products(filters)
            cells = [f"{exact:,}", f"{await median_ms(lambda: queries.count_products(filters), rounds):.2f}"]
            for cap in CAPS:
                cells.append(f"{await median_ms(lambda: queries.count_products_up_to(filters, cap + 1), rounds):.2f}")
            estimate_ms = await median_ms(lambda: estimate(filters), rounds)
            cells.append(f"{estimate_ms:.2f} ({await estimate(filters):,})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines
    finally:
        await Tortoise.close_connections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--products", type=int, help="migrate and seed up to this many products first")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    if args.products:
        asyncio.run(prepare(args.database_url, args.products))
    print("\n".join(asyncio.run(run(args.database_url, args.rounds))))


if __name__ == "__main__":
    main()
