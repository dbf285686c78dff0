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
- The listener runs in a thread of its own, with its own event loop and connections: under load a worker's
  loop takes tens of milliseconds a turn, and a heartbeat that needed a dozen turns missed ``LIVE_S``; the
  worker then stopped serving its copies just when it was busiest. The thread waits only for the GIL.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import redis.asyncio as redis

from catalog.cache.local import EVERYTHING, LocalEntries
from catalog.cache.pool import REDIS_FAILURES
from config.settings import Settings

logger = logging.getLogger("catalog.cache")

HEARTBEAT_S = 0.1
# Redis itself stalls at times on a loaded machine (its SLOWLOG showed the heartbeat script taking 0.72 s
# under wrk -c 500 on 2 cores, redis-cli --latency a 426 ms maximum): a worker rides out stalls this long.
LIVE_S = 3.0
REGISTERED_S = 2 * LIVE_S  # at least LIVE_S: a worker still serving is always among those a writer waits for
RECONNECT_S = 0.5
CHANNEL_TIMEOUT_S = 2 * LIVE_S  # a call on the listener's connections that hangs longer: the connection is lost
CONFIRM_POLL_S = 0.001  # doubling up to CONFIRM_POLL_MAX_S
CONFIRM_POLL_MAX_S = 0.016
CONFIRMATION_TTL_MS = 10_000
STATS_TTL_S = 86_400

# KEYS: registry.  ARGV: channel, registered window ms, the announcement (its id, where confirmations go,
# then the names).  How many workers must confirm it: those registered, or those listening if more (a
# registry lost to a flush is back only with the workers' next heartbeats).
ANNOUNCE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expected = redis.call('ZCOUNT', KEYS[1], now_ms - tonumber(ARGV[2]), '+inf')
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[3])
return math.max(expected, receivers)
"""
# KEYS: registry, response hit counts.  ARGV: worker id, registry ms, hit counts' ttl s, requests answered
# locally and hits among them to add.
HEARTBEAT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - 10 * tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
local wanted = tonumber(ARGV[4])
if wanted > 0 then
  redis.call('HINCRBY', KEYS[2], 'wanted', wanted)
  redis.call('HINCRBY', KEYS[2], 'hits', tonumber(ARGV[5]))
  if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
end
return 1
"""


# The announcements a request's writes made (id, how many must confirm, when the bumps were known done),
# waited for once its write has ended: the wait is not part of the write, during which counts are not kept
# (catalog.events).
_announced: ContextVar[tuple[tuple[str, int, float], ...]] = ContextVar("catalog_announced", default=())
# Where a writer without a listener of its own (``catalog forget-cache``) finds its confirmations: a list.
NO_LISTENER = "-"


