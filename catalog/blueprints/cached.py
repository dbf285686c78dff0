"""Caching declared by a GET route: ``@cached(entry)`` says what the response is kept under and which
generations make it stale; the handler below it reads as parse -> query -> serialise, returns what it made
(``Produced``), and runs only on a miss (once for every worker waiting on the same entry).

The route hands the representation to the HTTP middleware (``catalog.http.represent``), which answers
200, 304 or gzip the same way for cached and uncached responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial, wraps
from typing import Generic, TypeVar

from sanic import HTTPResponse, Request

from catalog.cache.responses import Produced
from catalog.representation import JSON_TYPE

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A GET request parsed: its values for the handler, its cache key (the normalised request) and what it
    depends on."""

    value: T
    key: str
    dependencies: Sequence[str]


Handler = Callable[[Request, T], Awaitable[Produced]]

# How many parsed requests an app keeps, all routes together (a list request's takes about a kilobyte).
PARSED_KEPT = 4096


class ParsedRequests:
    """An app's parsed requests by route and by the URL they were asked with: most requests repeat a URL the
    worker has seen, and parsing one (validation, its cache key, what it depends on) was a twentieth of a
    cached hit. Parsing reads only the URL and the app (its cursor secret), so the same URL parses the same;
    one that fails (a 4xx) is not kept, and fails again each time. The oldest go first past ``limit``."""

    def __init__(self, limit: int = PARSED_KEPT) -> None:
        self.limit = limit
        self.kept: dict[tuple[Callable[..., Entry], bytes], Entry] = {}

    def get(self, request: Request, parse: Callable[..., Entry[T]], path: dict[str, str]) -> Entry[T]:
        key = (parse, request.raw_url)
        parsed = self.kept.get(key)
        if parsed is None:
            parsed = self.kept[key] = parse(request, **path)
            if len(self.kept) > self.limit:
                del self.kept[next(iter(self.kept))]
        return parsed


def cached(entry: Callable[..., Entry[T]]) -> Callable[[Handler[T]], Callable[..., Awaitable[HTTPResponse]]]:
    """``entry(request, **path_parameters)`` parses the request (a 4xx raised here costs no cache call)."""

    def decorate(handler: Handler[T]) -> Callable[..., Awaitable[HTTPResponse]]:
        @wraps(handler)
        async def route(request: Request, **path: str) -> HTTPResponse:
            parsed = request.app.ctx.parsed_requests.get(request, entry, path)
            representation = await request.app.ctx.caches.responses.serve(
                request, parsed.key, parsed.dependencies, partial(handler, request, parsed.value)
            )
            request.ctx.representation = representation
            return HTTPResponse(
                representation.body, status=representation.status, headers=representation.headers,
                content_type=JSON_TYPE,
            )

        return route

    return decorate
