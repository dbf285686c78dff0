"""Each worker's local copies of responses (catalog.cache.local) and how writes reach them
(catalog.cache.coherence): the store on its own, then "workers" in this process on the real Redis, each with
its own copies and listener, as a server's workers have them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import redis.asyncio as redis_asyncio

from catalog.cache.backends import RedisBackend
from catalog.cache.coherence import LIVE_S, Coherence
from catalog.cache.local import EVERYTHING, LocalEntries, Mark
from catalog.representation import Representation
from config.settings import Settings

TTL_S = 60.0


def page(text: str) -> Representation:
    return Representation.of(text.encode(), {})


def live(entries: LocalEntries) -> LocalEntries:
    entries.live_until = time.monotonic() + 60
    return entries


def test_a_write_drops_the_entries_that_depend_on_what_it_bumped_and_no_other() -> None:
    entries = live(LocalEntries(1 << 20))
    mark = entries.mark()
    entries.put("/products/1", page("one"), ["p1"], mark, TTL_S)
    entries.put("/products?page=1", page("first"), ["m*", "p1", "p2"], mark, TTL_S)
    entries.put("/products?page=9", page("ninth"), ["m*", "p180"], mark, TTL_S)
    entries.drop(["all", "p2"])
    assert [entries.get(key) for key in ("/products/1", "/products?page=1", "/products?page=9")] == [
        page("one"), None, page("ninth")]
    entries.drop([EVERYTHING])
    assert entries.get("/products/1") is None and entries.size == 0 and not entries.by_name


def test_what_was_looked_up_across_an_invalidation_is_not_kept() -> None:
    """Redis may have answered before the bump the invalidation tells of."""
    entries = live(LocalEntries(1 << 20))
    before = entries.mark()
    entries.drop(["p7"])
    entries.put("/products/7", page("old"), ["p7"], before, TTL_S)
    entries.put("/products/8", page("unrelated but looked up meanwhile"), ["p8"], before, TTL_S)
    assert entries.get("/products/7") is None and entries.get("/products/8") is None
    entries.put("/products/7", page("new"), ["p7"], entries.mark(), TTL_S)
    assert entries.get("/products/7") == page("new")


def test_an_entry_lives_what_redis_had_left_of_its_time_from_its_lookup() -> None:
    entries = live(LocalEntries(1 << 20))
    entries.put("/a", page("a"), [], Mark(time.monotonic() - 5, entries.drops), 6)
    entries.put("/b", page("b"), [], Mark(time.monotonic() - 5, entries.drops), 5)
    assert (entries.get("/a"), entries.get("/b")) == (page("a"), None)


def test_nothing_is_served_or_kept_while_the_channel_is_not_known_to_work() -> None:
    entries = live(LocalEntries(1 << 20))
    entries.put("/a", page("a"), [], entries.mark(), TTL_S)
    entries.live_until = time.monotonic() - 0.001
    assert entries.get("/a") is None
    entries.put("/b", page("b"), [], entries.mark(), TTL_S)
    assert not entries.entries


def test_entries_are_bounded_in_bytes_oldest_first() -> None:
    body = "x" * 1000
    entries = live(LocalEntries(10_000))
    for n in range(20):
        entries.put(f"/products/{n}", page(body), [f"p{n}"], entries.mark(), TTL_S)
    assert entries.size <= 10_000
    kept = sorted(int(key.rsplit("/", 1)[1]) for key in entries.entries)
    assert kept == list(range(20 - len(kept), 20)) and len(kept) >= 8
    assert set(entries.by_name) == {f"p{n}" for n in kept}
    entries.put("/huge", page("y" * 5000), [], entries.mark(), TTL_S)  # over a quarter of the bound: not kept
    assert "/huge" not in entries.entries


@dataclass
class Worker:
    entries: LocalEntries
    coherence: Coherence
    backend: RedisBackend


@asynccontextmanager
async def workers(settings: Settings, count: int) -> AsyncIterator[list[Worker]]:
    """``count`` workers on one cache prefix of the real Redis, each listening, once all are registered."""
    settings = replace(settings, cache_prefix=f"{settings.cache_prefix}_local_{uuid.uuid4().hex[:6]}")
    made = []
    for _ in range(count):
        client = redis_asyncio.from_url(settings.redis_url)
        entries = LocalEntries(1 << 20)
        coherence = Coherence(client, redis_asyncio.from_url(settings.redis_url), entries, settings)
        coherence.start()
        made.append(Worker(entries, coherence, RedisBackend(client, settings, coherence)))
    try:
        deadline = time.monotonic() + 5
        while not all(worker.entries.live_until > time.monotonic() for worker in made):
            assert time.monotonic() < deadline, "workers never proved their channel"
            await asyncio.sleep(0.02)
        yield made
    finally:
        for worker in made:
            await worker.backend.close()
        async with redis_asyncio.from_url(settings.redis_url) as client:
            keys = [key async for key in client.scan_iter(f"{settings.cache_prefix}:*")]
            if keys:
                await client.delete(*keys)


def fill(worker: Worker) -> None:
    mark = worker.entries.mark()
    worker.entries.put("/products/1", page("one"), ["p1"], mark, TTL_S)
    worker.entries.put("/products/2", page("two"), ["p2"], mark, TTL_S)


def test_a_write_returns_once_every_worker_dropped_what_it_changed(settings: Settings) -> None:
    async def scenario() -> tuple[list[list[bool]], float]:
        async with workers(settings, 3) as three:
            for worker in three:
                fill(worker)
            started = time.monotonic()
            await three[0].backend.product_written(["all", "p1"], {}, None)
            await three[0].backend.writes_seen()
            took = time.monotonic() - started
            return [[worker.entries.get(key) is not None for key in ("/products/1", "/products/2")]
                    for worker in three], took

    held, took = asyncio.run(scenario())
    assert held == [[False, True]] * 3  # p1's entry gone from every worker the moment the write returns
    assert took < LIVE_S / 2, f"the write waited {took:.3f} s: confirmations did not arrive"


def test_a_worker_that_does_not_confirm_makes_the_write_wait_until_it_serves_nothing(settings: Settings) -> None:
    """A registered worker whose listener stopped holds what the write changed: it serves nothing LIVE_S
    after its last proof, and the writer waits that long after its bumps."""

    async def scenario() -> tuple[float, bool, bool]:
        async with workers(settings, 2) as (writer, deaf):
            fill(deaf)
            deaf.coherence.stop_listening()
            started = time.monotonic()
            await writer.backend.product_written(["all", "p1"], {}, None)
            await writer.backend.writes_seen()
            took = time.monotonic() - started
            serving_when_the_write_returned = deaf.entries.live_until > time.monotonic()
            return took, serving_when_the_write_returned, deaf.entries.get("/products/1") is None

    took, still_serving, p1_gone = asyncio.run(scenario())
    assert LIVE_S * 0.95 <= took < LIVE_S + 1.0, took
    assert not still_serving and p1_gone


def test_a_worker_whose_loop_stands_still_still_proves_its_channel(settings: Settings) -> None:
    """The listener has a thread of its own: a worker busy for longer than LIVE_S between two turns of its
    loop keeps its copies (the listener went on proving the channel), and the write that was waiting for
    that loop reaches them as soon as it runs."""

    async def scenario() -> tuple[bool, bool, float]:
        async with workers(settings, 2) as (busy, writer):
            fill(busy)

            async def write() -> None:  # one task, as a request: its announcements are waited for in it
                await writer.backend.product_written(["all", "p1"], {}, None)
                await writer.backend.writes_seen()

            writing = asyncio.ensure_future(write())
            time.sleep(LIVE_S + 0.5)  # the whole loop stands still, as under a long burst of requests
            live_after = busy.entries.live()
            started = time.monotonic()
            await writing
            return live_after, busy.entries.get("/products/1") is None, time.monotonic() - started

    live_after, p1_gone, write_took = asyncio.run(scenario())
    assert live_after and p1_gone
    assert write_took < LIVE_S / 2, write_took


def test_a_lost_channel_drops_everything_and_the_worker_serves_again_once_back(settings: Settings) -> None:
    async def scenario() -> tuple[bool, bool, float]:
        async with workers(settings, 1) as (worker,):
            fill(worker)
            async with redis_asyncio.from_url(settings.redis_url) as admin:
                await admin.client_kill_filter(_type="pubsub")
            deadline = time.monotonic() + 2
            while worker.entries.entries and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            dropped = not worker.entries.entries
            lost_at = time.monotonic()
            while worker.entries.live_until <= time.monotonic() and time.monotonic() < lost_at + 5:
                await asyncio.sleep(0.02)
            fill(worker)
            return dropped, worker.entries.get("/products/1") is not None, time.monotonic() - lost_at

    dropped, serving_again, back_after = asyncio.run(scenario())
    assert dropped and serving_again and back_after < 3, back_after


def test_a_listener_whose_connection_fails_inside_uvloop_keeps_listening(settings: Settings) -> None:
    """redis-py passes on uvloop's RuntimeError when it writes on a transport Redis has closed (seen with Redis
    killed): the listener counts it as the channel failing, and comes back, rather than its thread dying."""

    async def scenario() -> tuple[bool, bool]:
        client = redis_asyncio.from_url(settings.redis_url)
        entries = LocalEntries(1 << 20)
        coherence = Coherence(client, redis_asyncio.from_url(settings.redis_url), entries, settings)
        listen, failures = coherence._listen, []

        async def failing_once(listened: LocalEntries) -> None:
            if not failures:
                failures.append(1)
                raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")
            await listen(listened)

        coherence._listen = failing_once
        coherence.start()
        backend = RedisBackend(client, settings, coherence)
        try:
            deadline = time.monotonic() + 5
            while entries.live_until <= time.monotonic() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return bool(failures), entries.live_until > time.monotonic()
        finally:
            await backend.close()

    failed, live_again = asyncio.run(scenario())
    assert failed and live_again
