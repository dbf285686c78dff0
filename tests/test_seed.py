"""catalog seed: deterministic, appending, and the API can insert after it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from catalog.seed import seed
from tests.conftest import create_database, drop_database
from tests.helpers import Sql

TABLE_DIGEST = "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {table} t"


@pytest.fixture
def two_databases(postgres_server_url: str) -> Iterator[tuple[str, str]]:
    urls = (create_database(postgres_server_url, "catalog_seed"), create_database(postgres_server_url, "catalog_seed"))
    yield urls
    for url in urls:
        drop_database(postgres_server_url, url)


def digests(url: str) -> dict[str, str]:
    with Sql(url) as sql:
        return {
            table: sql.fetchval(TABLE_DIGEST.format(table=table))
            for table in ("categories", "products", "reviews", "inventory")
        }


def test_same_arguments_same_data_and_appending_keeps_sequences_right(two_databases: tuple[str, str]) -> None:
    first, second = two_databases
    summary = asyncio.run(seed(first, 500, progress=False))
    asyncio.run(seed(second, 500, progress=False, batch_size=37))
    assert summary.products == 500 and summary.categories == 200
    assert 0.9 * 500 <= summary.inventory < 500 and summary.reviews > 500
    assert digests(first) == digests(second)

    asyncio.run(seed(first, 100, progress=False))

    with Sql(first) as sql:
        count = sql.fetchval("SELECT count(*) FROM products")
        new_id = sql.fetchval("INSERT INTO products (name, price) VALUES ('x', 1) RETURNING id")
        orphans = sql.fetchval(
            "SELECT count(*) FROM products p LEFT JOIN categories c ON c.id = p.category_id"
            " WHERE p.category_id IS NOT NULL AND c.id IS NULL"
        )
    assert (count, new_id, orphans) == (600, 601, 0)
