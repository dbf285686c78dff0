"""catalog seed: deterministic, appending, and the API can insert after it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from catalog.seed import seed
from config.database import connect_arguments
from tests.conftest import create_database, drop_database

TABLE_DIGEST = "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {table} t"


@pytest.fixture
def two_databases(postgres_server_url: str) -> Iterator[tuple[str, str]]:
    urls = (create_database(postgres_server_url, "catalog_seed"), create_database(postgres_server_url, "catalog_seed"))
    yield urls
    for url in urls:
        drop_database(postgres_server_url, url)


async def digests(url: str) -> dict[str, str]:
    connection = await asyncpg.connect(**connect_arguments(url))
    try:
        return {
            table: await connection.fetchval(TABLE_DIGEST.format(table=table))
            for table in ("categories", "products", "reviews", "inventory")
        }
    finally:
        await connection.close()


def test_same_arguments_same_data_and_appending_keeps_sequences_right(two_databases: tuple[str, str]) -> None:
    first, second = two_databases
    summary = asyncio.run(seed(first, 500, progress=False))
    asyncio.run(seed(second, 500, progress=False, batch_size=37))
    assert summary.products == 500 and summary.categories == 200
    assert 0.9 * 500 <= summary.inventory < 500 and summary.reviews > 500
    assert asyncio.run(digests(first)) == asyncio.run(digests(second))

    asyncio.run(seed(first, 100, progress=False))

    async def facts() -> tuple[int, int, int]:
        connection = await asyncpg.connect(**connect_arguments(first))
        try:
            count = await connection.fetchval("SELECT count(*) FROM products")
            new_id = await connection.fetchval("INSERT INTO products (name, price) VALUES ('x', 1) RETURNING id")
            orphans = await connection.fetchval(
                "SELECT count(*) FROM products p LEFT JOIN categories c ON c.id = p.category_id"
                " WHERE p.category_id IS NOT NULL AND c.id IS NULL"
            )
            return count, new_id, orphans
        finally:
            await connection.close()

    assert asyncio.run(facts()) == (600, 601, 0)
