"""Each product's JSON, serialised once per change rather than once per page: a fragment per product and
``include`` parts, kept under that product's generation, so that a list page, a batch or a product whose
products were read before needs no model built and no SQL beyond its keys.

A fragment's key holds the generation read *before* its product was loaded: a write that commits meanwhile
bumps it, so a fragment built from older data is never reachable under a newer generation (with replicas, the
write position read with the generations keeps the load on a replica that has every write they count,
``catalog.replicas``). Writes through the API bump ``p<id>`` before they return (read-your-writes on every
worker); direct changes to the tables show within CACHE_TTL, the fragments' lifetime. Lookups go through the
breaker: Redis failing means misses.

The requests of a worker that ask for fragments in the same turn of its event loop are served together: one
read of the store, one load of the missing products, one write (``ProductFragments.get``). Under load most
misses come in such bursts, and a product's share of a load of twenty costs a fifth of loading it alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as redis

from catalog.cache.backends import STATS_TTL_S, MemoryBackend, RedisBackend
from catalog.cache.invalidation import product_generation
from catalog.cache.resilient import ResilientCache
from config.settings import Settings

# KEYS: epoch, the products' generations.  ARGV: key prefix, parts, the hit counts' window in seconds,
# their hash, the products' ids (in KEYS' order), the write position key ('' without replicas). Returns the
# write position, then each product's generation, key and fragment (nil when missing), and counts lookups
# and hits in one hash (as the response cache's lookup does).
READ_FRAGMENTS = """
local epoch = redis.call('GET', KEYS[1]) or '0'
local out, hits = {ARGV[#ARGV] ~= '' and redis.call('GET', ARGV[#ARGV])}, 0
for i = 2, #KEYS do
  local generation = redis.call('GET', KEYS[i]) or '0'
  local key = ARGV[1] .. ARGV[i + 3] .. '|' .. ARGV[2] .. '|' .. epoch .. '|' .. generation
  local value = redis.call('GET', key)
  if value then hits = hits + 1 end
  out[#out + 1] = generation
  out[#out + 1] = key
  out[#out + 1] = value
end
if redis.call('HINCRBY', ARGV[4], 'wanted', #KEYS - 1) == #KEYS - 1 then
  redis.call('EXPIRE', ARGV[4], ARGV[3])
end
redis.call('HINCRBY', ARGV[4], 'hits', hits)
return out
"""
# KEYS: where the fragments go.  ARGV: their lifetime in ms, then the fragments (in KEYS' order).
# One command rather than a pipeline of SETs: a page's fragments cost the worker one request and one reply.
WRITE_FRAGMENTS = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
end
return #KEYS
"""


@dataclass(frozen=True, slots=True)
class FragmentRead:
    found: dict[int, bytes]
    keys: dict[int, str]  # where each product's fragment goes, under the generation read now
    # Each product's generation as read before its fragment (none from a store that keeps no such thing).
    generations: dict[str, str]


class FragmentStore(Protocol):
    async def read(self, ids: Sequence[int], parts: str) -> FragmentRead: ...
    async def write(self, fragments: dict[str, bytes]) -> None: ...


class RedisFragments:
    """Generations and fragments read in one round trip, written in another (a Lua script each)."""

    def __init__(self, backend: RedisBackend, settings: Settings) -> None:
        self.backend = backend
        self.client: redis.Redis = backend.client
        self.prefix = f"{settings.cache_prefix}:f:"
        self.stats = f"{settings.cache_prefix}:stats:f"
        self.ttl_ms = int(settings.entry_ttl * 1000)
        self._read = self.client.register_script(READ_FRAGMENTS)
        self._write = self.client.register_script(WRITE_FRAGMENTS)

    async def read(self, ids: Sequence[int], parts: str) -> FragmentRead:
        keys = [self.backend.epoch, *(self.backend.generation_key(product_generation(i)) for i in ids)]
        position, *reply = await self._read(
            keys=keys, args=[self.prefix, parts, STATS_TTL_S, self.stats, *ids, self.backend.write_position]
        )
        self.backend.seen_position(position)
        found, where, generations = {}, {}, {}
        for product_id, generation, key, value in zip(ids, reply[::3], reply[1::3], reply[2::3], strict=True):
            generations[product_generation(product_id)] = generation.decode()
            where[product_id] = key.decode()
            if value is not None:
                found[product_id] = value
        return FragmentRead(found, where, generations)

    async def write(self, fragments: dict[str, bytes]) -> None:
        await self._write(keys=list(fragments), args=[self.ttl_ms, *fragments.values()])


class MemoryFragments:
    """In process: keyed by the generation every product write bumps (shared by the host's workers), which
    the in-process response cache's keys hold too: it needs no product's generation."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend

    async def read(self, ids: Sequence[int], parts: str) -> FragmentRead:
        generation = self.backend.generation.value
        self.backend.seen_position()
        where = {product_id: f"f:{product_id}|{parts}|{generation}" for product_id in ids}
        found = {}
        for product_id, key in where.items():
            value = self.backend.get(key)
            if value is not None:
                found[product_id] = value
        return FragmentRead(found, where, {})

    async def write(self, fragments: dict[str, bytes]) -> None:
        for key, value in fragments.items():
            self.backend.set(key, value)


# Builds the fragments of the products of ids that exist, with the given ``include`` parts.
Build = Callable[[list[int], frozenset[str]], Awaitable[dict[int, bytes]]]


@dataclass(frozen=True, slots=True)
class Fragments:
    """The JSON of products by id, and what it was read under: each product's generation (name -> value),
    empty when the store needs none; None when unknown (the store failed), so nothing made of it is kept."""

    found: dict[int, bytes]
    generations: dict[str, str] | None

    def of(self, ids: list[int]) -> Fragments:
        """Only what concerns ``ids``."""
        found = {product_id: self.found[product_id] for product_id in ids if product_id in self.found}
        if not self.generations:
            return Fragments(found, self.generations)
        names = (product_generation(product_id) for product_id in ids)
        return Fragments(found, {name: self.generations[name] for name in names if name in self.generations})


@dataclass(slots=True)
class Batch:
    """The ids asked for in one turn of the event loop, and the fragments once read or built."""

    ids: dict[int, None] = field(default_factory=dict)
    fragments: asyncio.Future[Fragments] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ProductFragments:
    """The JSON of products by id: cached fragments, and ``build`` for the missing ones (then kept)."""

    def __init__(self, store: ResilientCache, settings: Settings) -> None:
        self.store = store
        backend = store.backend
        self.fragments: FragmentStore = (
            RedisFragments(backend, settings) if isinstance(backend, RedisBackend) else MemoryFragments(backend)  # type: ignore[arg-type]
        )
        self.collecting: dict[tuple[frozenset[str], Build], Batch] = {}  # batches not read yet

    async def get(self, ids: Sequence[int], parts: frozenset[str], build: Build) -> Fragments:
        """The fragment of each of ``ids`` that exists (absent products are left out, and never kept).

        A batch is joined only before its read begins: a batch read earlier may predate a write that this
        request must see.
        """
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return Fragments({}, {})
        key = (parts, build)
        batch = self.collecting.get(key)
        if batch is None:
            batch = self.collecting[key] = Batch()
            # A task of its own: a request that leaves does not cancel what the others wait for. Its
            # statements count as those of the request that began it.
            asyncio.ensure_future(self._serve(key, batch))
        batch.ids.update(dict.fromkeys(wanted))
        return (await asyncio.shield(batch.fragments)).of(wanted)

    async def _serve(self, key: tuple[frozenset[str], Build], batch: Batch) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this turn's requests join
            del self.collecting[key]
            fragments = await self._read_or_build(list(batch.ids), *key)
        except asyncio.CancelledError:
            if self.collecting.get(key) is batch:
                del self.collecting[key]
            batch.fragments.cancel()
            raise
        except Exception as error:
            batch.fragments.set_exception(error)
            batch.fragments.exception()  # retrieved: its waiters have it, or have all gone
        else:
            batch.fragments.set_result(fragments)

    async def _read_or_build(self, wanted: list[int], parts: frozenset[str], build: Build) -> Fragments:
        name = ",".join(sorted(parts))
        read: FragmentRead | None = await self.store.guarded(lambda: self.fragments.read(wanted, name), None)
        found = dict(read.found) if read is not None else {}
        missing = [product_id for product_id in wanted if product_id not in found]
        if missing:
            built = await build(missing, parts)
            found.update(built)
            if read is not None and built:
                kept = {read.keys[product_id]: fragment for product_id, fragment in built.items()}
                await self.store.guarded(lambda: self.fragments.write(kept), None)
        return Fragments(found, None if read is None else read.generations)
