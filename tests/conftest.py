"""The test suite owns its database: a fresh one per run, migrated by aerich exactly as production is.

The server is the machine's PostgreSQL when TEST_DATABASE_URL or DATABASE_URL names one, the embedded
PostgreSQL otherwise. PostgreSQL being unreachable fails the run; nothing is skipped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sanic_testing.reusable import ReusableClient

from benchmarks.servers import free_port
from catalog.app import create_app
from catalog.cache import forget_cached
from config.settings import PROJECT_ROOT, Settings
from tests.helpers import Sql
from tests.servers import RedisServer

TEST_POOL_MAX = 10


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        return configured
    from catalog.embedded import embedded_server_url

    return embedded_server_url(PROJECT_ROOT / "var" / "pgdata", "postgres")


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "catalog", "migrate"], env={**os.environ, "DATABASE_URL": url}, check=True,
        capture_output=True,
    )


def run_on_server(base_url: str, statement: str) -> None:
    """One statement on ``base_url``'s server, outside any database of ours (CREATE / DROP DATABASE)."""
    with Sql(base_url) as sql:
        sql.execute(statement)


def create_empty_database(base_url: str, prefix: str) -> str:
    """A new database with a unique name on ``base_url``'s server; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_on_server(base_url, f'CREATE DATABASE "{name}"')
    return with_database(base_url, name)


def create_database(base_url: str, prefix: str) -> str:
    """A new database with the committed migrations applied, as production gets them."""
    url = create_empty_database(base_url, prefix)
    migrate(url)
    return url


def drop_database(base_url: str, url: str) -> None:
    run_on_server(base_url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return server_url()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url, "catalog_test")
    yield url
    drop_database(postgres_server_url, url)


MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL's or REDIS_URL's Redis, which must answer (CI names the machine's); with neither set,
    the machine's Redis, or where none answers a real redis-server of the suite's own, stopped at the end."""
    configured = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if configured:
        assert redis_answers(configured), f"Redis at {configured} (TEST_REDIS_URL / REDIS_URL) does not answer"
        yield configured
    elif redis_answers(MACHINE_REDIS):
        yield MACHINE_REDIS
    else:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        server.start()
        try:
            yield server.url
        finally:
            server.kill()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return replace(
        Settings(),
        database_url=database_url,
        redis_url=redis_url,
        cache_prefix=f"catalog_test_{uuid.uuid4().hex[:10]}",
        db_pool_min=2,
        db_pool_max=TEST_POOL_MAX,
    )


@pytest.fixture(scope="session")
def app(settings: Settings):
    return create_app(settings=settings)


@pytest.fixture(scope="session")
def client(app) -> Iterator[ReusableClient]:
    with ReusableClient(app, host="127.0.0.1", port=free_port()) as reusable:
        yield reusable


class Database(Sql):
    """Direct SQL on the test database, on the client's event loop (never through the service).

    A direct change shows through the API once the cache TTL has passed; these helpers let it pass at
    once (``catalog forget-cache``, on the client's loop so that the app's worker confirms it) so that
    tests about data need not wait.
    """

    def __init__(self, client: ReusableClient, url: str, settings: Settings) -> None:
        super().__init__(url, run=client._run)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.settings = settings

    def expire_cache(self) -> None:
        self.run(forget_cached(self.settings))

    def execute(self, sql: str, *args: Any) -> str:
        result = super().execute(sql, *args)
        self.expire_cache()
        return result

    def insert(self, sql: str, *args: Any) -> int:
        """An INSERT ... RETURNING id."""
        new_id = self.fetchval(sql, *args)
        self.expire_cache()
        return new_id

    def truncate(self) -> None:
        self.execute("TRUNCATE reviews, inventory, products, categories RESTART IDENTITY CASCADE")

    def category(self, name: str = "Kitchen", description: str | None = None, parent_id: int | None = None) -> int:
        return self.insert(
            "INSERT INTO categories (name, description, parent_id) VALUES ($1, $2, $3) RETURNING id",
            name, description, parent_id,
        )

    def product(
        self,
        name: str = "Kettle",
        price: float = 10.0,
        category_id: int | None = None,
        is_active: bool = True,
        description: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        return self.insert(
            "INSERT INTO products (name, description, price, category_id, is_active, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, COALESCE($6, now() AT TIME ZONE 'utc'), now() AT TIME ZONE 'utc')"
            " RETURNING id",
            name, description, price, category_id, is_active, created_at,
        )

    def review(self, product_id: int, rating: int, user_id: int = 1, comment: str | None = None) -> int:
        return self.insert(
            "INSERT INTO reviews (product_id, user_id, rating, comment) VALUES ($1, $2, $3, $4) RETURNING id",
            product_id, user_id, rating, comment,
        )

    def inventory(self, product_id: int, quantity: int, reserved: int = 0) -> int:
        return self.insert(
            "INSERT INTO inventory (product_id, quantity, reserved) VALUES ($1, $2, $3) RETURNING id",
            product_id, quantity, reserved,
        )

    def close(self) -> None:
        super().close()
        self.redis.close()


@pytest.fixture
def db(client: ReusableClient, database_url: str, settings: Settings) -> Iterator[Database]:
    """An empty catalog (and an empty cache) for each test."""
    database = Database(client, database_url, settings)
    database.truncate()
    yield database
    database.close()


# Tortoise logs every statement it sends at DEBUG on this logger, as "<sql>: <values>".
STATEMENT_LOGGER = "tortoise.db_client"
STATEMENT_FORMAT = "%s: %s"


class StatementCapture(logging.Handler):
    """Every SQL statement Tortoise sends, with its parameters, while installed."""

    def __init__(self) -> None:
        super().__init__()
        self.statements: list[tuple[str, list[Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == STATEMENT_FORMAT:
            self.statements.append(record.args)

    def __enter__(self) -> StatementCapture:
        logger = logging.getLogger(STATEMENT_LOGGER)
        self.previous_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logger = logging.getLogger(STATEMENT_LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self.previous_level)
