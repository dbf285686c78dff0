"""The embedded default: a PostgreSQL server from the pgserver wheel, in a data folder of the project.

Used when DATABASE_URL is not set, so that the run and test commands need nothing installed or
configured. The server stops when the process that started it exits (``catalog run`` waits for its web
workers first), so no command leaves a PostgreSQL running; its data folder stays for the next one.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger("catalog.embedded")


def embedded_server_url(data_dir: Path, database: str) -> str:
    """Start (or reuse) the embedded server, make sure ``database`` exists, and return its URL."""
    import pgserver  # imported here: only the embedded default needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url = server.get_uri(database)
    logger.info("embedded PostgreSQL in %s", data_dir)
    return url
