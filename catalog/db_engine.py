"""Tortoise's asyncpg engine with a bounded wait for a pooled connection.

Tortoise acquires from the asyncpg pool without a timeout, so under pool exhaustion a request would
wait for ever; here it waits ``acquire_timeout`` seconds and then fails (answered as 503).
"""

from __future__ import annotations

from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient
from tortoise.backends.base.client import PoolConnectionWrapper


class TimedPoolConnectionWrapper(PoolConnectionWrapper):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self.ensure_connection()
        self.connection = await self.client._pool.acquire(timeout=self.client.acquire_timeout)
        return self.connection


class CatalogAsyncpgClient(AsyncpgDBClient):
    def __init__(self, *args: Any, acquire_timeout: float | str = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = float(acquire_timeout)

    def acquire_connection(self) -> TimedPoolConnectionWrapper:
        return TimedPoolConnectionWrapper(self, self._pool_init_lock)


client_class = CatalogAsyncpgClient
