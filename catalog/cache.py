"""Caching of finished responses and of product counts, invalidated exactly by generation numbers.

Every cached response names the generations it depends on: ``all`` (bumped by any product write),
``c<id>`` (a category's products), ``p<id>`` (one product), ``categories`` (never bumped through the API).
``m<count name>`` is bumped only when a write moves a product in or out of a counted list: the page
anchors of that list (``PageAnchors``) depend on it.
The generations' current values are part of the entry's key, so a write that bumps them makes every
entry it affects unreachable for all workers at once; the lookup reads generations and entry in one
Redis round trip (a Lua script). A global ``epoch`` in every key drops everything, used when a write
could not reach Redis.

Counts are not invalidated but adjusted: a write that moves a product in or out of a filter adds or
subtracts one, so price or name changes keep them, and a count is never recomputed after a write.
A counted value is kept only if no product write began or was in flight while it was counted (a
version number and a count of writes in flight), so a count can never include a write that is then
added to it again.

Redis failing (down, slow, flushed) only makes requests slower: every call is bounded by a short
timeout, and a circuit breaker skips Redis for a while after a failure. Without REDIS_URL an
in-process cache stands in, invalidated through one generation shared by all workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import Value
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol, TypeVar

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sanic import HTTPResponse, Request

from catalog import queries
from catalog.domain import Keyset, ProductFilter, ProductState
from catalog.representation import Representation
from catalog.stats import current_stats, detach_request_stats
from config.settings import Settings

logger = logging.getLogger("catalog.cache")

# Generations outlive every entry made under them, so a generation key that expires and restarts at 0
# can never bring back an old entry.
GENERATION_TTL_S = 86_400
# How long one worker may hold the right to compute a missing entry before another may.
FILL_LOCK_MS = 2_000
FOLLOWER_POLL_S = 0.01
FOLLOWER_WAIT_S = 1.0
BREAKER_FAILURES = 3
POOL_WAIT_S = 1.0
# How often a worker that owes an epoch bump tries Redis again (the other workers wait on it).
EPOCH_RETRY_S = 0.05


class PoolBusy(Exception):
    """Every Redis connection of this worker stayed in use for POOL_WAIT_S: the worker is busy, not Redis."""


class WaitingConnectionPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, whose wait that ran out is told apart from Redis failing."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except redis.ConnectionError as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):  # the wait, not a connect that failed
                raise PoolBusy from error
            raise


REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError, PoolBusy)

T = TypeVar("T")

ALL_PRODUCTS = "all"
CATEGORIES = "categories"


def product_generation(product_id: int) -> str:
    return f"p{product_id}"


def category_generation(category_id: int) -> str:
    return f"c{category_id}"


def count_name(filters: ProductFilter) -> str:
    return f"{int(filters.is_active)}:{filters.category_id if filters.category_id is not None else '*'}"


def membership_generation(filters: ProductFilter) -> str:
    return f"m{count_name(filters)}"


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str | None  # None: caching is off or unavailable for this request
    value: bytes | None = None
    leader: bool = True  # whether this request computes the entry (others wait for it)


@dataclass(frozen=True, slots=True)
class CountRead:
    value: int | None
    ttl_s: float
    version: str


class Backend(Protocol):
    async def lookup(self, base: str, dependencies: Sequence[str]) -> Lookup: ...
    async def peek(self, key: str) -> bytes | None: ...
    async def fill(self, key: str, value: bytes) -> None: ...
    async def release(self, key: str) -> None: ...
    async def write_started(self) -> None: ...
    async def write_finished(self) -> None: ...
    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int]) -> None: ...
    async def read_count(self, name: str) -> CountRead: ...
    async def write_count(self, name: str, value: int, version: str) -> None: ...
    async def forget_everything(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


# KEYS: epoch, generations...  ARGV: entry key base, lock milliseconds.
LOOKUP = """
local parts = {ARGV[1], redis.call('GET', KEYS[1]) or '0'}
for i = 2, #KEYS do parts[#parts + 1] = redis.call('GET', KEYS[i]) or '0' end
local key = table.concat(parts, '|')
local value = redis.call('GET', key)
if value then return {key, value, 0} end
if redis.call('SET', key .. '|lock', '1', 'NX', 'PX', ARGV[2]) then return {key, false, 1} end
return {key, false, 0}
"""
# KEYS: epoch, counts version.  ARGV: count key prefix, names..., deltas...
ADJUST_COUNTS = """
local prefix = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':'
local n = (#ARGV - 1) / 2
for i = 1, n do
  local key = prefix .. ARGV[1 + i]
  if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[1 + n + i]) end
