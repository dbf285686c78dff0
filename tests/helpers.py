"""What test modules share besides fixtures.

Direct SQL on a test database, never through the service: ``Sql`` from synchronous code (on a loop of its
own, or on one the caller drives), ``fetch`` for one statement on a connection of its own, and ``connect``
for coroutines that run beside the requests they watch. All connect as the service does
(``config.database.connect_arguments``), and a statement that hangs fails the test instead of the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from config.database import connect_arguments

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 60  # counting every list of 1,000,000 products (test_query_plans) takes about 10 s


async def connect(url: str) -> asyncpg.Connection:
    """A connection to ``url`` on the running loop."""
    return await asyncpg.connect(
        **connect_arguments(url), timeout=CONNECT_TIMEOUT_S, command_timeout=STATEMENT_TIMEOUT_S
    )


class Sql:
    """One connection to ``url``, used synchronously.

    It runs on a loop of its own unless ``run`` drives the caller's: conftest's ``Database`` passes the
    ReusableClient's, so that its tests may also run their own coroutines on the app's loop (``db.run``).
    """

    def __init__(self, url: str, run: Callable[[Coroutine], Any] | None = None) -> None:
        self.runner = None if run else asyncio.Runner()
        self.run = run or self.runner.run
        self.connection: asyncpg.Connection = self.run(connect(url))

    def execute(self, query: str, *args: Any) -> str:
        return self.run(self.connection.execute(query, *args))

    def executemany(self, query: str, args: list[tuple]) -> None:
        self.run(self.connection.executemany(query, args))

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.connection.fetch(query, *args))

    def fetchval(self, query: str, *args: Any) -> Any:
        return self.run(self.connection.fetchval(query, *args))

    def products(self, where: str, *args: Any) -> list[tuple]:
        """(id, name, price, category_id, is_active) of the products matching ``where``, by id."""
        rows = self.fetch(
            f"SELECT id, name, price, category_id, is_active FROM products WHERE {where} ORDER BY id", *args
        )
        return [tuple(row) for row in rows]

    def close(self) -> None:
        self.run(self.connection.close())
        if self.runner:
            self.runner.close()

    def __enter__(self) -> Sql:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on a connection of its own, closed before returning (nothing of the test's lingers in
    pg_stat_activity, and a server that restarted since is no matter)."""
    with Sql(url) as sql:
        return sql.fetch(query, *args)
