"""The one Tortoise configuration, shared by the app and by aerich (``[tool.tortoise]`` in pyproject.toml)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from config.database import connect_arguments
from config.settings import Settings

MODELS_APP = "models"
PRIMARY = "default"
# A session's name in pg_stat_activity, on the primary and on every replica.
APPLICATION_NAME = "catalog"


def replica_connection(number: int) -> str:
    return f"replica{number}"


def _credentials(url: str, settings: Settings, variable: str = "DATABASE_URL") -> dict:
    credentials = connect_arguments(url, variable=variable)
    credentials.update(
        minsize=settings.db_pool_min,
        maxsize=settings.db_pool_max,
        max_inactive_connection_lifetime=settings.db_idle_lifetime,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        acquire_timeout=settings.db_acquire_timeout,
        server_settings={
            "application_name": APPLICATION_NAME,
            "random_page_cost": str(settings.db_random_page_cost),
            # A merge join of a keyset page with inventory walks inventory's index from its first entry
            # up to the page (300 ms for a page deep in 1,000,000 products, against 0.3 ms as a nested
            # loop): the planner cannot carry the page's id bound over to the joined table.
            "enable_mergejoin": "off",
        },
    )
    return credentials


def tortoise_config(database_url: str, settings: Settings | None = None,
                    replicas: Sequence[tuple[str, Settings]] = ()) -> dict:
    """The primary as ``default``; each of ``replicas`` (its URL, and settings with its pool's size) as
    ``replica1``, ``replica2``..., which ``catalog.replicas.ReadRouter`` gives reads to."""
    settings = settings or Settings()
    primary = {"engine": "catalog.db_engine", "credentials": _credentials(database_url, settings)}
    connections: dict[str, dict] = {PRIMARY: primary}
    for number, (url, pool) in enumerate(replicas, start=1):
        connections[replica_connection(number)] = {
            "engine": "catalog.replicas", "credentials": _credentials(url, pool, "DATABASE_REPLICA_URLS")
        }
    config = {
        "connections": connections,
        "apps": {
            MODELS_APP: {"models": ["catalog.models", "aerich.models"], "default_connection": PRIMARY},
        },
        # Columns are `timestamp without time zone` holding UTC.
        "use_tz": False,
        "timezone": "UTC",
    }
    if replicas:
        config["routers"] = ["catalog.replicas.ReadRouter"]
    return config


def one_off(settings: Settings) -> Settings:
    """For a migration or a script: one connection, and no statement timeout (an index build on a large
    table may take minutes; the release phase has no router in front of it)."""
    return replace(settings, db_pool_min=1, db_pool_max=2, db_command_timeout=None)


def __getattr__(name: str) -> dict:
    """``TORTOISE_ORM``, which aerich's CLI (the Procfile's release phase) reads: made when asked for, so that
    importing this module never fails on a bad DATABASE_URL, and the error names it where it matters."""
    if name != "TORTOISE_ORM":
        raise AttributeError(name)
    return tortoise_config(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/catalog", one_off(Settings())
    )