@dataclass(slots=True)
class Waiter:
    """A write's announcement as this worker's listener counts its confirmations."""

    confirmed: int = 0
    expected: int | None = None  # known once the write's pipeline has answered
    all_in: asyncio.Event = field(default_factory=asyncio.Event)


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
        self.confirmations = f"{prefix}:local:confirmed:"  # + a listener's worker id: its channel; + an id: a list
        self.announcements = 0
        # Confirmations this worker's listener counts for its writes, by announcement id.
        self.waiting: dict[str, Waiter] = {}
        self.hit_counts = f"{prefix}:stats:r"
        self._announce = client.register_script(ANNOUNCE)
        self._heartbeat = subscriber.register_script(HEARTBEAT)
        self._thread: threading.Thread | None = None
        self._main_loop: asyncio.AbstractEventLoop | None = None  # the worker's, where writers wait
        self._listener_loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task | None = None
        self._listening = threading.Event()  # the listener's loop and task are set
        self.failing = False

    def start(self) -> None:
        """With local entries, the listener starts in its thread (``subscriber`` is used only there)."""
        if self.entries is not None:
            self._main_loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=asyncio.run, args=(self._listen_in_thread(),),
                                            name="catalog-cache-listener", daemon=True)
            self._thread.start()

    async def _listen_in_thread(self) -> None:
        self._listener_loop, self._listener = asyncio.get_running_loop(), asyncio.current_task()
        self._listening.set()
        try:
            await self._listen_forever()
        except asyncio.CancelledError:
            pass
        finally:
            await self.subscriber.aclose()

    async def announce(self, pipe: redis.client.Pipeline, names: Sequence[str]) -> str:
        """Queued on the write's pipeline after its bumps, whose result is how many must confirm: the
        announcement's id, by which ``announced`` is told that result."""
        self.announcements += 1
        announcement = f"{self.worker}.{self.announcements}"
        # With a listener of its own, the confirmations come to its channel, counted as they arrive.
        reply_to = self.worker if self._thread is not None else NO_LISTENER
        if reply_to != NO_LISTENER:
            self.waiting[announcement] = Waiter()
        await self._announce(keys=[self.registry], client=pipe,
                             args=[self.channel, int(REGISTERED_S * 1000), " ".join([announcement, reply_to, *names])])
        return announcement

    def announced(self, announcement: str, expected: int, bumped_at: float) -> None:
        """What a write's pipeline answered for its announcement: waited for by ``wait_for_announced``."""
        _announced.set((*_announced.get(), (announcement, int(expected), bumped_at)))

    async def wait_for_announced(self) -> None:
        """Until every worker has dropped what this request's writes changed (``wait_for_workers``)."""
        pending = _announced.get()
        _announced.set(())
        for announcement, expected, bumped_at in pending:
            await self.wait_for_workers(announcement, expected, bumped_at)

    async def wait_for_workers(self, announcement: str, expected: int, bumped_at: float) -> None:
        """Until every registered worker confirmed, or until no worker that did not can still serve what it
        held before ``bumped_at`` (when the bumps were known done)."""
        deadline = bumped_at + LIVE_S
        confirmed = await self._confirmations(announcement, expected, deadline)
        if confirmed < expected:
            logger.warning("%d of %d workers confirmed a write's invalidation: waiting out their local entries",
                           confirmed, expected)
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def _confirmations(self, announcement: str, expected: int, deadline: float) -> int:
        """How many confirmed by ``deadline`` (or at once, when all have)."""
        waiter = self.waiting.get(announcement)
        if waiter is not None:  # counted by the listener as they arrive
            waiter.expected = expected
            try:
                if waiter.confirmed < expected:
                    await asyncio.wait_for(waiter.all_in.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            finally:  # also when the request is cancelled
                del self.waiting[announcement]
            return waiter.confirmed
        confirmed, pause = 0, CONFIRM_POLL_S  # no listener: polled, without holding a connection between polls
        try:
            key = f"{self.confirmations}{announcement}"
            while (confirmed := await self.client.llen(key)) < expected and time.monotonic() + pause < deadline:
                await asyncio.sleep(pause)
                pause = min(2 * pause, CONFIRM_POLL_MAX_S)
        except REDIS_FAILURES:
            pass
        return confirmed

    def abandon(self, announcement: str) -> None:
        """An announcement whose pipeline failed: nothing to wait for."""
        self.waiting.pop(announcement, None)

    def _confirm_in_main_loop(self, announcement: str) -> None:
        """From the listener's thread: the writers' waiters belong to the worker's loop."""
        try:
            self._main_loop.call_soon_threadsafe(self._confirmed, announcement)
        except RuntimeError:  # the worker's loop has closed: no writer is waiting
            pass

    def _confirmed(self, announcement: str) -> None:
        waiter = self.waiting.get(announcement)
        if waiter is None:
            return  # for a write that has stopped waiting
        waiter.confirmed += 1
        if waiter.expected is not None and waiter.confirmed >= waiter.expected:
            waiter.all_in.set()

    async def _listen_forever(self) -> None:
        assert self.entries is not None
        while True:
            try:
                await self._listen(self.entries)
            except REDIS_FAILURES as error:
                self.entries.live_until = 0.0
                self.entries.drop([EVERYTHING])  # what was announced while away is unknown
                if not self.failing:
                    logger.warning("local cache off until Redis's channel answers again: %r", error)
                self.failing = True
                await asyncio.sleep(RECONNECT_S)

    async def _listen(self, entries: LocalEntries) -> None:
        pubsub = self.subscriber.pubsub()
        try:
            await pubsub.subscribe(self.channel, f"{self.confirmations}{self.worker}")
            beat = 0
            while True:
                beat += 1
                began = time.monotonic()
                await pubsub.ping(str(beat))
                await self._read(pubsub, entries, began + LIVE_S, pong=str(beat).encode())
                await self._heartbeat(keys=[self.registry, self.hit_counts],
                                      args=[self.worker, int(REGISTERED_S * 1000), STATS_TTL_S, *entries.take_counts()])
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
            if message["type"] == "message" and message["channel"] != self.channel.encode():
                self._confirm_in_main_loop(message["data"].decode())
            elif message["type"] == "message":
                announcement, reply_to, *names = message["data"].decode().split(" ")
                entries.drop(names)
                if reply_to == NO_LISTENER:
                    async with self.subscriber.pipeline(transaction=False) as pipe:
                        key = f"{self.confirmations}{announcement}"
                        pipe.rpush(key, self.worker).pexpire(key, CONFIRMATION_TTL_MS)
                        await pipe.execute()
                else:
                    await self.subscriber.publish(f"{self.confirmations}{reply_to}", announcement)
            elif pong is not None and message["type"] == "pong" and message["data"] == pong:
                return
        if pong is not None:
            raise asyncio.TimeoutError("no answer on Redis's channel")

    def stop_listening(self) -> None:
        """The listener stops (its thread ends); the worker stays registered until ``close``."""
        try:
            self._listener_loop.call_soon_threadsafe(self._listener.cancel)
        except RuntimeError:  # its loop has already closed
            pass

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.to_thread(self._listening.wait, CHANNEL_TIMEOUT_S)
        self.stop_listening()
        await asyncio.to_thread(thread.join, CHANNEL_TIMEOUT_S)
        try:
            await self.client.zrem(self.registry, self.worker)  # writers need not wait for this worker
        except REDIS_FAILURES:
            pass
