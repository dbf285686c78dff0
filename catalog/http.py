"""HTTP concerns as middleware: request timing with SQL counts, ETag / 304, and gzip.

Response middleware order matters, so it is one function doing it in a fixed order: time the
request, then tag the representation, answer 304 if the client has it, and only then compress.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from time import perf_counter

from sanic import HTTPResponse, Request, Sanic

from catalog.db import start_counting
from config.settings import Settings

access_logger = logging.getLogger("catalog.access")
JSON_TYPE = "application/json"


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (RFC 9110 12.5.3: ``q=0`` means "not acceptable")."""
    if not header:
        return False
    explicit: float | None = None
    wildcard: float | None = None
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            explicit = quality
        elif coding == "*":
            wildcard = quality
    chosen = explicit if explicit is not None else wildcard
    return chosen is not None and chosen > 0


def entity_tag(body: bytes, gzipped: bool) -> str:
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    # A gzip body is another representation of the same resource: it gets its own strong tag.
    return f'"{digest}-gz"' if gzipped else f'"{digest}"'


def if_none_match_hits(header: str | None, tag: str) -> bool:
    """Weak comparison, as RFC 9110 13.1.2 prescribes for If-None-Match on GET and HEAD."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    opaque = tag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == opaque for candidate in header.split(","))


def setup_http(app: Sanic, settings: Settings) -> None:
    @app.on_request(priority=100)
    async def start_timing(request: Request) -> None:
        request.ctx.started = perf_counter()
        request.ctx.sql = start_counting()

    @app.on_response(priority=100)
    async def finish_response(request: Request, response: HTTPResponse) -> HTTPResponse | None:
        response = conditional_and_compressed(request, response, settings)
        log_timing(request, response, settings)
        return response


def conditional_and_compressed(request: Request, response: HTTPResponse, settings: Settings) -> HTTPResponse:
    if request.method not in ("GET", "HEAD") or response.status != 200 or not response.body:
        return response
    if not (response.content_type or "").startswith(JSON_TYPE):
        return response
    body = response.body
    gzipped = len(body) > settings.gzip_min_bytes and accepts_gzip(request.headers.get("accept-encoding"))
    vary = ", ".join(filter(None, ("Accept-Encoding", response.headers.get("vary"))))
    headers = {"ETag": entity_tag(body, gzipped), "Vary": vary, "Cache-Control": "no-cache"}
    if if_none_match_hits(request.headers.get("if-none-match"), headers["ETag"]):
        return HTTPResponse(status=304, headers=headers)
    response.headers.update(headers)
    if gzipped:
        response.body = gzip.compress(body, compresslevel=settings.gzip_level)
        response.headers["Content-Encoding"] = "gzip"
    return response


def log_timing(request: Request, response: HTTPResponse, settings: Settings) -> None:
    started = getattr(request.ctx, "started", None)
    if started is None:  # failed before the request middleware ran (e.g. malformed request line)
        return
    elapsed_ms = (perf_counter() - started) * 1000
    statements = request.ctx.sql.statements
    response.headers["Server-Timing"] = f"total;dur={elapsed_ms:.1f}"
    slow = elapsed_ms > settings.slow_request_ms
    access_logger.log(
        logging.WARNING if slow else logging.INFO,
        "%s %s %d %.1fms sql=%d%s",
        request.method, request.path, response.status, elapsed_ms, statements, " SLOW" if slow else "",
    )
