"""Reads on PostgreSQL streaming replicas (DATABASE_REPLICA_URLS), never older than a write that has returned.

A product write reads the primary's WAL position after its commit and records it in the cache
(``catalog.cache``: in Redis, in the same round trip that bumps the write's generations, before its
response), so every worker of every dyno learns it. A request reads that position with whatever it first asks
the cache (a response's lookup, fragments, a count: the same Lua script) and keeps the highest it has seen as
its *floor*, in a ContextVar. ``ReadRouter``, Tortoise's router, gives a read to a replica whose replay
position has reached the floor, and to the primary otherwise: in a write request, in a read before it knows
the position, and when the cache cannot tell it (Redis down, flushed or restarted). An entry a request fills
is keyed by generations read together with the position, so an entry filled on a replica has every write that
bumped them. One position for all writes (the latest) rather than one per generation: a list page, which
every write makes stale, would need the latest anyway, and no key is missing for a product never written.

Each worker polls every replica's replay position every REPLICA_POLL_MS on a connection of its own; a replica
that does not answer, is not a standby (promoted: its data may part from the primary's), or lags past
REPLICA_MAX_LAG_MS is skipped, logged once, until a poll finds it well again. A statement that fails on a
replica for want of the replica runs again on the primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sanic import Request
from tortoise import Tortoise

from catalog.db_engine import CatalogAsyncpgClient
from catalog.errors import database_unavailable
from catalog.stats import current_stats
from config.database import connect_arguments
from config.settings import Settings
from config.tortoise import PRIMARY, replica_connection

logger = logging.getLogger("catalog.replicas")

# A request's floor: the write position its reads must see. Below zero, its reads go to the primary.
UNKNOWN = -1  # a read that has not learnt the write position yet
PINNED = -2  # a write, or a read the cache could not tell the position: the primary until it ends
_floor: ContextVar[int] = ContextVar("catalog_read_floor", default=UNKNOWN)
READS = ("GET", "HEAD")

# Not pg_current_wal_insert_lsn(): with synchronous_commit on (the default, and Heroku's), a commit has returned
# once its record is flushed, so the write position already covers it, and a standby that has replayed the
# commit has replayed up to it.
WRITE_POSITION_SQL = "SELECT pg_current_wal_lsn()::text AS position"
# NULL replay position: not a standby.
REPLICA_POSITION_SQL = """
SELECT pg_last_wal_replay_lsn()::text AS replayed,
       coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text AS received
"""
WATCHER_NAME = "catalog replica watcher"
POLL_TIMEOUT_S = 1.0  # a replica that takes longer to say where it is is skipped
RETRY_S = 0.5  # between attempts to reach a replica that is away
STARTING = "not polled yet"

# This worker's replicas, for the router (Tortoise makes routers itself, without arguments).
_replicas: ReplicaSet | None = None


def parse_position(text: str) -> int:
    """A ``pg_lsn`` (``16/B374D848``) as a number."""
    high, _, low = text.partition("/")
    return int(high, 16) << 32 | int(low, 16)


async def start_request(request: Request) -> None:
    """On ``http.lifecycle.request``, in the request's own task: a read does not know the write position yet."""
    _floor.set(UNKNOWN if request.method in READS else PINNED)


def reads_must_see(position: int | None) -> None:
    """The write position the cache holds (None: it holds none): this request's reads must see it."""
    if position is None:
        _floor.set(PINNED)
        if _replicas is not None:
            _replicas.position_missing = True
    elif _floor.get() != PINNED:
        _floor.set(max(_floor.get(), position))


async def primary_position() -> int | None:
    """The primary's WAL position now, which covers every write committed before; None when it does not answer."""
    try:
        _, rows = await Tortoise.get_connection(PRIMARY).execute_query(WRITE_POSITION_SQL)
    except Exception as error:
        if not database_unavailable(error):
            raise
        return None
    return parse_position(rows[0]["position"])


class ReadRouter:
    """Tortoise's router (``routers`` in its config, with replicas only): writes, and everything in a write's
    transaction, on the primary; a read on a replica that has replayed the request's floor, else the primary."""

    def db_for_read(self, model: type) -> str:
        return PRIMARY if _replicas is None else _replicas.choose(_floor.get())

    def db_for_write(self, model: type) -> str:
        return PRIMARY


@dataclass(eq=False)
class Replica:
    name: str  # its Tortoise connection
    label: str  # host:port/database: no password, fit for logs and /health/ready
    arguments: dict[str, Any]
    position: int = -1  # replayed, as of the last poll
    lag_s: float = 0.0
    problem: str | None = STARTING  # None: reads may go to it
    # Positions the replica had received, each with when a poll first saw it; those replayed are dropped.
    received: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, replayed: int, received: int, now: float) -> None:
        """A poll's positions. The lag is how long the oldest WAL received and not replayed yet has waited:
        neither an idle primary nor a steady stream of writes makes it look larger than it is."""
        if not self.received or received > self.received[-1][1]:
            self.received.append((now, received))
        while self.received and self.received[0][1] <= replayed:
            self.received.popleft()
        self.position = replayed
        self.lag_s = now - self.received[0][0] if self.received else 0.0

    def forget(self) -> None:
        """After a failure: a replica that restarts may resume from before what it had replayed."""
        self.position = -1
        self.received.clear()


