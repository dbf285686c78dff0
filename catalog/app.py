"""The app factory: ``sanic catalog.app:create_app --factory``.

Each concern is set up by its own module; pools are opened per worker (Sanic spawns workers) in
``before_server_start`` and closed in ``after_server_stop``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from multiprocessing import Array, Value

import orjson
from sanic import Sanic
from sanic.signals import Event
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from catalog import blueprints, contract
from catalog.blueprints.cached import ParsedRequests
from catalog.cache import SharedState, open_caches, react_to_product_writes
from catalog.db import (
    RESERVED_FOR_OTHERS,
    close_database,
    fit_pool,
    open_database,
    read_usable_connections,
    replica_pool_sizes,
)
from catalog.errors import JSONErrorHandler
from catalog.http import setup_http
from catalog.logs import configure_logging
from catalog.process import (
    accept_promptly,
    deepen_listen_backlog,
    listen_per_worker,
    stop_cleanly,
)
from catalog.replicas import close_replicas, open_replicas, start_request
from config.database import masked_url
from config.settings import Settings


def create_app(*, settings: Settings | None = None) -> Sanic:
    settings = settings or Settings()
    database_url = settings.database_url
    if not database_url:
        raise SystemExit("catalog: DATABASE_URL is not set: start with `catalog run` (embedded PostgreSQL) or set it")
    if problems := settings.problems():
        raise SystemExit("catalog: " + "; ".join(problems))
    configure_logging()

    app = Sanic("catalog", dumps=orjson.dumps, loads=orjson.loads, error_handler=JSONErrorHandler())
    app.config.update(
        REQUEST_MAX_SIZE=settings.max_body_bytes,
        ACCESS_LOG=False,
        # Below the 30 s at which Heroku's router gives up with an HTML page: the client gets JSON 503.
        RESPONSE_TIMEOUT=settings.request_timeout,  # catalog.http logs each request once, with its timing and SQL count
        FALLBACK_ERROR_FORMAT="json",
        CORS_ORIGINS=",".join(settings.cors_origins),
        CORS_ALWAYS_SEND=False,  # Allow-Origin only to requests that send an Origin: the rest have no use for it
        # Browsers hide response headers from scripts unless exposed; the frontend pages with these.
        CORS_EXPOSE_HEADERS="X-Next-Cursor,X-Prev-Cursor,Link,ETag,Server-Timing,X-Total-Count-Estimated",
        OAS_UI_DEFAULT="swagger",
    )
    app.ctx.settings = settings
    app.ctx.cursor_secret = settings.secret_key.encode()
    app.ctx.parsed_requests = ParsedRequests()
    # CORS, automatic OPTIONS/HEAD and the OpenAPI document; not dependency injection, which the routes do not
    # use and which would cost every request a signal of its own.
    Extend(app, extensions=[HTTPExtension, OpenAPIExtension], built_in_extensions=False)
    app.ext.openapi.describe("Catalog API", version="1.0.0", description="Product catalog for the web frontend.")
    app.ext.openapi.raw({"components": {"schemas": contract.COMPONENTS}})

    for blueprint in blueprints.ALL:
        app.blueprint(blueprint)
    if settings.benchmark_endpoints:  # load-test ceilings for benchmarks/run.py; off unless BENCHMARK_ENDPOINTS=true
        from catalog.blueprints.ceiling import bp as ceiling

        app.blueprint(ceiling)
    setup_http(app, settings)
    react_to_product_writes(app)
    if settings.database_replica_urls:  # each read request starts on the primary until it knows the write position
        app.signal(Event.HTTP_LIFECYCLE_REQUEST)(start_request)

    @app.main_process_start
    async def size_pools(app: Sanic) -> None:
        """One look at the server's connection limit for all workers; they read the sizes from shared_ctx."""
        usable = await read_usable_connections(database_url, settings)
        size = fit_pool(settings, app.state.workers, usable)
        app.shared_ctx.db_pool_min = Value("i", size.minimum)
        app.shared_ctx.db_pool_max = Value("i", size.maximum)
        logging.getLogger("catalog.db").info(
            "database %s: %d workers x pool of %d to %d connections (server allows %s, %d kept for others)",
            masked_url(database_url), app.state.workers, size.minimum, size.maximum,
            "?" if usable is None else usable, RESERVED_FOR_OTHERS,
        )
        if usable is not None and app.state.workers * size.maximum + RESERVED_FOR_OTHERS > usable:
            logging.getLogger("catalog.db").warning(
                "%d workers do not fit in %d connections: lower WEB_CONCURRENCY", app.state.workers, usable
            )
        if settings.database_replica_urls:
            replicas = await replica_pool_sizes(settings, app.state.workers)
            app.shared_ctx.replica_pools = Array("i", [n for size in replicas for n in (size.minimum, size.maximum)])

    @app.main_process_start
    async def share_cache_state(app: Sanic) -> None:
        # One multiprocessing value per attribute: Sanic shares those with every worker as they are.
        shared = SharedState.new()
        app.shared_ctx.cache_generation = shared.generation
        app.shared_ctx.unconfirmed_writes = shared.unconfirmed_writes
        app.shared_ctx.write_position = shared.write_position
        cache_logger = logging.getLogger("catalog.cache")
        if not settings.redis_url:
            cache_logger.warning("REDIS_URL is not set: each worker caches in process")
        elif settings.redis_url.startswith("rediss://") and settings.redis_ssl_cert_reqs == "none":
            cache_logger.warning("Redis over TLS without verifying its certificate (REDIS_SSL_CERT_REQS=none)")

    accept_promptly(app)
    deepen_listen_backlog(app, settings.listen_backlog)
    listen_per_worker(app, settings.listen_backlog)
    stop_cleanly(app)

    @app.before_server_start
    async def connect(app: Sanic) -> None:
        pool = settings
        replica_pools = [(url, settings) for url in settings.database_replica_urls]
        if hasattr(app.shared_ctx, "db_pool_max"):  # absent in an in-process test server: no main process
            pool = replace(settings, db_pool_min=app.shared_ctx.db_pool_min.value,
                           db_pool_max=app.shared_ctx.db_pool_max.value)
            replica_pools = [
                (url, replace(settings, db_pool_min=app.shared_ctx.replica_pools[2 * i],
                              db_pool_max=app.shared_ctx.replica_pools[2 * i + 1]))
                for i, url in enumerate(settings.database_replica_urls)
            ]
        await open_database(database_url, pool, replica_pools)
        # Without the main process (an in-process test server), this worker's own state suffices.
        shared = SharedState.new()
        if hasattr(app.shared_ctx, "cache_generation"):
            shared = SharedState(app.shared_ctx.cache_generation, app.shared_ctx.unconfirmed_writes,
                                 app.shared_ctx.write_position)
        app.ctx.caches = open_caches(settings, shared)
        app.ctx.replicas = None
        if settings.database_replica_urls:
            app.ctx.replicas = await open_replicas(settings, app.ctx.caches.store.record_write_position)

    @app.after_server_stop
    async def disconnect(app: Sanic) -> None:
        if app.ctx.replicas is not None:
            await close_replicas(app.ctx.replicas)
        await app.ctx.caches.close()
        await close_database()

    return app

