"""Per-request counters: SQL statements (and how many a replica ran) and the time spent in PostgreSQL and
in the cache.

Held in a ContextVar, so the database engine and the cache add to the request that is running them
(tasks a request starts share its counters, unless they detach) without passing anything around.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestStats:
    statements: int = 0
    replica_statements: int = 0  # of those, run on a replica (catalog.replicas)
    db_seconds: float = 0.0
    cache_seconds: float = 0.0


_current: ContextVar[RequestStats | None] = ContextVar("catalog_request_stats", default=None)


def start_request_stats() -> RequestStats:
    stats = RequestStats()
    _current.set(stats)
    return stats


def current_stats() -> RequestStats | None:
    return _current.get()


def detach_request_stats() -> None:
    """In a task that a request starts but does not wait for: what it runs is not the request's."""
    _current.set(None)
