"""The one Tortoise configuration, shared by the app and by aerich (``[tool.tortoise]`` in pyproject.toml)."""

from __future__ import annotations

import os
from dataclasses import replace

from config.settings import Settings, database_credentials

MODELS_APP = "models"


def tortoise_config(database_url: str, settings: Settings | None = None) -> dict:
    settings = settings or Settings()
    credentials = database_credentials(database_url)
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


# aerich's CLI (the Procfile's release phase) reads this; a migration needs one connection, not a pool.
TORTOISE_ORM = tortoise_config(
    os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/catalog",
    replace(Settings(), db_pool_min=1, db_pool_max=2),
)
