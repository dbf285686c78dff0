"""Medians, one request at a time, of the steps of an uncached first list page, for one source tree.

    PYTHONPATH=<tree> python benchmarks/page_breakdown.py DATABASE_URL PORT

Run by ``benchmarks/run.py`` once for this checkout and, with ``--profile-baseline REV``, once for an
older revision's tree, so both are measured the same way in one run. A page is read as the tree reads an
uncached one: ``catalog.queries.products_page`` (rows, before issue 12) or its keys then its products as
models (``page_keys`` and ``load_products``, with no fragment cached), serialised by that tree's
``catalog.serialize``. The statements of a page are captured from the Tortoise client while it runs, then
replayed over raw asyncpg: the difference between the two is what Tortoise adds (building the queries and
the objects of the rows). Prints one JSON object of milliseconds.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import statistics
import sys
import time
from dataclasses import replace

import asyncpg
import orjson
from tortoise import Tortoise

from catalog import queries, serialize
from config.settings import Settings
from config.tortoise import tortoise_config

PAGE_SIZE = 20
ROUNDS = 200

try:  # every revision has these, in one module or the other
    from catalog.domain import Ordering, ProductFilter
except ImportError:
    from catalog.queries import Ordering, ProductFilter


async def read_page(filters: ProductFilter, ordering: Ordering) -> object:
    if hasattr(queries, "products_page"):
        return await queries.products_page(filters, ordering, PAGE_SIZE)
    keys = (await queries.page_keys(filters, ordering, PAGE_SIZE)).keys
    loaded = await queries.load_products([key["id"] for key in keys])
    return [loaded.products[key["id"]] for key in keys if key["id"] in loaded.products]


def serialise_page(page: object) -> bytes:
    if isinstance(page, list):
        items = [serialize.product_dict(product) for product in page]
        return orjson.dumps(serialize.product_page(items, total=90_000, page_number=1, page_size=PAGE_SIZE))
    return orjson.dumps(serialize.product_page(page, total=90_000, page_number=1, page_size=PAGE_SIZE))


def http_get(port: int, path: str) -> tuple[float, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return time.perf_counter() - started, response.getheader("server-timing") or ""
    finally:
        connection.close()


async def breakdown(database_url: str, port: int) -> dict[str, float]:
    await Tortoise.init(config=tortoise_config(database_url, replace(Settings(), db_pool_min=1, db_pool_max=1)))
    try:
        client = Tortoise.get_connection("default")
        statements: list[tuple[str, list]] = []
        for method in ("execute_query", "execute_query_dict"):
            original = getattr(client, method)

            async def capture(query: str, values: list | None = None, _original=original):  # type: ignore[no-untyped-def]
                statements.append((query, list(values or [])))
                return await _original(query, values)

            setattr(client, method, capture)
        filters, ordering = ProductFilter(), Ordering()
        await read_page(filters, ordering)
        for method in ("execute_query", "execute_query_dict"):
            delattr(client, method)
        raw = await asyncpg.connect(database_url)
        await raw.execute("SET random_page_cost = 1.1; SET enable_mergejoin = off")
        timings: dict[str, list[float]] = {name: [] for name in
                                           ("sql", "orm", "serialise", "http", "server_total", "server_db")}
        for round_number in range(ROUNDS + 20):
            warm = round_number >= 20
            started = time.perf_counter()
            for query, values in statements:
                await raw.fetch(query, *values)
            sql = time.perf_counter() - started
            started = time.perf_counter()
            page = await read_page(filters, ordering)
            orm = time.perf_counter() - started
            started = time.perf_counter()
            serialise_page(page)
            serialise = time.perf_counter() - started
            whole, timing = await asyncio.to_thread(http_get, port, "/products")
            if not warm:
                continue
            timings["sql"].append(sql)
            timings["orm"].append(orm)
            timings["serialise"].append(serialise)
            timings["http"].append(whole)
            found = re.search(r"total;dur=([\d.]+), db;dur=([\d.]+)", timing)
            if found:
                timings["server_total"].append(float(found.group(1)) / 1000)
                timings["server_db"].append(float(found.group(2)) / 1000)
        await raw.close()
        result = {name: statistics.median(values) * 1000 for name, values in timings.items() if values}
        result["statements"] = len(statements)
        return result
    finally:
        await Tortoise.close_connections()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(breakdown(sys.argv[1], int(sys.argv[2])))))
