"""The ``catalog`` command: run the service, apply migrations, load data.

Every subcommand uses DATABASE_URL when it is set, and the embedded PostgreSQL otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys

from aerich import Command
from tortoise import Tortoise

from config.settings import PROJECT_ROOT, Settings
from config.tortoise import MODELS_APP, one_off, tortoise_config

logger = logging.getLogger("catalog.cli")

EMBEDDED_DATABASE = "catalog"
DEMO_PRODUCTS = 2_000


def resolve_database_url(settings: Settings) -> tuple[str, bool]:
    """The database to use, and whether it is the embedded one."""
    if settings.database_url:
        return settings.database_url, False
    from catalog.embedded import embedded_server_url

    return embedded_server_url(settings.embedded_data_dir, EMBEDDED_DATABASE), True


async def apply_migrations(database_url: str) -> list[str]:
    """``aerich upgrade`` for this database: the committed migrations, in order."""
    command = Command(
        tortoise_config=tortoise_config(database_url, one_off(Settings())),
        app=MODELS_APP,
        location=str(PROJECT_ROOT / "migrations"),
    )
    async with command:
        return await command.upgrade(run_in_transaction=True)


async def _is_empty(database_url: str) -> bool:
    await Tortoise.init(config=tortoise_config(database_url, one_off(Settings())))
    try:
        _, rows = await Tortoise.get_connection("default").execute_query("SELECT 1 FROM products LIMIT 1")
        return not rows
    finally:
        await Tortoise.close_connections()


def run(args: argparse.Namespace, settings: Settings) -> None:
    database_url, embedded = resolve_database_url(settings)
    applied = asyncio.run(apply_migrations(database_url))
    logger.info("migrations applied: %s", ", ".join(applied) or "none pending")
    if embedded and asyncio.run(_is_empty(database_url)):
        from catalog.seed import seed

        logger.info("empty embedded database: loading a demo catalog of %d products", DEMO_PRODUCTS)
        asyncio.run(seed(database_url, DEMO_PRODUCTS, progress=False))
    host, port = args.host or settings.host, args.port or settings.port
    workers = args.workers or settings.workers
    logger.info("serving on http://%s:%s with %d workers", host, port, workers)
    server = subprocess.Popen(
        [sys.executable, "-m", "sanic", "catalog.app:create_app", "--factory",
         "--host", host, "--port", str(port), "--workers", str(workers)],
        env={**os.environ, "DATABASE_URL": database_url},
    )
    # Sanic shuts down on SIGTERM or SIGINT; this process waits for it, then (atexit) stops the embedded
    # PostgreSQL it started. Ctrl-C reaches both already; a SIGTERM sent to this process alone is passed on.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, _frame: server.send_signal(number))
    sys.exit(server.wait())


def migrate(args: argparse.Namespace, settings: Settings) -> None:
    database_url, _ = resolve_database_url(settings)
    applied = asyncio.run(apply_migrations(database_url))
    print("applied:", ", ".join(applied) or "none pending")


def seed_command(args: argparse.Namespace, settings: Settings) -> None:
    from catalog.seed import seed

    database_url, _ = resolve_database_url(settings)
    summary = asyncio.run(seed(database_url, args.products, seed=args.seed, progress=not args.quiet))
    print(summary)


def forget_cache_command(args: argparse.Namespace, settings: Settings) -> None:
    from catalog.cache import forget_cached

    if not settings.redis_url:
        sys.exit("catalog: REDIS_URL is not set: without Redis each worker's cache lives and ends with it")
    asyncio.run(forget_cached(settings))
    print("every cached entry dropped")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="catalog", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="apply migrations and serve (embedded PostgreSQL by default)")
    run_parser.add_argument("--host")
    run_parser.add_argument("--port", type=int)
    run_parser.add_argument("--workers", type=int)
    run_parser.set_defaults(handler=run)

    commands.add_parser("migrate", help="apply the aerich migrations").set_defaults(handler=migrate)

    seed_parser = commands.add_parser("seed", help="bulk-load a deterministic demo catalog with COPY")
    seed_parser.add_argument("--products", type=int, required=True)
    seed_parser.add_argument("--seed", type=int, default=42)
    seed_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    seed_parser.set_defaults(handler=seed_command)

    commands.add_parser(
        "forget-cache", help="drop every cached entry on every instance (after changing the tables directly)"
    ).set_defaults(handler=forget_cache_command)

    args = parser.parse_args(argv)
    args.handler(args, Settings())


if __name__ == "__main__":
    main(sys.argv[1:])
