"""Fixtures of the cache tests that run a real 2-worker server: each module gets a database of its own, SQL
on it, and the catalog seeded there before its server starts.

test_cache and test_page_anchors run in process on the session's ``db`` instead (test_cache's ``catalog``
is its own, seeded on ``db``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import create_database, drop_database
from tests.helpers import Catalog, Sql, seed_catalog


@pytest.fixture(scope="module")
def database(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url, "catalog_cache_workers")
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="module")
def sql(database: str) -> Iterator[Sql]:
    connection = Sql(database)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def catalog(sql: Sql) -> Catalog:
    return seed_catalog(sql)
