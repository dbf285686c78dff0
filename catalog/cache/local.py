"""Each worker's own copy of the responses it served last, in front of Redis: a hit here costs no round trip.

An entry is kept only as Redis vouched for it (a Redis hit, or what this worker just computed and filled),
with the names of the generations it depends on, until the Redis entry expires. A write drops what it
changed from every worker before its response returns (``catalog.cache.coherence``), and a worker serves
nothing while it cannot show that it hears of writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from catalog.representation import Representation

# Drops every entry (an epoch bump).
EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class Mark:
    """Taken just before a Redis lookup: an entry made from it is kept only if no invalidation arrived
    meanwhile (``drops``: how many this worker had processed), and lives from ``at``."""

    at: float
    drops: int


@dataclass(frozen=True, slots=True)
class _Entry:
    representation: Representation
    names: frozenset[str]
    until: float
    size: int


class LocalEntries:
    """Responses by key, bounded in bytes (the oldest go first), each dropped by any of its generations.

    Requests use it from the worker's event loop, the listener (``catalog.cache.coherence``) drops from its
    own thread: a lock keeps a drop whole, and a put either sees it or is dropped by it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.entries: dict[str, _Entry] = {}
        self.by_name: dict[str, set[str]] = {}
        self.size = 0
        self.drops = 0  # invalidations processed, so that an entry looked up across one is not kept
        self.live_until = 0.0  # served only while the invalidations' channel is known to be working
        # Requests answered here, and those of them that were hits, since last added to Redis's counts.
        self.wanted = 0
        self.hits = 0

    def live(self) -> bool:
        return time.monotonic() < self.live_until

    def mark(self) -> Mark:
        return Mark(time.monotonic(), self.drops)

    def get(self, key: str) -> Representation | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            now = time.monotonic()
            if now >= entry.until or now >= self.live_until:
                self._remove(key)
                return None
            self.wanted += 1
            self.hits += 1
            return entry.representation

    def count_shared(self, outcome: str) -> None:
        """A request answered by another's lookup: counted as that lookup turned out."""
        with self.lock:
            self.wanted += 1
            self.hits += outcome in ("hit", "local")

    def take_counts(self) -> tuple[int, int]:
        """Requests answered here and hits among them since last taken (for Redis's counts)."""
        with self.lock:
            counts, self.wanted, self.hits = (self.wanted, self.hits), 0, 0
            return counts

    def put(self, key: str, representation: Representation, names: Iterable[str], mark: Mark, ttl: float) -> None:
        """Kept for ``ttl`` from ``mark`` (what Redis had left of the entry's time), unless an invalidation
        arrived since ``mark``: it may concern what Redis answered before it."""
        size = len(key) + len(representation.body) + len(representation.gzipped or b"")
        if size * 4 > self.max_bytes:  # a few huge entries would push out all the small ones
            return
        with self.lock:
            if mark.drops == self.drops and time.monotonic() < self.live_until:
                self._keep(key, representation, names, mark, ttl, size)

    def _keep(self, key: str, representation: Representation, names: Iterable[str], mark: Mark, ttl: float,
              size: int) -> None:
        self._remove(key)
        entry = _Entry(representation, frozenset(names), mark.at + ttl, size)
        self.entries[key] = entry
        self.size += size
        for name in entry.names:
            self.by_name.setdefault(name, set()).add(key)
        while self.size > self.max_bytes:
            self._remove(next(iter(self.entries)))

    def drop(self, names: Iterable[str]) -> None:
        """What the generations ``names`` were bumped for (``EVERYTHING``: all, as when the channel that tells
        of bumps was lost)."""
        names = list(names)
        with self.lock:
            self.drops += 1
            if EVERYTHING in names:
                self.entries.clear()
                self.by_name.clear()
                self.size = 0
                return
            for name in names:
                for key in list(self.by_name.get(name, ())):
                    self._remove(key)

    def _remove(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.size -= entry.size
        for name in entry.names:
            keys = self.by_name.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_name[name]
