"""Where the cache keeps entries, generations and counts: in Redis, shared by all workers, or, without
REDIS_URL, in an in-process stand-in.

In Redis the generations' current values are part of an entry's key, so a write that bumps them makes
every entry it affects unreachable for all workers at once; the lookup reads generations and entry in
one round trip (a Lua script), and so do the count scripts. A global ``epoch`` in every key drops
everything. The stand-in is invalidated through one generation shared by all workers.

With replicas (DATABASE_REPLICA_URLS), each holds the latest write position too (``catalog.replicas``): a write
records it before the generations it bumps, and every read of generations or counts returns it with them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol

import redis.asyncio as redis

from catalog.cache.coherence import Coherence
from catalog.cache.local import EVERYTHING
from catalog.replicas import reads_must_see
from config.settings import Settings

# Generations outlive every entry made under them, so a generation key that expires and restarts at 0
# can never bring back an old entry.
GENERATION_TTL_S = 86_400
# The window of the hit counts kept in Redis.
STATS_TTL_S = 86_400
# How long one worker may hold the right to compute a missing entry before another may.
FILL_LOCK_MS = 2_000


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str | None  # None: caching is off or unavailable for this request
    value: bytes | None = None
    leader: bool = True  # whether this request computes the entry (others wait for it)
    checks: Sequence[str] = ()  # a hit's generations beyond its key's, by name
    ttl_s: float = 0.0  # a hit's time left


@dataclass(frozen=True, slots=True)
class Kept:
    """What a computed entry keeps: its bytes, and the generations (name -> value as read before it was
    made) that must still hold for it to be served, beyond those of its key."""

    value: bytes
    checks: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Peek:
    value: bytes | None  # the entry, once filled
    stale: bool = False  # filled, but from data a write has changed since: not worth waiting for


@dataclass(frozen=True, slots=True)
class CountRead:
    value: int | None
    ttl_s: float
    version: str


class Backend(Protocol):
    tracks_positions: bool  # whether writes record the primary's WAL position (there are replicas)

    async def lookup(self, base: str, dependencies: Sequence[str], kind: str) -> Lookup: ...
    async def peek(self, key: str) -> Peek: ...
    async def fill(self, key: str, value: bytes, checks: Mapping[str, str]) -> None: ...
    async def release(self, key: str) -> None: ...
    async def write_started(self) -> None: ...
    async def write_finished(self) -> None: ...
    async def writes_seen(self) -> None: ...
    async def product_written(
        self, generations: Iterable[str], deltas: Mapping[str, int], position: int | None
    ) -> None: ...
    async def load_write_position(self) -> None: ...
    async def record_write_position(self, position: int) -> None: ...
    async def read_count(self, name: str) -> CountRead: ...
    async def write_count(self, name: str, value: int, version: str) -> None: ...
    async def forget_everything(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


# An entry is stored as its checks (``name=value`` generations, space-separated), a newline, its bytes.
# entry(key, generation key prefix) gives the bytes while every check holds, else false, whether the
# entry was there but stale (then it is deleted), and its checks.
ENTRY = """
local function entry(key, generations)
  local stored = redis.call('GET', key)
  if not stored then return false, false end
  local cut = string.find(stored, '\\n', 1, true)
  local checks = string.sub(stored, 1, cut - 1)
  for name, seen in string.gmatch(checks, '([^ =]+)=([^ ]+)') do
    if (redis.call('GET', generations .. name) or '0') ~= seen then
      redis.call('DEL', key)
      return false, true
    end
  end
  return string.sub(stored, cut + 1), false, checks
end
"""
# KEYS: epoch, generations...  ARGV: entry key base, lock milliseconds, generation key prefix, the
# hash that counts this kind of entry's lookups and hits (the service's hit ratio, read by benchmarks;
# it starts again each STATS_TTL_S, as nothing is kept in Redis for ever), write position key ('' without
# replicas).
LOOKUP = ENTRY + """
local parts = {ARGV[1], redis.call('GET', KEYS[1]) or '0'}
for i = 2, #KEYS do parts[#parts + 1] = redis.call('GET', KEYS[i]) or '0' end
local key = table.concat(parts, '|')
local position = ARGV[6] ~= '' and redis.call('GET', ARGV[6])
local value, stale, checks = entry(key, ARGV[3])
if redis.call('HINCRBY', ARGV[4], 'wanted', 1) == 1 then redis.call('EXPIRE', ARGV[4], ARGV[5]) end
if value then
  redis.call('HINCRBY', ARGV[4], 'hits', 1)
  return {key, value, 0, position, redis.call('PTTL', key), checks}
