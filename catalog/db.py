"""Database lifecycle per worker."""

from __future__ import annotations

import logging

import asyncpg
from tortoise import Tortoise

from catalog.errors import database_unavailable
from config.settings import Settings, database_credentials, masked_url
from config.tortoise import tortoise_config

logger = logging.getLogger("catalog.db")
SPARE_CONNECTIONS = 10


async def open_database(database_url: str, settings: Settings) -> None:
    """Register the models and open this worker's pool.

    A PostgreSQL that is down at start-up does not stop the worker: requests answer 503 and the pool is
    opened by the first request after PostgreSQL is back (Tortoise creates it lazily).
    """
    await Tortoise.init(config=tortoise_config(database_url, settings), _enable_global_fallback=True)
    try:
        await Tortoise.get_connection("default").create_connection(with_db=True)
    except Exception as error:
        if not database_unavailable(error):
            raise
        logger.warning("PostgreSQL at %s is unreachable at start-up: %s", masked_url(database_url), error)


async def close_database() -> None:
    await Tortoise.close_connections()


async def warn_if_pool_exceeds_server(database_url: str, settings: Settings) -> None:
    """Workers x pool maximum must fit in PostgreSQL's max_connections, or requests wait or fail."""
    credentials = {
        key: value
        for key, value in database_credentials(database_url).items()
        if key in ("host", "port", "user", "password", "database")
    }
    try:
        connection = await asyncpg.connect(**credentials, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        logger.warning("PostgreSQL at %s is not reachable yet: %s", masked_url(database_url), error)
        return
    try:
        max_connections = int(await connection.fetchval("SHOW max_connections"))
    finally:
        await connection.close()
    # PostgreSQL keeps superuser_reserved_connections (3 by default) for itself, and other clients
    # (the release phase, psql, monitoring) need some too.
    wanted = settings.workers * settings.db_pool_max
    if wanted > max_connections - SPARE_CONNECTIONS:
        logger.warning(
            "%d workers x DB_POOL_MAX %d = %d connections leaves fewer than %d spare of PostgreSQL's max_connections %d",
            settings.workers, settings.db_pool_max, wanted, SPARE_CONNECTIONS, max_connections,
        )
