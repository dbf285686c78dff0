"""EXPLAIN of every hot query on a seeded catalog of 100,000 products: index scans, no sequential scan.

The statements are the ones ``catalog.queries`` really sends (captured from Tortoise's statement log),
explained with their real parameters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from tortoise.context import TortoiseContext

from catalog import queries
from catalog.queries import ProductFilter
from catalog.seed import seed
from config.settings import Settings
from config.tortoise import tortoise_config
from tests.conftest import (
    StatementCapture,
    connection_kwargs,
    create_database,
    drop_database,
)

PRODUCTS = 100_000
BIG_TABLES = {"products", "reviews", "inventory"}


@pytest.fixture(scope="module")
def big_database_url(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url, "catalog_plans")
    asyncio.run(seed(url, PRODUCTS, progress=False))
    yield url
    drop_database(postgres_server_url, url)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain_statements(
    url: str, call: Callable[[], Awaitable[Any]]
) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Run ``call`` against ``url`` and EXPLAIN each statement it sent: (sql, [(node type, relation)]).

    The EXPLAIN goes through the same Tortoise connection, so it sees the service's session settings.
    """
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url, replace(Settings(), db_pool_min=1, db_pool_max=2)))
        with StatementCapture() as capture:
            await call()
        connection = context.connections.get("default")
        explained = []
        for sql, values in capture.statements:
            _, rows = await connection.execute_query(f"EXPLAIN (FORMAT JSON) {sql}", values)
            plan = json.loads(rows[0][0])[0]["Plan"]
            explained.append((sql, [(node["Node Type"], node.get("Relation Name")) for node in plan_nodes(plan)]))
        return explained


def hot_queries(url: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    async def busiest_category() -> int:
        connection = await asyncpg.connect(**connection_kwargs(url))
        try:
            return await connection.fetchval(
                "SELECT category_id FROM products WHERE category_id IS NOT NULL"
                " GROUP BY category_id ORDER BY count(*) DESC LIMIT 1"
            )
        finally:
            await connection.close()

    category = asyncio.run(busiest_category())
    deep = int(PRODUCTS * 0.95)
    return {
        "first page": lambda: queries.products_page(ProductFilter(), 20),
        "first page of a category": lambda: queries.products_page(ProductFilter(category_id=category), 20),
        "inactive page": lambda: queries.products_page(ProductFilter(is_active=False), 20),
        "deep cursor page": lambda: queries.products_page(ProductFilter(), 20, after_id=deep),
        "deep page=N": lambda: queries.products_page(ProductFilter(), 20, skip=int(PRODUCTS * 0.85)),
        "deep page=N of a category": lambda: queries.products_page(ProductFilter(category_id=category), 20, skip=2000),
        "count": lambda: queries.count_products(ProductFilter()),
        "count of a category": lambda: queries.count_products(ProductFilter(category_id=category)),
        "product by id": lambda: queries.get_product(deep),
        "batch of 100": lambda: queries.products_by_ids(range(deep, deep + 100)),
        "category products": lambda: queries.category_products(category),
        "low stock": lambda: queries.low_stock_products(10),
    }


def test_hot_queries_use_indexes_only(big_database_url: str) -> None:
    report = []
    for name, call in hot_queries(big_database_url).items():
        statements = asyncio.run(explain_statements(big_database_url, call))
        assert statements, name
        for sql, nodes in statements:
            report.append(f"{name}: " + ", ".join(sorted({f"{n} on {r}" if r else n for n, r in nodes})))
            sequential = [relation for node, relation in nodes if node == "Seq Scan" and relation in BIG_TABLES]
            assert not sequential, f"{name}: sequential scan of {sequential} in {sql}"
            scans = {node for node, relation in nodes if relation in BIG_TABLES}
            assert scans <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, (name, scans)
    print("\n".join(report))
