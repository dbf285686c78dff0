"""The one Tortoise configuration, shared by the app and by aerich (``[tool.tortoise]`` in pyproject.toml)."""

from __future__ import annotations

import os
from dataclasses import replace

from config.database import connect_arguments
from config.settings import Settings

MODELS_APP = "models"


def tortoise_config(database_url: str, settings: Settings | None = None) -> dict:
    settings = settings or Settings()
    credentials = connect_arguments(database_url)
    credentials.update(
        minsize=settings.db_pool_min,
        maxsize=settings.db_pool_max,
        max_inactive_connection_lifetime=settings.db_idle_lifetime,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        acquire_timeout=settings.db_acquire_timeout,
        server_settings={
            "random_page_cost": str(settings.db_random_page_cost),
            # A merge join of a keyset page with inventory walks inventory's index from its first entry
            # up to the page (300 ms for a page deep in 1,000,000 products, against 0.3 ms as a nested
            # loop): the planner cannot carry the page's id bound over to the joined table.
            "enable_mergejoin": "off",
        },
    )
    return {
        "connections": {"default": {"engine": "catalog.db_engine", "credentials": credentials}},
        "apps": {
            MODELS_APP: {"models": ["catalog.models", "aerich.models"], "default_connection": "default"},
        },
        # Columns are `timestamp without time zone` holding UTC.
        "use_tz": False,
        "timezone": "UTC",
    }


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
