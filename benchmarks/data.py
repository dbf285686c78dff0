"""The benchmark databases: made and seeded once per size, described for the scenarios, EXPLAINed, and
watched between scenarios through one connection kept for the run."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import asyncpg

from benchmarks import log
from config.settings import PROJECT_ROOT

DB_NAMES = {100_000: "bench_100k", 1_000_000: "bench_1m"}
PAGE_SIZE = 20


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


async def explain_hot_queries(database_url: str, facts: DataFacts) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL Tortoise generates for the hot reads, in the service's
    session settings (random_page_cost, enable_mergejoin); median of 5 executions."""
    from dataclasses import replace

    from tortoise import Tortoise

    from catalog.domain import Keyset, Ordering, ProductFilter
    from catalog.models import Product, Review
    from catalog.queries import ANCHORS_SQL, KEY_FIELDS, with_relations
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
            # The statement that loads a page's products (category and inventory joined: select_related).
            return with_relations(queryset.order_by("id").limit(PAGE_SIZE + 1), reviews=False).sql(params_inline=True)

        first_page_ids = [p.id for p in await active.apply(Product.all()).order_by("id").limit(PAGE_SIZE)]
        statements = {
            "first page (products + category + inventory)": page(active.apply(Product.all())),
            "first page keys (ids and placement columns)": active.apply(Product.all()).order_by("id").limit(
                PAGE_SIZE + 1).values(*KEY_FIELDS).sql(params_inline=True),
            "first page reviews (prefetch_related: IN, 20 ids)": Review.filter(product_id__in=first_page_ids).order_by(
                "id").sql(params_inline=True),
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
            "product by id": with_relations(Product.filter(id=facts.max_id // 2), reviews=False).sql(params_inline=True),
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

