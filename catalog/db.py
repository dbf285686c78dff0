"""Database lifecycle per worker, and the SQL statement counter used by timing logs and tests."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

import asyncpg
from tortoise import Tortoise

from catalog.errors import database_unavailable
from config.settings import Settings, database_credentials, masked_url
from config.tortoise import tortoise_config

logger = logging.getLogger("catalog.db")

# Tortoise logs every statement it sends at DEBUG on this logger, as "<sql>: <values>".
STATEMENT_LOGGER = "tortoise.db_client"
STATEMENT_FORMAT = "%s: %s"


@dataclass(slots=True)
class StatementCount:
    statements: int = 0


_current_count: ContextVar[StatementCount | None] = ContextVar("catalog_statement_count", default=None)


def start_counting() -> StatementCount:
    """Count the statements sent from here on in this task (and tasks it starts)."""
    count = StatementCount()
    _current_count.set(count)
    return count


class StatementCounter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        count = _current_count.get()
        if count is not None and record.msg == STATEMENT_FORMAT:
            count.statements += 1


def install_statement_counter() -> None:
    statement_logger = logging.getLogger(STATEMENT_LOGGER)
    if not any(isinstance(handler, StatementCounter) for handler in statement_logger.handlers):
        statement_logger.addHandler(StatementCounter())
    statement_logger.setLevel(logging.DEBUG)
    # The SQL text is for the counter, not for the service log.
    statement_logger.propagate = False


async def open_database(database_url: str, settings: Settings) -> None:
    """Register the models and open this worker's pool.

    A PostgreSQL that is down at start-up does not stop the worker: requests answer 503 and the pool is
    opened by the first request after PostgreSQL is back (Tortoise creates it lazily).
    """
    install_statement_counter()
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
    wanted = settings.workers * settings.db_pool_max
    if wanted > max_connections:
        logger.warning(
            "%d workers x DB_POOL_MAX %d = %d connections exceeds PostgreSQL max_connections %d",
            settings.workers, settings.db_pool_max, wanted, max_connections,
        )
