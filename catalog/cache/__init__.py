"""The cache of a worker: finished responses, list totals, page anchors and each product's JSON, in
Redis or in process, behind a circuit breaker, invalidated exactly by generation numbers.

One module per concern: ``backends`` (where entries live), ``resilient`` (the breaker), ``responses``,
``counts``, ``anchors``, ``fragments``, ``invalidation`` (what a product write makes stale), ``local``
(each worker's copy of the responses it served last) and ``coherence`` (how a write reaches those copies). Here they
are put together: what a worker keeps (``Caches``), what the workers of a host share (``SharedState``), and
``open_caches``.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import Value
from multiprocessing.sharedctypes import Synchronized

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sanic import Sanic

from catalog import events
from catalog.cache.anchors import PageAnchors
from catalog.cache.backends import MemoryBackend, RedisBackend
from catalog.cache.coherence import CHANNEL_TIMEOUT_S, Coherence
from catalog.cache.counts import ProductTotals
from catalog.cache.fragments import ProductFragments
from catalog.cache.invalidation import product_write_effects
from catalog.cache.local import LocalEntries
from catalog.cache.pool import POOL_WAIT_S, WaitingConnectionPool, tls_arguments
from catalog.cache.resilient import ResilientCache
from catalog.cache.responses import ResponseCache
from catalog.domain import ProductState
from catalog.replicas import primary_position
from config.settings import Settings


@dataclass(slots=True)
class Caches:
    """What a worker keeps on ``app.ctx.caches``."""

    store: ResilientCache
    responses: ResponseCache
    totals: ProductTotals
    anchors: PageAnchors
    fragments: ProductFragments

    async def close(self) -> None:
        await self.totals.close()
        await self.store.close()


@dataclass(frozen=True, slots=True)
class SharedState:
    """Counters shared by the workers of one host (multiprocessing values made by the main process)."""

    generation: Synchronized  # the in-process cache's generation, bumped by every product write
    unconfirmed_writes: Synchronized  # writes whose invalidation has not reached Redis yet
    write_position: Synchronized  # the in-process cache's latest write position, with replicas (0: unknown)

    @classmethod
    def new(cls) -> SharedState:
        return cls(Value("q", 0), Value("q", 0), Value("Q", 0))


def open_caches(settings: Settings, shared: SharedState) -> Caches:
    """Redis when REDIS_URL is set (a client per worker, bounded timeouts), else the in-process stand-in."""
    if settings.redis_url:
        pool = WaitingConnectionPool.from_url(
            settings.redis_url,
            **tls_arguments(settings),
            # Requests beyond the pool wait for a connection (redis-py's default pool raises instead,
            # which under 500 concurrent requests read as Redis being down).
            max_connections=settings.redis_max_connections,
            timeout=POOL_WAIT_S,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_connect_timeout,
            # No retries: the breaker decides when to try again, so a dead Redis costs a bounded wait.
            retry=Retry(NoBackoff(), 0),
        )
        client = redis.Redis(connection_pool=pool)
        local = LocalEntries(int(settings.cache_local_mb * 2**20)) if settings.cache_local_mb else None
        # The listener's connections of its own, which wait on announcements without the pool's call timeout.
        subscriber = redis.Redis.from_url(settings.redis_url, **tls_arguments(settings), socket_timeout=CHANNEL_TIMEOUT_S,
                                          socket_connect_timeout=settings.redis_connect_timeout, retry=Retry(NoBackoff(), 0))
        coherence = Coherence(client, subscriber, local, settings)
        coherence.start()
        store = ResilientCache(RedisBackend(client, settings, coherence), settings, "Redis", shared.unconfirmed_writes)
    else:
        local = None  # the in-process stand-in is local already
        backend = MemoryBackend(shared.generation, shared.write_position, settings)
        store = ResilientCache(backend, settings, "in-process cache", shared.unconfirmed_writes)
    return Caches(
        store,
        ResponseCache(store, settings, local),
        ProductTotals(store, settings),
        PageAnchors(store, settings),
        ProductFragments(store, settings),
    )


async def forget_cached(settings: Settings) -> None:
    """Every cached entry dropped, on every worker of every instance and their local copies, before this
    returns: for changes made directly in the tables (``catalog forget-cache``), which otherwise show within
    CACHE_TTL."""
    client = redis.Redis.from_url(settings.redis_url, **tls_arguments(settings))
    try:
        await RedisBackend(client, settings).forget_everything()
    finally:
        await client.aclose()


def react_to_product_writes(app: Sanic) -> None:
    """The cache's handlers of ``catalog.events``, on the worker's ``app.ctx.caches``.

    One handler for a change, not one for responses and one for counts: the generations a write bumps and
    the counts it adjusts go to Redis in one script, so no request sees the one without the other.
    """

    @app.signal(events.PRODUCT_WRITE_STARTED)
    async def write_started() -> None:
        await app.ctx.caches.store.write_started()

    @app.signal(events.PRODUCT_WRITE_ENDED)
    async def write_ended() -> None:
        await app.ctx.caches.store.write_finished()

    @app.signal(events.PRODUCT_CHANGED)
    async def product_changed(product_id: int, before: ProductState | None, after: ProductState | None) -> None:
        generations, deltas = product_write_effects(product_id, before, after)
        store = app.ctx.caches.store
        # After the commit: the position a replica must have replayed to show this write.
        position = await primary_position() if store.tracks_positions else None
        await store.product_written(generations, deltas, position)
