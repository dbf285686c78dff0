"""Tortoise's asyncpg engine, measured per request, with a bounded wait for a pooled connection and
a full-text ``search`` lookup that an index can serve.

Tortoise acquires from the asyncpg pool without a timeout, so under pool exhaustion a request would
wait for ever; here it waits ``acquire_timeout`` seconds and then fails (answered as 503). Every
statement, in or out of a transaction, is counted and timed into the running request's stats.

asyncpg resets a connection on its way back to the pool with a query of its own (``SELECT
pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): one more round trip and four more
statements for PostgreSQL per statement of ours. The service never changes session state (no SET, LISTEN,
cursors or advisory locks), so after a use that ended normally the pool only rolls back a transaction left
open, as asyncpg does first in any case. A use that ended in an exception (a cancelled request included)
still gets the full reset: asyncpg prepares a statement with Flush, not Sync, so a task cancelled between
preparing and executing leaves PostgreSQL inside an implicit transaction, holding its snapshot and the
statement's table locks (which would block a migration) until the connection's next use.

Tortoise's ``field__search`` compares ``to_tsvector(field)``, whose text configuration comes from the
session, so no index can hold it; here it is ``to_tsvector('simple', field) @@ to_tsquery('simple', $n)``,
the expression of the GIN index on products.name, and the value is a tsquery (prefix terms allowed).
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

import asyncpg
from pypika_tortoise.terms import (
    BasicCriterion,
    Function,
    LiteralValue,
    Term,
    ValueWrapper,
)
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.asyncpg.executor import AsyncpgExecutor
from tortoise.backends.base.client import (
    NestedTransactionContext,
    PoolConnectionWrapper,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.contrib.postgres.search import Comp
from tortoise.filters import search

from catalog.stats import current_stats

TEXT_SEARCH_CONFIG = LiteralValue("'simple'")


def simple_text_search(field: Term, tsquery: str) -> BasicCriterion:
    vector = Function("to_tsvector", TEXT_SEARCH_CONFIG, field)
    return BasicCriterion(Comp.search, vector, Function("to_tsquery", TEXT_SEARCH_CONFIG, ValueWrapper(tsquery)))


class CatalogExecutor(AsyncpgExecutor):
    @classmethod
    def get_overridden_filter_func(cls, filter_func: Callable, filter_info: Any = None) -> Callable | None:
        if filter_func is search:
            return simple_text_search
        return super().get_overridden_filter_func(filter_func, filter_info)


class MeasuredQueries:
    """Mixin over Tortoise's hook that every query method of a client goes through."""

    async def _translate_exceptions(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        stats = current_stats()
        if stats is None:
            return await super()._translate_exceptions(func, *args, **kwargs)  # type: ignore[misc]
        started = perf_counter()
        try:
            return await super()._translate_exceptions(func, *args, **kwargs)  # type: ignore[misc]
        finally:
            stats.db_seconds += perf_counter() - started
            if func.__name__.startswith("execute_"):
                stats.statements += 1


class MeasuredTransactionWrapper(MeasuredQueries, TransactionWrapper):
    executor_class = CatalogExecutor

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(MeasuredTransactionWrapper(self))


class TimedPoolConnectionWrapper(PoolConnectionWrapper):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self.ensure_connection()
        self.connection = await self.client._pool.acquire(timeout=self.client.acquire_timeout)
        return self.connection

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        try:
            if exc_type is not None:
                await self.connection.reset()
        except Exception:
            self.connection.terminate()  # the pool opens a new one in its place
        finally:
            await self.client._pool.release(self.connection)


async def _no_session_reset(connection: asyncpg.Connection) -> None:
    """The pool's ``reset`` after a use that ended normally (see the module doc): asyncpg has already
    rolled back an open transaction; nothing else to undo."""


class CatalogAsyncpgClient(MeasuredQueries, AsyncpgDBClient):
    executor_class = CatalogExecutor

    def __init__(self, *args: Any, acquire_timeout: float | str = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = float(acquire_timeout)

    async def create_pool(self, **kwargs: Any) -> asyncpg.Pool:
        return await asyncpg.create_pool(None, reset=_no_session_reset, **kwargs)

    def acquire_connection(self) -> TimedPoolConnectionWrapper:
        return TimedPoolConnectionWrapper(self, self._pool_init_lock)

    def _in_transaction(self) -> TransactionContext:
        return TransactionContextPooled(MeasuredTransactionWrapper(self), self._pool_init_lock)


client_class = CatalogAsyncpgClient
