"""How a write reaches every worker's local entries (``catalog.cache.local``) before its response returns.

- A write announces the generations it bumped on a Redis channel, in the same pipeline as the bumps, and
  learns how many workers serve local entries (those registered within ``REGISTERED_S``).
- Each worker listens on the channel, drops what the names concern, then confirms by pushing to the
  announcement's list; the writer waits for as many confirmations as workers were registered.
- A worker serves local entries only while it proves, every ``HEARTBEAT_S``, that its channel works and it
  is registered; it stops ``LIVE_S`` after the last proof began, before writers stop counting on it. A
  proof is a PING answered on the channel's connection, so it also shows that every announcement made
  before the PING has been read, and what it concerns dropped.
- So a worker that does not confirm in time (busy, or cut off) serves nothing it held from before the write
  later than ``LIVE_S`` after it: the writer waits that long after its bumps instead. Slower, never stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar

import redis.asyncio as redis

from catalog.cache.local import EVERYTHING, LocalEntries
from catalog.cache.pool import PoolBusy
from config.settings import Settings

logger = logging.getLogger("catalog.cache")

HEARTBEAT_S = 0.1
LIVE_S = 1.0
REGISTERED_S = 2.0  # at least LIVE_S: a worker still serving is always among those a writer waits for
RECONNECT_S = 0.5
CHANNEL_TIMEOUT_S = 2 * LIVE_S  # a call on the listener's connections that hangs longer: the connection is lost
CONFIRM_POLL_S = 0.001  # doubling up to CONFIRM_POLL_MAX_S
CONFIRM_POLL_MAX_S = 0.016
FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError, PoolBusy)
CONFIRMATION_TTL_MS = 10_000
STATS_TTL_S = 86_400

# KEYS: registry, announcement counter.  ARGV: channel, registered window ms, names...
# The announcement's id and how many workers must confirm it: those registered, or those listening if more
# (a registry lost to a flush is back only with the workers' next heartbeats).
ANNOUNCE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expected = redis.call('ZCOUNT', KEYS[1], now_ms - tonumber(ARGV[2]), '+inf')
local id = redis.call('INCR', KEYS[2])
local receivers = redis.call('PUBLISH', ARGV[1], id .. ' ' .. table.concat(ARGV, ' ', 3))
return {id, math.max(expected, receivers)}
"""
# KEYS: registry, response hit counts.  ARGV: worker id, registry ms, hit counts' ttl s, local hits to add.
HEARTBEAT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - 10 * tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
local hits = tonumber(ARGV[4])
if hits > 0 then
  redis.call('HINCRBY', KEYS[2], 'wanted', hits)
  redis.call('HINCRBY', KEYS[2], 'hits', hits)
  if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
