"""The HTTP layer around every request: timing as Sanic lifecycle signals, ETag (304) and gzip as
response middleware.

Timing starts on ``http.lifecycle.request``, which fires as soon as the request head is parsed, and ends on
``http.lifecycle.response``, after the response middleware and before sending: so a request rejected
before routing or middleware (404, 405, 413) is timed and logged too. A successful JSON GET that the
response cache did not make gets its ETag here, as a ``catalog.representation``; changing the response is
middleware's job, since a signal cannot replace it.
"""

from __future__ import annotations

import logging
import os
import re
from time import perf_counter

from sanic import HTTPResponse, Request, Sanic
from sanic.signals import Event

from catalog.logs import log_line
from catalog.representation import JSON_TYPE, Representation
from catalog.stats import start_request_stats
from config.settings import Settings

access_logger = logging.getLogger("catalog.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def setup_http(app: Sanic, settings: Settings) -> None:
    @app.signal(Event.HTTP_LIFECYCLE_REQUEST)
    async def start_timing(request: Request) -> None:
        request.ctx.request_id = request_id(request.headers.get("x-request-id"))
        request.ctx.started = perf_counter()
        # Set in the request's own task: the database engine and the cache add to it from there.
        request.ctx.stats = start_request_stats()
        request.ctx.cache = "-"

    @app.on_response(priority=100)
    async def tag_response(request: Request, response: HTTPResponse) -> HTTPResponse:
        return represent(request, response, settings)

    @app.signal(Event.HTTP_LIFECYCLE_RESPONSE)
    async def finish_timing(request: Request, response: HTTPResponse) -> None:
        log_timing(request, response, settings)


def represent(request: Request, response: HTTPResponse, settings: Settings) -> HTTPResponse:
    """ETag, 304 and gzip, one way for every GET: the representation a cached route made (its tags and gzip
    body computed once, when it was stored), or one made here of any other successful JSON GET."""
    representation: Representation | None = getattr(request.ctx, "representation", None)
    if representation is None:
        if request.method not in ("GET", "HEAD") or response.status != 200 or not response.body:
            return response
        if not (response.content_type or "").startswith(JSON_TYPE):
            return response
        representation = Representation.of(response.body, {})
    passthrough = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
    response = representation.respond(request, settings, passthrough)
    _vary_on_encoding(response)
    return response


def _vary_on_encoding(response: HTTPResponse) -> None:
    """Other middleware (CORS) may have set its own Vary; the encoding must stay in it."""
    vary = [item.strip() for item in response.headers.get("vary", "").split(",") if item.strip()]
    if "accept-encoding" not in (item.lower() for item in vary):
        response.headers["Vary"] = ", ".join(["Accept-Encoding", *vary])


def request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token (it goes into logs and headers), else a new one."""
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()  # a uuid4's randomness, without building a UUID on every request


def log_timing(request: Request, response: HTTPResponse, settings: Settings) -> None:
    """One log line per request, and Server-Timing so a browser's devtools show where time went."""
    started = getattr(request.ctx, "started", None)
    if started is None:  # failed before its head was parsed (a malformed request line)
        return
    response.headers["X-Request-ID"] = request.ctx.request_id
    elapsed_ms = (perf_counter() - started) * 1000
    stats = request.ctx.stats
    db_ms, cache_ms = stats.db_seconds * 1000, stats.cache_seconds * 1000
    response.headers["Server-Timing"] = (
        f'total;dur={elapsed_ms:.1f}, db;dur={db_ms:.1f};desc="{stats.statements} statements", '
        f'cache;dur={cache_ms:.1f};desc="{request.ctx.cache}"'
    )
    if settings.database_replica_urls:  # how many of the statements a replica ran
        response.headers["Server-Timing"] += f', replica;desc="{stats.replica_statements} statements"'
    slow = elapsed_ms > settings.slow_request_ms
    level = logging.WARNING if slow else logging.INFO
    if access_logger.isEnabledFor(level):  # no formatting for a line that is not written
        log_line(access_logger, level, (
            f"{request.method} {request.path} {response.status} {elapsed_ms:.1f}ms sql={stats.statements} "
            f"db={db_ms:.1f}ms cache={request.ctx.cache} {cache_ms:.1f}ms id={request.ctx.request_id}"
            f"{' SLOW' if slow else ''}"
        ))
