"""Database lifecycle per worker, and pools sized to fit the server."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from tortoise import Tortoise

from catalog.errors import database_unavailable
from config.database import connect_arguments, masked_url
from config.settings import Settings
from config.tortoise import PRIMARY, tortoise_config

logger = logging.getLogger("catalog.db")
# Connections left to other clients of the server: the release phase (aerich, 1-2) and a console.
RESERVED_FOR_OTHERS = 3

# Connections a role without superuser rights may open (PostgreSQL 16 also has reserved_connections).
USABLE_CONNECTIONS = """
SELECT current_setting('max_connections')::int
     - current_setting('superuser_reserved_connections')::int
     - coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)
"""


@dataclass(frozen=True, slots=True)
class PoolSize:
    minimum: int
    maximum: int


def fit_pool(settings: Settings, workers: int, usable_connections: int | None) -> PoolSize:
    """Each worker's pool: DB_POOL_MIN to DB_POOL_MAX, with the maximum lowered until ``workers`` pools fit
    in the server's ``usable_connections`` beside RESERVED_FOR_OTHERS (never below one connection)."""
    maximum = settings.db_pool_max
    if usable_connections is not None:
        maximum = min(maximum, max(1, (usable_connections - RESERVED_FOR_OTHERS) // max(1, workers)))
    return PoolSize(min(settings.db_pool_min, maximum), maximum)


def fit_replica_pool(settings: Settings, workers: int, usable_connections: int | None) -> PoolSize:
    """A replica's pool per worker, sized as the primary's beside the connection each worker's poller holds
    there (catalog.replicas)."""
    return fit_pool(settings, workers, None if usable_connections is None else usable_connections - workers)


async def read_usable_connections(database_url: str, settings: Settings) -> int | None:
    """The server's connection limit for this role, or None when it does not answer."""
    try:
        connection = await asyncpg.connect(**connect_arguments(database_url), timeout=settings.db_connect_timeout)
    except (OSError, asyncpg.PostgresError) as error:  # timeouts and TLS failures are OSErrors too
        logger.warning("PostgreSQL at %s is not reachable yet: %s", masked_url(database_url), error)
        return None
    try:
        return int(await connection.fetchval(USABLE_CONNECTIONS))
    finally:
        await connection.close()


async def replica_pool_sizes(settings: Settings, workers: int) -> list[PoolSize]:
    """Each replica's pool per worker, fitted to that replica's own limit (a standby's max_connections is at
    least the primary's, and may be more)."""
    sizes = []
    for url in settings.database_replica_urls:
        usable = await read_usable_connections(url, settings)
        size = fit_replica_pool(settings, workers, usable)
        logger.info(
            "replica %s: %d workers x pool of %d to %d connections and a poller (server allows %s, %d kept for others)",
            masked_url(url), workers, size.minimum, size.maximum, "?" if usable is None else usable,
            RESERVED_FOR_OTHERS,
        )
        sizes.append(size)
    return sizes


async def open_database(database_url: str, settings: Settings, replicas: Sequence[tuple[str, Settings]] = ()) -> None:
    """Register the models and open this worker's pool; ``replicas`` (URL, settings with the pool's size)
    become connections of their own, opened by ``catalog.replicas.open_replicas``.

    A PostgreSQL that is down at start-up does not stop the worker: requests answer 503 and the pool is
    opened by the first request after PostgreSQL is back (Tortoise creates it lazily).
    """
    await Tortoise.init(config=tortoise_config(database_url, settings, replicas), _enable_global_fallback=True)
    try:
        await Tortoise.get_connection(PRIMARY).create_connection(with_db=True)
    except Exception as error:
        if not database_unavailable(error):
            raise
        logger.warning("PostgreSQL at %s is unreachable at start-up: %s", masked_url(database_url), error)


async def close_database() -> None:
    await Tortoise.close_connections()
