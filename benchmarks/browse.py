"""Browse benchmark: first vs deep cursor page of every sort, and the bytes `include` saves.

    python -m benchmarks.browse --database-url postgres://postgres@127.0.0.1:5432/bench --products 1000000

Creates and seeds the catalog when the database is empty (`catalog migrate` + `catalog seed`), then
times an uncached GET /products's database work (the page's keys, then its products with
`select_related` and `prefetch_related`, as when no fragment is cached) for the first page and for a page past 90% of the order, interleaved, and reports medians
and the deep/first ratio. Numbers are for comparing within one run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import replace

import asyncpg
import orjson
from tortoise import Tortoise

from catalog import queries
from catalog.cli import apply_migrations
from catalog.domain import PARTS, SORTS, Keyset, Ordering, ProductFilter
from catalog.seed import seed
from catalog.serialize import product_dict, product_page
from config.database import connect_arguments
from config.settings import Settings
from config.tortoise import tortoise_config

DEEP_FRACTION = 0.95
PAGE_SIZE = 20


async def prepare(url: str, products: int) -> None:
    await apply_migrations(url)
    connection = await asyncpg.connect(**connect_arguments(url))
    try:
        present = await connection.fetchval("SELECT count(*) FROM products")
    finally:
        await connection.close()
    if present < products:
        await seed(url, products - present)


async def deep_key(ordering: Ordering, filters: ProductFilter, active: int) -> Keyset:
    """The key of the row DEEP_FRACTION of the way through the order (found once, outside the timing)."""
    columns = ["id"] if ordering.column == "id" else [ordering.column, "id"]
    direction = "DESC" if ordering.sort.startswith("-") else "ASC"
    _, rows = await Tortoise.get_connection("default").execute_query(
        f"SELECT {', '.join(columns)} FROM products WHERE is_active ORDER BY "
        f"{', '.join(f'{c} {direction}' for c in columns)} OFFSET $1 LIMIT 1",
        [int(active * DEEP_FRACTION)],
    )
    row = rows[0]
    return Keyset(None if ordering.column == "id" else row[ordering.column], row["id"])


async def products_page(
    filters: ProductFilter, ordering: Ordering, page_size: int, after: Keyset | None = None,
    parts: frozenset[str] = PARTS,
) -> list[dict]:
    """A page's products as the contract's dicts, read as the service reads a page with no fragment cached."""
    keys = (await queries.page_keys(filters, ordering, page_size, after=after)).keys
    loaded = await queries.load_products([key["id"] for key in keys], parts)
    stats = loaded.review_stats or {}
    return [product_dict(loaded.products[key["id"]], parts, stats.get(key["id"]))
            for key in keys if key["id"] in loaded.products]


async def timed(call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def run(url: str, rounds: int) -> list[str]:
    await Tortoise.init(config=tortoise_config(url, replace(Settings(), db_pool_min=1, db_pool_max=2)))
    try:
        filters = ProductFilter()
        _, rows = await Tortoise.get_connection("default").execute_query(
            "SELECT count(*) AS n FROM products WHERE is_active"
        )
        active = rows[0]["n"]
        lines = [
            f"Active products: {active:,}. Medians of {rounds} interleaved runs, page_size {PAGE_SIZE}.",
            "",
            "| sort | first page ms | deep page ms (past 90%) | deep / first |",
            "| --- | ---: | ---: | ---: |",
        ]
        for sort in SORTS:
            ordering = Ordering(sort)
            key = await deep_key(ordering, filters, active)
            first, deep = [], []
            for _ in range(rounds):
                first.append(await timed(lambda: products_page(filters, ordering, PAGE_SIZE)))
                deep.append(await timed(lambda: products_page(filters, ordering, PAGE_SIZE, after=key)))
            first_ms, deep_ms = statistics.median(first), statistics.median(deep)
            lines.append(f"| {sort} | {first_ms:.2f} | {deep_ms:.2f} | {deep_ms / first_ms:.2f} |")

        full = await products_page(filters, Ordering(), PAGE_SIZE)
        lean_parts = frozenset({"category", "inventory"})
        lean = await products_page(filters, Ordering(), PAGE_SIZE, parts=lean_parts)
        full_bytes = len(orjson.dumps(product_page(full, total=active, page_number=1, page_size=PAGE_SIZE)))
        lean_bytes = len(orjson.dumps(product_page(lean, total=active, page_number=1, page_size=PAGE_SIZE)))
        lines += [
            "",
            "| 20-product page | bytes |",
            "| --- | ---: |",
            f"| default (reviews embedded) | {full_bytes:,} |",
            f"| include=category,inventory | {lean_bytes:,} ({100 * lean_bytes / full_bytes:.0f}%) |",
        ]
        return lines
    finally:
        await Tortoise.close_connections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=51)
    args = parser.parse_args()
    asyncio.run(prepare(args.database_url, args.products))
    print("\n".join(asyncio.run(run(args.database_url, args.rounds))))


if __name__ == "__main__":
    main()