end
if redis.call('SET', key .. '|lock', '1', 'NX', 'PX', ARGV[2]) then return {key, false, 1, position} end
return {key, false, 0, position}
"""
# ARGV: entry key, generation key prefix.  The entry (false: none), and 1 when it was stale.
PEEK = ENTRY + """
local value, stale = entry(ARGV[1], ARGV[2])
return {value, stale and 1 or 0}
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
# KEYS: epoch, counts version.  ARGV: count key prefix, name, write position key ('' without replicas).
READ_COUNT = """
local key = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':' .. ARGV[2]
local position = ARGV[3] ~= '' and redis.call('GET', ARGV[3])
return {redis.call('GET', key), redis.call('PTTL', key), redis.call('GET', KEYS[2]) or '0', position}
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
# KEYS: write position.  ARGV: a write position (16 hex digits), kept if past the one there. Compared as two
# 32-bit halves: a Lua number holds a whole 64-bit position only below 2^53.
RAISE_WRITE_POSITION = """
local current = redis.call('GET', KEYS[1])
if current then
  local high, new_high = tonumber(string.sub(current, 1, 8), 16), tonumber(string.sub(ARGV[1], 1, 8), 16)
  if high > new_high or (high == new_high and tonumber(string.sub(current, 9), 16) >= tonumber(string.sub(ARGV[1], 9), 16)) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
# A worker that dies mid-write leaves its mark; it fades, so counts are not refused for long.
WRITE_MARK_TTL_S = 60


