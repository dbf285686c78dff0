"""The embedded default: a PostgreSQL server from the pgserver wheel, in a data folder of the project.

Used when DATABASE_URL is not set, so that the run and test commands need nothing installed or
configured. The server outlives the command that started it (the web workers are exec'd after it) and
is reused by the next one.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger("catalog.embedded")


def embedded_server_url(data_dir: Path, database: str) -> str:
    """Start (or reuse) the embedded server, make sure ``database`` exists, and return its URL."""
    import pgserver  # imported here: only the embedded default needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url = server.get_uri(database)
    logger.info("embedded PostgreSQL in %s", data_dir)
    return url