end
redis.call('INCR', KEYS[2])
return n
"""
# KEYS: epoch, counts version.  ARGV: count key prefix, name.
READ_COUNT = """
local key = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':' .. ARGV[2]
return {redis.call('GET', key), redis.call('PTTL', key), redis.call('GET', KEYS[2]) or '0'}
"""
# KEYS: epoch, counts version, writes in flight.  ARGV: count key prefix, name, version seen before
# counting, value, ttl ms.  Kept only if no write began or was in flight meanwhile.
WRITE_COUNT = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then return 0 end
local key = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':' .. ARGV[2]
redis.call('SET', key, ARGV[4], 'PX', ARGV[5])
return 1
"""
# A worker that dies mid-write leaves its mark; it fades, so counts are not refused for long.
WRITE_MARK_TTL_S = 60


class RedisBackend:
    """The cache in Redis, shared by all workers; one client (and pool) per worker."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.prefix = settings.cache_prefix
        self.ttl_ms = int(settings.cache_ttl * 1000)
        self.epoch = f"{self.prefix}:epoch"
        self.counts_version = f"{self.prefix}:counts_version"
        self.writes_in_flight = f"{self.prefix}:writes_in_flight"
        self._lookup = client.register_script(LOOKUP)
        self._adjust = client.register_script(ADJUST_COUNTS)
        self._read_count = client.register_script(READ_COUNT)
        self._write_count = client.register_script(WRITE_COUNT)

    def _generation(self, name: str) -> str:
        return f"{self.prefix}:g:{name}"


    async def lookup(self, base: str, dependencies: Sequence[str]) -> Lookup:
        keys = [self.epoch, *(self._generation(name) for name in dependencies)]
        key, value, leader = await self._lookup(keys=keys, args=[f"{self.prefix}:r:{base}", FILL_LOCK_MS])
        return Lookup(key.decode(), value, bool(leader) or value is not None)

    async def peek(self, key: str) -> bytes | None:
        return await self.client.get(key)

    async def fill(self, key: str, value: bytes) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(key, value, px=self.ttl_ms).delete(f"{key}|lock")
            await pipe.execute()

    async def release(self, key: str) -> None:
        await self.client.delete(f"{key}|lock")

    async def write_started(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(self.writes_in_flight).expire(self.writes_in_flight, WRITE_MARK_TTL_S).incr(self.counts_version)
            await pipe.execute()

    async def write_finished(self) -> None:
        await self.client.decr(self.writes_in_flight)

    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in generations:
                pipe.incr(self._generation(name)).expire(self._generation(name), GENERATION_TTL_S)
            names = list(deltas)
            await self._adjust(
                keys=[self.epoch, self.counts_version],
                args=[f"{self.prefix}:n:", *names, *(deltas[name] for name in names)],
                client=pipe,
            )
            await pipe.execute()

    async def read_count(self, name: str) -> CountRead:
        value, ttl_ms, version = await self._read_count(
            keys=[self.epoch, self.counts_version], args=[f"{self.prefix}:n:", name]
        )
        return CountRead(None if value is None else int(value), max(ttl_ms, 0) / 1000, version.decode())

    async def write_count(self, name: str, value: int, version: str) -> None:
        await self._write_count(
            keys=[self.epoch, self.counts_version, self.writes_in_flight],
            args=[f"{self.prefix}:n:", name, version, value, self.ttl_ms],
        )

    async def forget_everything(self) -> None:
        await self.client.incr(self.epoch)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


class MemoryBackend:
    """In-process stand-in for Redis: entries per worker, one generation shared by all workers.

    Any product write bumps the shared generation, which is part of every key, so no worker serves an
    entry older than the last write (coarser than Redis's per-dependency generations).
    """

    def __init__(self, generation: Synchronized, settings: Settings) -> None:
        self.generation = generation
        self.ttl = settings.cache_ttl
        self.entries: dict[str, tuple[float, Any]] = {}

    def _get(self, key: str) -> Any:
        found = self.entries.get(key)
        if found is None or found[0] <= time.monotonic():
            self.entries.pop(key, None)
            return None
        return found[1]

    def _set(self, key: str, value: Any) -> None:
        if len(self.entries) > 10_000:  # bounded: drop what has expired, then the oldest half
            now = time.monotonic()
            self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
            for key_to_drop in list(self.entries)[: len(self.entries) // 2]:
                del self.entries[key_to_drop]
        self.entries[key] = (time.monotonic() + self.ttl, value)

    async def lookup(self, base: str, dependencies: Sequence[str]) -> Lookup:
        key = f"{base}|{self.generation.value}"
        return Lookup(key, self._get(key))

    async def peek(self, key: str) -> bytes | None:
        return self._get(key)

    async def fill(self, key: str, value: bytes) -> None:
        self._set(key, value)

    async def release(self, key: str) -> None:
        """Nothing to release: in process, every worker computes its own entries."""

    async def write_started(self) -> None:
        """Nothing to mark: counts here are keyed by the generation, which the write bumps."""

    async def write_finished(self) -> None:
        """See write_started."""

    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int]) -> None:
        with self.generation.get_lock():
            self.generation.value += 1

    async def read_count(self, name: str) -> CountRead:
        key = f"n:{name}|{self.generation.value}"
        found = self.entries.get(key)
        if found is None or found[0] <= time.monotonic():
            return CountRead(None, 0.0, str(self.generation.value))
        return CountRead(found[1], found[0] - time.monotonic(), str(self.generation.value))

    async def write_count(self, name: str, value: int, version: str) -> None:
        if version == str(self.generation.value):
            self._set(f"n:{name}|{version}", value)

    async def forget_everything(self) -> None:
        self.entries.clear()

    async def ping(self) -> None:
        """Always there: it is this process."""

    async def close(self) -> None:
        self.entries.clear()


class ResilientCache:
    """A backend behind a circuit breaker: Redis trouble means misses, never errors.

    After a failure Redis is skipped for ``redis_retry_after`` seconds, then tried again. A write whose
    invalidation did not reach Redis leaves entries that may be stale, so until an epoch bump succeeds
    no worker on this host reads the cache (``unconfirmed_writes`` is shared between them), and the
    writer keeps retrying the bump in the background.
    """

    def __init__(self, backend: Backend, settings: Settings, name: str, unconfirmed_writes: Synchronized) -> None:
        self.backend = backend
        self.name = name
        self.retry_after = settings.redis_retry_after
        self.open_until = 0.0
        self.failures_in_a_row = 0
        self.unconfirmed_writes = unconfirmed_writes
        self.stale_entries_possible = False  # this worker owes an epoch bump
        self._epoch_task: asyncio.Task | None = None
        self.polls: dict[str, asyncio.Future[bytes | None]] = {}

    @property
    def available(self) -> bool:
        return self.unconfirmed_writes.value == 0 and time.monotonic() >= self.open_until

    def _failed(self, error: BaseException, *, at_once: bool = False) -> None:
        """Open the breaker after BREAKER_FAILURES failures in a row (a busy event loop may make one call
        late), or at once when a write's bookkeeping failed."""
        self.failures_in_a_row += 1
        if not at_once and self.failures_in_a_row < BREAKER_FAILURES:
            return
        if time.monotonic() >= self.open_until:
            logger.warning("%s unavailable, serving without it for %.1f s: %r", self.name, self.retry_after, error)
        self.open_until = time.monotonic() + self.retry_after

    async def _call(self, call: Callable[[], Awaitable[Any]], fallback: Any) -> Any:
        if not self.available:
            return fallback
        started = time.perf_counter()
        try:
            result = await call()
            self.failures_in_a_row = 0
            return result
        except PoolBusy:
            # Under load the worker's own requests hold every connection: a miss, but no sign that Redis
            # is down (counted as one, the breaker opened under the heaviest load and made it heavier).
            return fallback
        except REDIS_FAILURES as error:
            self._failed(error)
            return fallback
        finally:
            stats = current_stats()
            if stats is not None:
                stats.cache_seconds += time.perf_counter() - started

    async def lookup(self, base: str, dependencies: Sequence[str]) -> Lookup:
        return await self._call(lambda: self.backend.lookup(base, dependencies), Lookup(None))

    async def peek(self, key: str) -> bytes | None:
        return await self._call(lambda: self.backend.peek(key), None)

    async def wait_for_fill(self, key: str) -> bytes | None:
        """The entry another request is computing (it holds the lock), once there; None after a while.

        The requests of this worker waiting for the same entry share one poll: under load hundreds wait
        for the same invalidated page, and each polling on its own took Redis's connection pool over.
        """
        poll = self.polls.get(key)
        if poll is None:
            poll = self.polls[key] = asyncio.ensure_future(self._poll(key))
            poll.add_done_callback(lambda _: self.polls.pop(key, None))
        return await asyncio.shield(poll)  # one waiter cancelled does not stop the others' poll

    async def _poll(self, key: str) -> bytes | None:
        deadline = time.monotonic() + FOLLOWER_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(FOLLOWER_POLL_S)
            value = await self.peek(key)
            if value is not None:
                return value
        return None

    async def fill(self, key: str, value: bytes) -> None:
        await self._call(lambda: self.backend.fill(key, value), None)

    async def compute(self, key: str, make: Callable[[], Awaitable[tuple[T, bytes | None]]]) -> T:
        """Make the entry whose lock this request holds: ``make`` gives a result and the bytes to keep
        (None: keep nothing). The lock is released when nothing is kept or ``make`` fails, so the next
        request computes the entry at once rather than wait for the lock to expire."""
        try:
            result, kept = await make()
        except BaseException:
            await self.release(key)
            raise
        if kept is None:
            await self.release(key)
        else:
            await self.fill(key, kept)
        return result

    async def release(self, key: str) -> None:
        await self._call(lambda: self.backend.release(key), None)

    async def read_count(self, name: str) -> CountRead | None:
        return await self._call(lambda: self.backend.read_count(name), None)

    async def write_count(self, name: str, value: int, version: str) -> None:
        await self._call(lambda: self.backend.write_count(name, value, version), None)

    async def write_started(self) -> None:
        await self._must_reach(self.backend.write_started)

    async def write_finished(self) -> None:
        await self._call(self.backend.write_finished, None)

    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int]) -> None:
        """Invalidate before the write's response returns."""
        await self._must_reach(lambda: self.backend.product_written(generations, deltas))

    async def _must_reach(self, call: Callable[[], Awaitable[None]]) -> None:
        """A write's bookkeeping: if Redis cannot be told, stop trusting what it holds."""
        try:
            if time.monotonic() < self.open_until:
                raise ConnectionError("circuit open")
            await call()
        except REDIS_FAILURES as error:
            self._failed(error, at_once=True)
            if not self.stale_entries_possible:
                self.stale_entries_possible = True
                with self.unconfirmed_writes.get_lock():
                    self.unconfirmed_writes.value += 1
            if self._epoch_task is None or self._epoch_task.done():
                self._epoch_task = asyncio.create_task(self._forget_everything_when_back())

    async def _forget_everything_when_back(self) -> None:
        while True:
            try:
                await self.backend.forget_everything()
            except REDIS_FAILURES:
                await asyncio.sleep(EPOCH_RETRY_S)
                continue
            self.stale_entries_possible = False
            with self.unconfirmed_writes.get_lock():
                self.unconfirmed_writes.value -= 1
            self.open_until = 0.0
            logger.info("%s back: dropped the entries a write could not invalidate", self.name)
            return

    async def ping(self) -> str:
        """The backend's state for a readiness probe, asked directly (the breaker does not answer it)."""
        try:
            await self.backend.ping()
        except REDIS_FAILURES as error:
            return f"unavailable: {error.__class__.__name__}"
        return "ok"

    async def close(self) -> None:
        if self._epoch_task is not None:
            self._epoch_task.cancel()
        await self.backend.close()