class ReplicaSet:
    """This worker's replicas, each kept current by a poller of its own."""

    def __init__(self, replicas: list[Replica], settings: Settings, record: Callable[[int], Awaitable[None]]) -> None:
        self.replicas = replicas
        self.poll_s = settings.replica_poll
        self.max_lag_s = settings.replica_max_lag
        self.connect_timeout = settings.db_connect_timeout
        self.record = record  # keeps a write position in the cache (catalog.cache.resilient.ResilientCache)
        self.position_missing = False
        self.turn = 0
        self.tasks: list[asyncio.Task] = []

    def choose(self, floor: int) -> str:
        """The connection a read with this floor goes to: the replicas in turn, those that have replayed it."""
        if floor < 0:
            return PRIMARY
        count = len(self.replicas)
        for offset in range(count):
            replica = self.replicas[(self.turn + offset) % count]
            if replica.problem is None and replica.position >= floor:
                self.turn = (self.turn + offset + 1) % count
                return replica.name
        return PRIMARY

    def lost(self, name: str, error: BaseException) -> None:
        """A statement found the replica away: skipped until its poller reaches it again."""
        for replica in self.replicas:
            if replica.name == name:
                replica.forget()
                self._report(replica, f"unavailable: {error.__class__.__name__}")

    def health(self) -> dict[str, str]:
        return {replica.label: replica.problem or "ok" for replica in self.replicas}

    def _report(self, replica: Replica, problem: str | None) -> None:
        """Logged when a replica is first skipped and when it is used again, not at every poll."""
        was, replica.problem = replica.problem, problem
        if problem is not None and (was is None or was == STARTING):
            logger.warning("replica %s skipped, its reads go to the primary: %s", replica.label, problem)
        elif problem is None and was is not None:
            logger.info("replica %s takes reads%s", replica.label, "" if was == STARTING else " again")

    async def _watch(self, replica: Replica) -> None:
        connection: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if connection is None:
                        connection = await asyncpg.connect(
                            **replica.arguments, timeout=self.connect_timeout,
                            server_settings={"application_name": WATCHER_NAME},
                        )
                    row = await connection.fetchrow(REPLICA_POSITION_SQL, timeout=POLL_TIMEOUT_S)
                except Exception as error:  # refused, timed out, shut down mid-statement (InternalClientError)...
                    replica.forget()
                    self._report(replica, f"unavailable: {error.__class__.__name__}")
                    if connection is not None:
                        connection.terminate()
                        connection = None
                    await asyncio.sleep(RETRY_S)
                    continue
                if row["replayed"] is None:
                    replica.forget()
                    self._report(replica, "not a standby")
                else:
                    replica.observe(parse_position(row["replayed"]), parse_position(row["received"]), time.monotonic())
                    lagging = replica.lag_s > self.max_lag_s
                    self._report(replica, f"lagging: {replica.lag_s * 1000:.0f} ms" if lagging else None)
                if self.position_missing:
                    await self._restore_position()
                await asyncio.sleep(self.poll_s)
        finally:
            if connection is not None:
                connection.terminate()

    async def _restore_position(self) -> None:
        """The cache has lost the write position (Redis restarted or flushed, or a write could not read it):
        the primary's position now covers every write that has returned."""
        self.position_missing = False
        position = await primary_position()
        if position is None:
            self.position_missing = True
        else:
            await self.record(position)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def open_replicas(settings: Settings, record: Callable[[int], Awaitable[None]]) -> ReplicaSet:
    """This worker's replicas (their Tortoise connections made by ``catalog.db.open_database``): pools opened
    when the replica answers, pollers started."""
    global _replicas
    replicas = []
    for number, url in enumerate(settings.database_replica_urls, start=1):
        arguments = connect_arguments(url, variable="DATABASE_REPLICA_URLS")
        label = f"{arguments['host']}:{arguments['port']}/{arguments['database']}"
        replicas.append(Replica(replica_connection(number), label, arguments))
        try:
            await Tortoise.get_connection(replica_connection(number)).create_connection(with_db=True)
        except Exception as error:  # its poller says why; the pool opens on first use
            if not database_unavailable(error):
                raise
    _replicas = ReplicaSet(replicas, settings, record)
    _replicas.tasks = [asyncio.create_task(_replicas._watch(replica)) for replica in replicas]
    return _replicas


async def close_replicas(replicas: ReplicaSet) -> None:
    global _replicas
    await replicas.close()
    _replicas = None


class ReplicaClient(CatalogAsyncpgClient):
    """A replica's connection (``engine: catalog.replicas``): a statement it cannot run for want of the replica
    (away, or a query cancelled by a conflict with recovery) runs on the primary, so a replica going away costs
    a retry, never an error."""

    async def _translate_exceptions(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super()._translate_exceptions(func, *args, **kwargs)
        except Exception as error:
            lost = database_unavailable(error)
            if not lost and not isinstance(error, asyncpg.TransactionRollbackError):
                raise
            if lost and _replicas is not None:
                _replicas.lost(self.connection_name, error)
            return await Tortoise.get_connection(PRIMARY)._translate_exceptions(func, *args, **kwargs)
        stats = current_stats()
        if stats is not None and func.__name__.startswith("execute_"):
            stats.replica_statements += 1
        return result


client_class = ReplicaClient
