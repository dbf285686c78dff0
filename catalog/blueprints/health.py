from __future__ import annotations

import asyncio

from sanic import Blueprint, HTTPResponse, Request
from sanic.response import json
from sanic_ext import openapi

from catalog import queries, schemas
from catalog.errors import database_unavailable

bp = Blueprint("health", url_prefix="/health")

READY_TIMEOUT_S = 2.0


@bp.get("")
@openapi.definition(summary="Liveness", tag="health", response=schemas.ok(schemas.ref("Health")))
async def health(request: Request) -> HTTPResponse:
    return json({"status": "healthy"})


@bp.get("/ready")
@openapi.definition(
    summary="Readiness: PostgreSQL, the cache and each replica, each reported on its own",
    tag="health",
    response=[schemas.ok(schemas.ref("Readiness")), schemas.ok(schemas.ref("Readiness"), status=503)],
)
async def ready(request: Request) -> HTTPResponse:
    """503 only when PostgreSQL is unreachable: without the cache or a replica the service is slower, not down.

    Replicas are reported as this worker's poller last saw them, by host:port/database."""
    try:
        await asyncio.wait_for(queries.ping(), READY_TIMEOUT_S)
        postgres = "ok"
    except Exception as error:
        if not database_unavailable(error):
            raise
        postgres = f"unavailable: {error.__class__.__name__}"
    cache = await request.app.ctx.caches.store.ping()
    replicas = request.app.ctx.replicas.health() if request.app.ctx.replicas is not None else {}
    well = cache == "ok" and all(state == "ok" for state in replicas.values())
    status = "ready" if postgres == "ok" and well else "degraded" if postgres == "ok" else "unavailable"
    body = {"status": status, "postgres": postgres, "cache": cache, "cache_backend": request.app.ctx.caches.store.name}
    if replicas:
        body["replicas"] = replicas
    return json(body, status=200 if postgres == "ok" else 503)