def product_write_effects(
    product_id: int, before: ProductState | None, after: ProductState | None
) -> tuple[list[str], dict[str, int]]:
    """The generations a product write makes stale, and how it moves the counts.

    ``before`` is None for a creation, ``after`` None for a deletion.
    """
    generations = [ALL_PRODUCTS, product_generation(product_id)]
    for state in (before, after):
        if state is not None and state.category_id is not None:
            generations.append(category_generation(state.category_id))
    deltas: Counter[ProductFilter] = Counter()
    if before != after:
        for state, sign in ((before, -1), (after, +1)):
            if state is None:
                continue
            deltas[ProductFilter(state.is_active)] += sign
            if state.category_id is not None:
                deltas[ProductFilter(state.is_active, state.category_id)] += sign
    moved = [filters for filters, delta in deltas.items() if delta]
    generations += [membership_generation(filters) for filters in moved]
    return list(dict.fromkeys(generations)), {count_name(filters): deltas[filters] for filters in moved}


@dataclass(frozen=True, slots=True)
class Produced:
    """A response made on a cache miss: its JSON body, extra headers, and whether it may be kept."""

    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    cacheable: bool = True
    status: int = 200


class ResponseCache:
    """Read-through cache of finished GET responses, one computation per missing entry across workers.

    Within a worker, the requests that miss the same entry share one computation as well: the one that
    holds the entry's lock, or, when another worker held it too long, the first that gave up waiting.
    """

    def __init__(self, cache: ResilientCache, settings: Settings) -> None:
        self.cache = cache
        self.settings = settings
        self.productions: dict[str, asyncio.Future[Representation]] = {}

    async def serve(
        self,
        request: Request,
        key: str,
        dependencies: Sequence[str],
        produce: Callable[[], Awaitable[Produced]],
    ) -> HTTPResponse:
        """The response for ``key``, made by ``produce`` when it is missing."""
        if not self.settings.cache_responses:
            return (await self._produce(None, produce)).respond(request, self.settings)
        # Links in a body name the scheme and host it was asked for: one client's must not reach another.
        lookup = await self.cache.lookup(f"{request.scheme}://{request.host}{key}", dependencies)
        value, entry = lookup.value, lookup.key
        if value is None and entry is not None and not lookup.leader and entry not in self.productions:
            value = await self.cache.wait_for_fill(entry)
        if value is not None:
            request.ctx.cache = "hit"
            return Representation.decode(value).respond(request, self.settings)
        request.ctx.cache = "miss" if entry is not None else "off"
        if entry is None:
            return (await self._produce(None, produce)).respond(request, self.settings)
        production = self.productions.get(entry)
        if production is None:
            # A task of its own: a client that leaves does not cancel what the others wait for.
            production = self.productions[entry] = asyncio.ensure_future(self._produce(entry, produce))
            production.add_done_callback(partial(self._production_done, entry))
        return (await asyncio.shield(production)).respond(request, self.settings)

    def _production_done(self, entry: str, production: asyncio.Future[Representation]) -> None:
        del self.productions[entry]
        if not production.cancelled():
            production.exception()  # retrieved: its waiters have it, or have all gone

    async def _produce(self, entry: str | None, produce: Callable[[], Awaitable[Produced]]) -> Representation:
        async def make() -> tuple[Representation, bytes | None]:
            produced = await produce()
            body = orjson.dumps(produced.body)
            representation = Representation.for_cache(body, produced.headers, self.settings, produced.status)
            # An estimated total is not kept.
            return representation, representation.encode() if produced.cacheable and entry is not None else None

        if entry is None:
            return (await make())[0]
        return await self.cache.compute(entry, make)