end
return 1
"""


# The announcements a request's writes made, waited for once its write has ended: the wait is not part of
# the write, during which counts are not kept (catalog.events).
_announced: ContextVar[tuple[tuple[Sequence[int], float], ...]] = ContextVar("catalog_announced", default=())


class Coherence:
    """One worker's side of it: the listener (with ``entries``: this worker keeps local entries) and the
    writer's announcement and wait."""

    def __init__(self, client: redis.Redis, subscriber: redis.Redis, entries: LocalEntries | None,
                 settings: Settings) -> None:
        self.client = client  # the worker's pool: announcements and the writer's wait
        # Connections of its own for the channel, confirmations and heartbeats: never queued behind requests.
        self.subscriber = subscriber
        self.entries = entries
        self.worker = uuid.uuid4().hex
        prefix = settings.cache_prefix
        self.channel = f"{prefix}:local:bumped"
        self.registry = f"{prefix}:local:workers"
        self.counter = f"{prefix}:local:announced"
        self.confirmations = f"{prefix}:local:confirmed:"
        self.hit_counts = f"{prefix}:stats:r"
        self._announce = client.register_script(ANNOUNCE)
        self._heartbeat = subscriber.register_script(HEARTBEAT)
        self._listener: asyncio.Task | None = None
        self.failing = False

    def start(self) -> None:
        if self.entries is not None:
            self._listener = asyncio.create_task(self._listen_forever())

    async def announce(self, pipe: redis.client.Pipeline, names: Sequence[str]) -> None:
        """Queued on the write's pipeline after its bumps; its result is ``(id, expected)``."""
        await self._announce(keys=[self.registry, self.counter],
                             args=[self.channel, int(REGISTERED_S * 1000), *names], client=pipe)

    def announced(self, announced: Sequence[int], bumped_at: float) -> None:
        """What a write's pipeline answered for its announcement: waited for by ``wait_for_announced``."""
        _announced.set((*_announced.get(), (announced, bumped_at)))

    async def wait_for_announced(self) -> None:
        """Until every worker has dropped what this request's writes changed (``wait_for_workers``)."""
        pending = _announced.get()
        _announced.set(())
        for announced, bumped_at in pending:
            await self.wait_for_workers(announced, bumped_at)

    async def wait_for_workers(self, announced: Sequence[int], bumped_at: float) -> None:
        """Until every registered worker confirmed, or until no worker that did not can still serve what it
        held before ``bumped_at`` (when the bumps were known done). Polled, not a blocking pop: a request's
        connection is not held while other workers get to it."""
        announcement, expected = int(announced[0]), int(announced[1])
        deadline = bumped_at + LIVE_S
        confirmed, pause = 0, CONFIRM_POLL_S
        try:
            while expected and (confirmed := await self.client.llen(f"{self.confirmations}{announcement}")) < expected:
                if time.monotonic() + pause > deadline:
                    break
                await asyncio.sleep(pause)
                pause = min(2 * pause, CONFIRM_POLL_MAX_S)
        except FAILURES:
            pass
        if confirmed < expected:
            logger.warning("%d of %d workers confirmed a write's invalidation: waiting out their local entries",
                           confirmed, expected)
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def _listen_forever(self) -> None:
        assert self.entries is not None
        while True:
            try:
                await self._listen(self.entries)
            except FAILURES as error:
                self.entries.live_until = 0.0
                self.entries.drop([EVERYTHING])  # what was announced while away is unknown
                if not self.failing:
                    logger.warning("local cache off until Redis's channel answers again: %r", error)
                self.failing = True
                await asyncio.sleep(RECONNECT_S)

    async def _listen(self, entries: LocalEntries) -> None:
        pubsub = self.subscriber.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            beat = 0
            while True:
                beat += 1
                began = time.monotonic()
                await pubsub.ping(str(beat))
                await self._read(pubsub, entries, began + LIVE_S, pong=str(beat).encode())
                hits, entries.hits = entries.hits, 0
                await self._heartbeat(keys=[self.registry, self.hit_counts],
                                      args=[self.worker, int(REGISTERED_S * 1000), STATS_TTL_S, hits])
                entries.live_until = began + LIVE_S
                if self.failing:
                    logger.info("local cache on again")
                    self.failing = False
                await self._read(pubsub, entries, began + HEARTBEAT_S)
        finally:
            await pubsub.aclose()

    async def _read(self, pubsub: redis.client.PubSub, entries: LocalEntries, until: float,
                    pong: bytes | None = None) -> None:
        """Announcements until ``until``; with ``pong``, until that pong instead, which must come by then.
        What has arrived is read even when ``until`` has passed (an event loop that stood still)."""
        while True:
            left = until - time.monotonic()
            message = await pubsub.get_message(timeout=max(left, 0.0))
            if message is None:
                if left <= 0:
                    break
                continue
            if message["type"] == "message":
                announcement, *names = message["data"].decode().split(" ")
                entries.drop(names)
                async with self.subscriber.pipeline(transaction=False) as pipe:
                    key = f"{self.confirmations}{announcement}"
                    pipe.rpush(key, self.worker).pexpire(key, CONFIRMATION_TTL_MS)
                    await pipe.execute()
            elif pong is not None and message["type"] == "pong" and message["data"] == pong:
                return
        if pong is not None:
            raise asyncio.TimeoutError("no answer on Redis's channel")

    async def close(self) -> None:
        if self._listener is None:
            return
        self._listener.cancel()
        try:
            await self.subscriber.zrem(self.registry, self.worker)  # writers need not wait for this worker
        except FAILURES:
            pass
        await self.subscriber.aclose()
