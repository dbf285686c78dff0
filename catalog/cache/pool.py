"""A worker's connections to Redis: the pool its requests share, and the TLS settings of any client."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis

from config.settings import Settings

POOL_WAIT_S = 1.0


class PoolBusy(Exception):
    """Every Redis connection of this worker stayed in use for POOL_WAIT_S: the worker is busy, not Redis."""


# What a call to Redis raises when Redis is down, slow or out of reach. RuntimeError: uvloop's, for a write on
# a transport that Redis has closed, which redis-py passes on as it is (seen when Redis was killed, before the
# workers ran asyncio's loop: catalog.process); kept so that no event loop makes Redis failing a 500.
REDIS_FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError, PoolBusy, RuntimeError)


class WaitingConnectionPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, whose wait that ran out is told apart from Redis failing."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except redis.ConnectionError as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):  # the wait, not a connect that failed
                raise PoolBusy from error
            raise


def tls_arguments(settings: Settings) -> dict[str, Any]:
    """redis-py's certificate settings, for a rediss:// URL only (a plain connection takes none)."""
    if not settings.redis_url or not settings.redis_url.startswith("rediss://"):
        return {}
    return {"ssl_cert_reqs": settings.redis_ssl_cert_reqs, "ssl_ca_certs": settings.redis_ssl_ca_certs}