class PageAnchors:
    """Where ``page=N`` of a list in the default order starts, without an OFFSET over every row before it.

    The anchors of a counted list (is_active, category_id) are the ids of its rows ``every``, 2 *
    ``every``, ...; page=N then skips at most ``every`` rows past the nearest one. They are kept like a
    response, under the list's membership generation: only writes that move a product in or out of the
    list shift positions in id order (a price or name change does not). One request computes missing
    anchors while the others wait for them (a while: then, as while Redis is unavailable, plain OFFSET).
    """

    def __init__(self, cache: ResilientCache, settings: Settings) -> None:
        self.cache = cache
        self.every = settings.page_anchor_every

    async def start(self, filters: ProductFilter, skip: int) -> tuple[Keyset | None, int]:
        """The row to start after (None: the list's start) and how many rows to skip from there."""
        if skip < self.every or filters.narrowed:
            return None, skip
        anchors = await self._anchors(filters)
        block = min(skip // self.every, len(anchors or ()))
        if not block:
            return None, skip
        return Keyset(None, anchors[block - 1]), skip - block * self.every  # type: ignore[index]

    async def _anchors(self, filters: ProductFilter) -> list[int] | None:
        lookup = await self.cache.lookup(f"anchors/{count_name(filters)}/{self.every}", [membership_generation(filters)])
        if lookup.key is None:
            return None
        value = lookup.value if lookup.leader else await self.cache.wait_for_fill(lookup.key)
        if value is not None:
            return orjson.loads(value)
        if not lookup.leader:
            return None

        async def make() -> tuple[list[int], bytes]:
            anchors = await queries.page_anchors(filters, self.every)
            return anchors, orjson.dumps(anchors)

        return await self.cache.compute(lookup.key, make)


class ProductTotals:
    """``total`` of a product list: from the count cache, else counted, else estimated (large lists).

    A list of up to ``exact_count_max_rows`` products is counted at once: one statement, a count that
    stops just past that many rows, says whether the list is that small and, if so, how many it holds.
    A larger list answers the planner's estimate (marked as one) and is counted in the background for
    the next request. Only exact counts are kept, so a write's +1/-1 never adjusts an estimate. The rule
    does not depend on the cache, so Redis down, back or flushed does not change a small list's total.
    A request never waits on a count that is cached: one close to expiry is refreshed in the background.
    """

    def __init__(self, cache: ResilientCache, settings: Settings) -> None:
        self.cache = cache
        self.ttl = settings.cache_ttl
        self.exact_max = settings.exact_count_max_rows
        self.tasks: dict[str, asyncio.Task] = {}

    async def total(self, filters: ProductFilter) -> tuple[int, bool]:
        """The total, and whether it is exact.

        Counts under a price range or a name search are not kept: writes could move products in or out
        of them without the count being told. Their pages are cached whole, total included.
        """
        if filters.narrowed:
            return await queries.count_products(filters), True
        name = count_name(filters)
        read = await self.cache.read_count(name)
        if read is not None and read.value is not None:
            if read.ttl_s < self.ttl / 3:
                self._in_background(name, self._recount(filters, name))
            return read.value, True
        counted = await queries.count_products_up_to(filters, self.exact_max + 1)
        if counted <= self.exact_max:
            if read is not None:
                await self.cache.write_count(name, counted, read.version)
            return counted, True
        if read is not None:  # else there is nowhere to keep the count
            self._in_background(name, self._recount(filters, name))
        # The planner may guess fewer than were just counted.
        return max(await queries.estimate_products(filters), counted), False

    async def _recount(self, filters: ProductFilter, name: str) -> None:
        detach_request_stats()  # a task of its own: its statements are not the request's that started it
        read = await self.cache.read_count(name)
        if read is None:
            return
        await self.cache.write_count(name, await queries.count_products(filters), read.version)

    def _in_background(self, name: str, work: Awaitable[None]) -> None:
        """One task per name at a time; failures are logged, never raised into a request."""
        running = self.tasks.get(name)
        if running is not None and not running.done():
            work.close()  # type: ignore[attr-defined]
            return
        task = asyncio.create_task(work)  # type: ignore[arg-type]
        task.add_done_callback(_log_failure)
        self.tasks[name] = task

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background count failed: %r", task.exception())


@dataclass(slots=True)
class Caches:
    """What a worker keeps on ``app.ctx.caches``."""

    store: ResilientCache
    responses: ResponseCache
    totals: ProductTotals
    anchors: PageAnchors

    @asynccontextmanager
    async def product_write(self) -> AsyncIterator[None]:
        """Around a product write: counts being computed meanwhile are not kept (see the module doc)."""
        await self.store.write_started()
        try:
            yield
        finally:
            await self.store.write_finished()

    async def product_written(self, product_id: int, before: ProductState | None, after: ProductState | None) -> None:
        """Called inside ``product_write`` once the write has committed, before its response returns."""
        generations, deltas = product_write_effects(product_id, before, after)
        await self.store.product_written(generations, deltas)

    async def close(self) -> None:
        await self.totals.close()
        await self.store.close()


@dataclass(frozen=True, slots=True)
class SharedState:
    """Counters shared by the workers of one host (multiprocessing values made by the main process)."""

    generation: Synchronized  # the in-process cache's generation, bumped by every product write
    unconfirmed_writes: Synchronized  # writes whose invalidation has not reached Redis yet

    @classmethod
    def new(cls) -> SharedState:
        return cls(Value("q", 0), Value("q", 0))


def tls_arguments(settings: Settings) -> dict[str, Any]:
    """redis-py's certificate settings, for a rediss:// URL only (a plain connection takes none)."""
    if not settings.redis_url or not settings.redis_url.startswith("rediss://"):
        return {}
    return {"ssl_cert_reqs": settings.redis_ssl_cert_reqs, "ssl_ca_certs": settings.redis_ssl_ca_certs}


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
        store = ResilientCache(RedisBackend(client, settings), settings, "Redis", shared.unconfirmed_writes)
    else:
        backend = MemoryBackend(shared.generation, settings)
        store = ResilientCache(backend, settings, "in-process cache", shared.unconfirmed_writes)
    return Caches(store, ResponseCache(store, settings), ProductTotals(store, settings), PageAnchors(store, settings))
