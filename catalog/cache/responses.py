"""Finished GET responses kept whole, so that a hit runs no SQL and does no serialisation or
compression, and a miss is computed once however many requests wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from sanic import Request

from catalog.cache.backends import Kept
from catalog.cache.local import LocalEntries, Mark
from catalog.cache.resilient import ResilientCache
from catalog.representation import Representation
from config.settings import Settings


@dataclass(frozen=True, slots=True)
class Produced:
    """A response made on a cache miss: its JSON body, extra headers, and whether it may be kept."""

    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    cacheable: bool = True
    status: int = 200
    # Generations it depends on beyond its entry's, with their values as read before the body was made
    # (a page's products): the kept entry is good only while they hold. None: unknown, so it is not kept.
    checks: Mapping[str, str] | None = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Asking:
    """A lookup under way, for the requests of the same key that come meanwhile: its answer is theirs while
    this worker has processed no invalidation since it began (``drops``, as in ``Mark``)."""

    drops: int
    answer: asyncio.Future[tuple[Representation, str]]


class ResponseCache:
    """Read-through cache of finished GET responses, one computation per missing entry across workers.

    Within a worker, the requests that miss the same entry share one computation as well: the one that
    holds the entry's lock, or, when another worker held it too long, the first that gave up waiting.
    """

    def __init__(self, cache: ResilientCache, settings: Settings, local: LocalEntries | None) -> None:
        self.cache = cache
        self.settings = settings
        self.local = local  # this worker's copies, asked before Redis
        self.productions: dict[str, asyncio.Future[Representation]] = {}
        self.asking: dict[str, Asking] = {}  # lookups under way in this worker, by request

    async def serve(
        self,
        request: Request,
        key: str,
        dependencies: Sequence[str],
        produce: Callable[[], Awaitable[Produced]],
    ) -> Representation:
        """The response for ``key``, made by ``produce`` when it is missing."""
        if not self.settings.cache_responses:
            await self.cache.load_write_position()
            return await self._produce(None, produce)
        # Links in a body name the scheme and host it was asked for: one client's must not reach another.
        base = f"{request.scheme}://{request.host}{key}"
        # Copies stay in use while Redis is skipped after timeouts: the listener vouches for them on its own.
        local = self.local if self.cache.writes_confirmed else None
        if local is None:
            representation, request.ctx.cache = await self._look_up(base, dependencies, produce, None)
            return representation
        if (representation := local.get(base)) is not None:
            request.ctx.cache = "local"
            return representation
        mark = local.mark()
        asking = self.asking.get(base)
        if asking is not None and asking.drops == mark.drops and local.live():
            # Another request of this worker is looking it up, and no write was announced since it began:
            # its answer is this request's too. When a hot entry expires, hundreds of requests miss their
            # copies at once; each looking up on its own took the Redis pool over, and those it turned away
            # went to PostgreSQL.
            representation, request.ctx.cache = await asyncio.shield(asking.answer)
            local.count_shared(request.ctx.cache)
            return representation
        # A task of its own: a client that leaves does not cancel what the others wait for.
        asking = self.asking[base] = Asking(mark.drops, asyncio.ensure_future(
            self._look_up(base, dependencies, produce, mark)))
        asking.answer.add_done_callback(partial(self._finished, self.asking, base, asking))
        representation, request.ctx.cache = await asyncio.shield(asking.answer)
        return representation

    @staticmethod
    def _finished(under_way: dict[str, Any], key: str, held: object, done: asyncio.Future) -> None:
        """A lookup or production is done: it leaves ``under_way`` (unless another took its place)."""
        if under_way.get(key) is held:
            del under_way[key]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters have it, or have all gone

    async def _look_up(
        self, base: str, dependencies: Sequence[str], produce: Callable[[], Awaitable[Produced]], mark: Mark | None
    ) -> tuple[Representation, str]:
        """The response from Redis, or made; with what the cache did (``hit``, ``miss``, ``off``). A copy is
        kept in this worker when ``mark`` is given (taken before the lookup)."""
        local = self.local if mark is not None else None
        lookup = await self.cache.lookup(base, dependencies, "r")
        value, entry = lookup.value, lookup.key
        if value is None and entry is not None and not lookup.leader and entry not in self.productions:
            value = await self.cache.wait_for_fill(entry)
        if value is not None:
            representation = Representation.decode(value)
            if local is not None and lookup.value is not None:
                local.put(base, representation, [*dependencies, *lookup.checks], mark, lookup.ttl_s)
            return representation, "hit"
        if entry is None:
            return await self._produce(None, produce), "off"
        production = self.productions.get(entry)
        if production is None:
            # A task of its own, as above: the requests of other keys sharing this entry wait for it too.
            keep = partial(local.put, base, mark=mark, ttl=self.settings.entry_ttl) if local is not None else None
            production = self.productions[entry] = asyncio.ensure_future(self._produce(entry, produce, keep, dependencies))
            production.add_done_callback(partial(self._finished, self.productions, entry, production))
        return await asyncio.shield(production), "miss"

    async def _produce(self, entry: str | None, produce: Callable[[], Awaitable[Produced]],
                       keep_locally: Callable[..., None] | None = None, dependencies: Sequence[str] = ()) -> Representation:
        async def make() -> tuple[Representation, Kept | None]:
            produced = await produce()
            body = orjson.dumps(produced.body)
            if not produced.cacheable or produced.checks is None or entry is None:
                # Sent, not stored: compressed (when answering) only for clients that take gzip.
                return Representation.of(body, produced.headers, status=produced.status), None
            representation = Representation.for_cache(body, produced.headers, self.settings, produced.status)
            if keep_locally is not None:
                keep_locally(representation, [*dependencies, *produced.checks])
            return representation, Kept(representation.encode(), produced.checks)

        if entry is None:
            return (await make())[0]
        return await self.cache.compute(entry, make)
