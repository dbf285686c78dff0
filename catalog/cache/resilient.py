"""The circuit breaker in front of a backend: Redis failing (down, slow, flushed) only makes requests
slower, never fails them.

Every call is bounded by a short timeout, and the breaker skips Redis for a while after a failure. A
write whose invalidation could not reach Redis makes every worker of the host skip the cache until an
epoch bump has dropped everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from multiprocessing.sharedctypes import Synchronized
from typing import Any, TypeVar

from catalog.cache.backends import Backend, CountRead, Kept, Lookup, Peek
from catalog.cache.pool import REDIS_FAILURES, PoolBusy
from catalog.stats import current_stats
from config.settings import Settings

logger = logging.getLogger("catalog.cache")

FOLLOWER_POLL_S = 0.01
FOLLOWER_WAIT_S = 1.0
BREAKER_FAILURES = 3
# How often a worker that owes an epoch bump tries Redis again (the other workers wait on it).
EPOCH_RETRY_S = 0.05


T = TypeVar("T")


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
        return self.writes_confirmed and time.monotonic() >= self.open_until

    @property
    def writes_confirmed(self) -> bool:
        """No write on this host failed to invalidate what it changed: what Redis or a worker kept holds."""
        return self.unconfirmed_writes.value == 0

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

    async def guarded(self, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``call`` to the backend through the breaker: ``fallback`` when it fails or is skipped."""
        return await self._call(call, fallback)

    async def lookup(self, base: str, dependencies: Sequence[str], kind: str) -> Lookup:
        """``kind``: what the entry is (``r``: a response, ``a``: page anchors), for the hit counts."""
        return await self._call(lambda: self.backend.lookup(base, dependencies, kind), Lookup(None))

    async def peek(self, key: str) -> Peek:
        return await self._call(lambda: self.backend.peek(key), Peek(None))

    async def wait_for_fill(self, key: str) -> bytes | None:
        """The entry another request is computing (it holds the lock), once there; None after a while, or
        at once when what it filled is already stale (it began before a write this request must see).

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
            peeked = await self.peek(key)
            if peeked.value is not None or peeked.stale:
                return peeked.value
        return None

    async def fill(self, key: str, value: bytes, checks: Mapping[str, str]) -> None:
        await self._call(lambda: self.backend.fill(key, value, checks), None)

    async def compute(self, key: str, make: Callable[[], Awaitable[tuple[T, Kept | None]]]) -> T:
        """Make the entry whose lock this request holds: ``make`` gives a result and what to keep (None:
        nothing). The lock is released when nothing is kept or ``make`` fails, so the next request
        computes the entry at once rather than wait for the lock to expire."""
        try:
            result, kept = await make()
        except BaseException:
            await self.release(key)
            raise
        if kept is None:
            await self.release(key)
        else:
            await self.fill(key, kept.value, kept.checks)
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
        """The write's mark lifted, then, before its response, every worker has dropped what it changed."""
        await self._call(self.backend.write_finished, None)
        await self.backend.writes_seen()

    @property
    def tracks_positions(self) -> bool:
        return self.backend.tracks_positions

    async def product_written(self, generations: Iterable[str], deltas: Mapping[str, int], position: int | None) -> None:
        """Invalidate before the write's response returns; with replicas, record the write's WAL position
        (None: unknown) first."""
        await self._must_reach(lambda: self.backend.product_written(generations, deltas, position))

    async def load_write_position(self) -> None:
        """For a read that asks the cache nothing before its queries (CACHE_RESPONSES=false): the write position
        its reads must see (catalog.replicas); without it, they go to the primary."""
        if self.backend.tracks_positions:
            await self._call(self.backend.load_write_position, None)

    async def record_write_position(self, position: int) -> None:
        await self._call(lambda: self.backend.record_write_position(position), None)

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
