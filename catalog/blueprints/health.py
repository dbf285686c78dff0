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
    summary="Readiness: PostgreSQL and the cache, each reported on its own",
    tag="health",
    response=[schemas.ok(schemas.ref("Readiness")), schemas.ok(schemas.ref("Readiness"), status=503)],
)
async def ready(request: Request) -> HTTPResponse:
    """503 only when PostgreSQL is unreachable: without the cache the service is slower, not down."""
    try:
        await asyncio.wait_for(queries.ping(), READY_TIMEOUT_S)
        postgres = "ok"
    except Exception as error:
        if not database_unavailable(error):
            raise
        postgres = f"unavailable: {error.__class__.__name__}"
    cache = await request.app.ctx.caches.store.ping()
    status = "ready" if postgres == "ok" and cache == "ok" else "degraded" if postgres == "ok" else "unavailable"
    body = {"status": status, "postgres": postgres, "cache": cache, "cache_backend": request.app.ctx.caches.store.name}
    return json(body, status=200 if postgres == "ok" else 503)
