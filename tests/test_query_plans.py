"""EXPLAIN of every hot query on a seeded catalog of 100,000 products: index scans, no sequential scan.

The statements are the ones ``catalog.queries`` really sends (captured from Tortoise's statement log),
explained with their real parameters. On the same catalog, a cold server's totals are the counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from tortoise.context import TortoiseContext

from catalog import queries
from catalog.domain import SORTS, Keyset, Ordering, ProductFilter
from catalog.seed import seed
from config.settings import Settings
from config.tortoise import tortoise_config
from tests.conftest import (
    StatementCapture,
    create_database,
    drop_database,
)
from tests.helpers import Sql, fetch, running, server_env, server_timing

# 100,000 in the suite; PLAN_TEST_PRODUCTS=1000000 (with PLAN_TEST_DATABASE_URL naming a database seeded
# that large, e.g. by benchmarks/browse.py) checks the plans at a million.
PRODUCTS = int(os.environ.get("PLAN_TEST_PRODUCTS", "100000"))
BIG_TABLES = {"products", "reviews", "inventory"}


@pytest.fixture(scope="module")
def big_database_url(postgres_server_url: str) -> Iterator[str]:
    """A seeded catalog: made for the run, or PLAN_TEST_DATABASE_URL's (already migrated and seeded)."""
    given = os.environ.get("PLAN_TEST_DATABASE_URL")
    if given:
        yield given
        return
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


def deep_keys(sql: Sql) -> dict[str, Keyset]:
    """For each sort, the key of the active product 95% of the way through that order."""
    active = sql.fetchval("SELECT count(*) FROM products WHERE is_active")
    keys = {}
    for sort in SORTS:
        ordering = Ordering(sort)
        direction = "DESC" if sort.startswith("-") else "ASC"
        columns = "id" if ordering.column == "id" else f"{ordering.column}, id"
        row = sql.fetch(
            f"SELECT {columns} FROM products WHERE is_active"
            f" ORDER BY {', '.join(f'{c} {direction}' for c in columns.split(', '))} OFFSET $1 LIMIT 1",
            int(active * 0.95),
        )[0]
        keys[sort] = Keyset(None if ordering.column == "id" else row[0], row["id"])
    return keys


def hot_queries(url: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    with Sql(url) as sql:
        category = sql.fetchval(
            "SELECT category_id FROM products WHERE category_id IS NOT NULL"
            " GROUP BY category_id ORDER BY count(*) DESC LIMIT 1"
        )
        deep = deep_keys(sql)
    active, in_category = ProductFilter(), ProductFilter(category_id=category)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    for sort in SORTS:
        ordering = Ordering(sort)
        calls[f"first page, sort={sort}"] = partial(queries.page_keys, active, ordering, 20)
        calls[f"first page of a category, sort={sort}"] = partial(queries.page_keys, in_category, ordering, 20)
        calls[f"deep cursor page, sort={sort}"] = partial(queries.page_keys, active, ordering, 20, after=deep[sort])
        calls[f"page backwards, sort={sort}"] = partial(queries.page_keys, active, ordering, 20, before=deep[sort])
        calls[f"deep page=N, sort={sort}"] = partial(
            queries.page_keys, active, ordering, 20, skip=int(PRODUCTS * 0.85)
        )
    lean = frozenset({"category", "inventory"})
    cap = Settings().exact_count_max_rows + 1
    searching = replace(active, search="stainless:* & kettle:*")
    calls.update({
        "inactive page": partial(queries.page_keys, ProductFilter(is_active=False), Ordering(), 20),
        "page products (joins, reviews)": partial(queries.load_products, range(deep["id"].id, deep["id"].id + 20)),
        "lean page products (joins, review stats)": partial(
            queries.load_products, range(deep["id"].id, deep["id"].id + 20), lean
        ),
        "price range, sort=-price": partial(
            queries.page_keys, replace(active, min_price=100, max_price=200), Ordering("-price"), 20
        ),
        "name search, sort=name": partial(queries.page_keys, searching, Ordering("name"), 20),
        "name search, sort=id": partial(queries.page_keys, searching, Ordering(), 20),
        "count": partial(queries.count_products, active),
        "count of a category": partial(queries.count_products, in_category),
        "capped count": partial(queries.count_products_up_to, active, cap),
        "capped count of a category": partial(queries.count_products_up_to, in_category, cap),
        "count of a name search": partial(queries.count_products, searching),
        "product by id": partial(queries.get_product, deep["id"].id),
        "batch of 100": partial(queries.load_products, range(deep["id"].id, deep["id"].id + 100)),
        "category products": partial(queries.category_products, category),
        "low stock": partial(queries.low_stock_products, 10),
        "reviews page": partial(queries.reviews_page, deep["id"].id, 20),
        "page anchors": partial(queries.page_anchors, active, 1000),
        "page anchors of a category": partial(queries.page_anchors, in_category, 1000),
        "deep page=N from an anchor": partial(
            queries.page_keys, active, Ordering(), 20, after=deep["id"], skip=500
        ),
    })
    return calls


def test_hot_queries_use_indexes_only(big_database_url: str) -> None:
    report = []
    for name, call in hot_queries(big_database_url).items():
        statements = asyncio.run(explain_statements(big_database_url, call))
        assert statements, name
        for sql, nodes in statements:
            report.append(f"{name}: " + ", ".join(sorted({f"{n} on {r}" if r else n for n, r in nodes})))
            sequential = [relation for node, relation in nodes if node == "Seq Scan" and relation in BIG_TABLES]
            assert not sequential, f"{name}: sequential scan of {sequential} in {sql}"
            assert "Merge Join" not in {node for node, _ in nodes}, f"{name}: merge join in {sql}"
            scans = {node for node, relation in nodes if relation in BIG_TABLES}
            assert scans <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, (name, scans)
    print("\n".join(report))


def test_the_first_total_of_every_list_on_a_cold_server_is_its_count(
    big_database_url: str, redis_url: str, tmp_path
) -> None:
    """Every category, both is_active values, and the unfiltered list, with the thresholds at their defaults:
    the count, or (only for a list beyond EXACT_COUNT_MAX_ROWS, as at a million products) a marked estimate."""

    # Each category (NULL: all of them) with each is_active value, and its products' count.
    rows = fetch(
        big_database_url,
        "SELECT c.id AS category_id, a.is_active, count(p.id) AS n"
        " FROM (SELECT id FROM categories UNION ALL SELECT NULL) c"
        " CROSS JOIN (VALUES (true), (false)) a(is_active)"
        " LEFT JOIN products p ON p.is_active = a.is_active AND (c.id IS NULL OR p.category_id = c.id)"
        " GROUP BY 1, 2"
    )
    expected = {}
    for row in rows:
        category = "" if row["category_id"] is None else f"&category_id={row['category_id']}"
        expected[f"/products?page_size=1&is_active={str(row['is_active']).lower()}{category}"] = row["n"]
    limit = Settings().exact_count_max_rows
    env = server_env(big_database_url, redis_url, CACHE_PREFIX=f"catalog_plans_{uuid.uuid4().hex[:10]}")
    with running(env, tmp_path / "server.log") as server:
        for url, count in expected.items():
            response = server.get(url)
            assert response.status_code == 200 and server_timing(response)[1] == "miss", url
            if count > limit:
                assert response.headers["x-total-count-estimated"] == "true", url
            else:
                assert (response.json()["total"], response.headers.get("x-total-count-estimated")) == (count, None), url
