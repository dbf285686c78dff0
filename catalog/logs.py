"""The service's logging: one line per request (``catalog.http``) and its own messages, on stderr as the
platform collects them; Sanic configures and prints its own."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    """For libraries that log expected failures (PostgreSQL down) with a traceback: the error on one line."""

    def formatException(self, exc_info) -> str:  # noqa: N802 (logging's name)
        return repr(exc_info[1])

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def configure_logging() -> None:
    """The service's own loggers (catalog.*) and asyncpg's, at LOG_LEVEL."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    for name, formatter in (("catalog", logging.Formatter(LOG_FORMAT)), ("asyncpg", OneLineFormatter(LOG_FORMAT))):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(formatter)
            logger.addHandler(handler)
            logger.propagate = False
        logger.setLevel(level)