class RedisBackend:
    """The cache in Redis, shared by all workers; one client (and pool) per worker."""

    def __init__(self, client: redis.Redis, settings: Settings, coherence: Coherence | None = None) -> None:
        """``coherence``: this worker's listener for its local entries; without one, writes still reach the
        local entries of every worker that has one."""
        self.client = client
        self.coherence = coherence or Coherence(client, client, None, settings)
        self.prefix = settings.cache_prefix
        self.ttl_ms = int(settings.entry_ttl * 1000)
        self.epoch = f"{self.prefix}:epoch"
        self.generations = f"{self.prefix}:g:"
        self.counts_version = f"{self.prefix}:counts_version"
        self.writes_in_flight = f"{self.prefix}:writes_in_flight"
        self.tracks_positions = bool(settings.database_replica_urls)
        self.write_position = f"{self.prefix}:write_position" if self.tracks_positions else ""
        self._lookup = client.register_script(LOOKUP)
        self._peek = client.register_script(PEEK)
        self._raise_position = client.register_script(RAISE_WRITE_POSITION)
        self._adjust = client.register_script(ADJUST_COUNTS)
        self._read_count = client.register_script(READ_COUNT)
        self._write_count = client.register_script(WRITE_COUNT)

    def generation_key(self, name: str) -> str:
        return f"{self.generations}{name}"

    async def lookup(self, base: str, dependencies: Sequence[str], kind: str) -> Lookup:
        keys = [self.epoch, *(self.generation_key(name) for name in dependencies)]
        key, value, leader, position, *hit = await self._lookup(
            keys=keys,
            args=[f"{self.prefix}:r:{base}", FILL_LOCK_MS, self.generations, f"{self.prefix}:stats:{kind}", STATS_TTL_S,
                  self.write_position],
        )
        self.seen_position(position)
        if not hit:
            return Lookup(key.decode(), value, bool(leader))
        ttl_ms, checks = hit
        names = [check.partition(b"=")[0].decode() for check in checks.split()]
        return Lookup(key.decode(), value, True, names, max(ttl_ms, 0) / 1000)

    def seen_position(self, position: bytes | None) -> None:
        """The write position read with generations or counts: what the request's reads must see."""
        if self.tracks_positions:
            reads_must_see(None if position is None else int(position, 16))

    async def load_write_position(self) -> None:
        self.seen_position(await self.client.get(self.write_position))

    async def record_write_position(self, position: int) -> None:
        await self._raise_position(keys=[self.write_position], args=[f"{position:016X}"])

    async def peek(self, key: str) -> Peek:
        value, stale = await self._peek(args=[key, self.generations])
        return Peek(value, stale=bool(stale))

    async def fill(self, key: str, value: bytes, checks: Mapping[str, str]) -> None:
        header = " ".join(f"{name}={seen}" for name, seen in checks.items()).encode()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(key, header + b"\n" + value, px=self.ttl_ms).delete(f"{key}|lock")
            await pipe.execute()

    async def release(self, key: str) -> None:
        await self.client.delete(f"{key}|lock")

    async def write_started(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(self.writes_in_flight).expire(self.writes_in_flight, WRITE_MARK_TTL_S).incr(self.counts_version)
            await pipe.execute()

    async def write_finished(self) -> None:
        await self.client.decr(self.writes_in_flight)

    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int], position: int | None) -> None:
        """``position``: the write's WAL position (None: unknown), recorded before the generations are bumped, so
        that whoever reads a bumped generation reads it too."""
        async with self.client.pipeline(transaction=False) as pipe:
            if self.tracks_positions and position is None:
                pipe.delete(self.write_position)  # reads go to the primary until catalog.replicas restores it
            elif self.tracks_positions:
                await self._raise_position(keys=[self.write_position], args=[f"{position:016X}"], client=pipe)
            generations = list(generations)
            for name in generations:
                pipe.incr(self.generation_key(name)).expire(self.generation_key(name), GENERATION_TTL_S)
            names = list(deltas)
            await self._adjust(
                keys=[self.epoch, self.counts_version],
                args=[f"{self.prefix}:n:", *names, *(deltas[name] for name in names)],
                client=pipe,
            )
            announcement, expected = await self._execute_announcing(pipe, generations)
        self.coherence.announced(announcement, expected, time.monotonic())

    async def writes_seen(self) -> None:
        await self.coherence.wait_for_announced()

    async def _execute_announcing(self, pipe: Any, names: Sequence[str]) -> tuple[str, int]:
        """The pipeline with the announcement of ``names`` last: its id, and how many workers must confirm."""
        announcement = await self.coherence.announce(pipe, names)
        try:
            return announcement, (await pipe.execute())[-1]
        except BaseException:
            self.coherence.abandon(announcement)
            raise

    async def read_count(self, name: str) -> CountRead:
        value, ttl_ms, version, position = await self._read_count(
            keys=[self.epoch, self.counts_version], args=[f"{self.prefix}:n:", name, self.write_position]
        )
        self.seen_position(position)
        return CountRead(None if value is None else int(value), max(ttl_ms, 0) / 1000, version.decode())

    async def write_count(self, name: str, value: int, version: str) -> None:
        await self._write_count(
            keys=[self.epoch, self.counts_version, self.writes_in_flight],
            args=[f"{self.prefix}:n:", name, version, value, self.ttl_ms],
        )

    async def forget_everything(self) -> None:
        """After a write that could not reach Redis: its position is unknown too (reads on the primary until
        catalog.replicas restores one)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(self.epoch)
            if self.tracks_positions:
                pipe.delete(self.write_position)
            announcement, expected = await self._execute_announcing(pipe, [EVERYTHING])
        await self.coherence.wait_for_workers(announcement, expected, time.monotonic())

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.coherence.close()
        await self.client.aclose()


class MemoryBackend:
    """In-process stand-in for Redis: entries per worker, one generation shared by all workers.

    Any product write bumps the shared generation, which is part of every key, so no worker serves an
    entry older than the last write (coarser than Redis's per-dependency generations). The write position is
    shared the same way (0: unknown), and read after the generation, which a write bumps after recording it.
    """

    def __init__(self, generation: Synchronized, write_position: Synchronized, settings: Settings) -> None:
        self.generation = generation
        self.write_position = write_position
        self.tracks_positions = bool(settings.database_replica_urls)
        self.ttl = settings.entry_ttl
        self.entries: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any:
        found = self.entries.get(key)
        if found is None or found[0] <= time.monotonic():
            self.entries.pop(key, None)
            return None
        return found[1]

    def set(self, key: str, value: Any) -> None:
        if len(self.entries) > 10_000:  # bounded: drop what has expired, then the oldest half
            now = time.monotonic()
            self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
            for key_to_drop in list(self.entries)[: len(self.entries) // 2]:
                del self.entries[key_to_drop]
        self.entries[key] = (time.monotonic() + self.ttl, value)

    async def lookup(self, base: str, dependencies: Sequence[str], kind: str) -> Lookup:
        key = f"{base}|{self.generation.value}"
        self.seen_position()
        return Lookup(key, self.get(key))

    def seen_position(self) -> None:
        if self.tracks_positions:
            reads_must_see(self.write_position.value or None)

    async def load_write_position(self) -> None:
        self.seen_position()

    async def record_write_position(self, position: int) -> None:
        with self.write_position.get_lock():
            self.write_position.value = max(self.write_position.value, position)

    async def peek(self, key: str) -> Peek:
        return Peek(self.get(key))

    async def fill(self, key: str, value: bytes, checks: Mapping[str, str]) -> None:
        """``checks`` need no keeping: any product write bumps the generation every key holds."""
        self.set(key, value)

    async def release(self, key: str) -> None:
        """Nothing to release: in process, every worker computes its own entries."""

    async def write_started(self) -> None:
        """Nothing to mark: counts here are keyed by the generation, which the write bumps."""

    async def write_finished(self) -> None:
        """See write_started."""

    async def writes_seen(self) -> None:
        """Every worker reads the shared generation: nothing to wait for."""

    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int], position: int | None) -> None:
        if self.tracks_positions and position is None:
            with self.write_position.get_lock():
                self.write_position.value = 0
        elif self.tracks_positions:
            await self.record_write_position(position)
        with self.generation.get_lock():
            self.generation.value += 1

    async def read_count(self, name: str) -> CountRead:
        version = str(self.generation.value)
        self.seen_position()
        found = self.entries.get(f"n:{name}|{version}")
        if found is None or found[0] <= time.monotonic():
            return CountRead(None, 0.0, version)
        return CountRead(found[1], found[0] - time.monotonic(), version)

    async def write_count(self, name: str, value: int, version: str) -> None:
        if version == str(self.generation.value):
            self.set(f"n:{name}|{version}", value)

    async def forget_everything(self) -> None:
        self.entries.clear()

    async def ping(self) -> None:
        """Always there: it is this process."""

    async def close(self) -> None:
        self.entries.clear()
