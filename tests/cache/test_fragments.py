"""Product fragments asked for in one turn of a worker's event loop are read, loaded and kept together."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from catalog import reads
from catalog.cache.invalidation import product_generation
from catalog.domain import PARTS
from tests.conftest import Database


@pytest.fixture
def products(db: Database) -> list[int]:
    kitchen = db.category("Kitchen")
    ids = [db.product(f"Kettle {i}", 10.0 + i, kitchen) for i in range(6)]
    db.review(ids[0], 4)
    return ids


class RecordedBuild:
    """``reads``' own build of fragments, recording the ids of each call; held at a gate a test may close."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, ids: list[int], parts: frozenset[str]) -> dict[int, bytes]:
        self.calls.append(sorted(ids))
        await self.gate.wait()
        return await reads._build(ids, parts)


def test_products_asked_in_one_turn_are_loaded_once_and_each_caller_gets_its_own(client, products: list[int]) -> None:
    fragments = client.app.ctx.caches.fragments
    build = RecordedBuild()
    a, b, c, absent = products[0], products[1], products[2], products[-1] + 100
    asked = [[a, b], [b, c], [absent, c]]

    async def together() -> list:
        return await asyncio.gather(*(fragments.get(ids, PARTS, build) for ids in asked))

    results = client._run(together())
    assert build.calls == [sorted({a, b, c, absent})]  # one load for the three callers
    assert [sorted(result.found) for result in results] == [[a, b], [b, c], [c]]
    for ids, result in zip(asked, results, strict=True):
        assert set(result.generations) == {product_generation(i) for i in ids}
        for product_id, fragment in result.found.items():
            assert orjson.loads(fragment.partition(b"\n")[2])["id"] == product_id
    assert fragments.collecting == {}
    # Kept: asked again, nothing is loaded.
    again = client._run(fragments.get([a, c], PARTS, build))
    assert len(build.calls) == 1 and again.found == {a: results[0].found[a], c: results[1].found[c]}


def test_a_caller_does_not_join_a_batch_whose_read_has_begun(client, products: list[int]) -> None:
    """That read may be older than a write the later caller must see: it reads on its own."""
    fragments = client.app.ctx.caches.fragments
    build = RecordedBuild()
    build.gate.clear()

    async def scenario() -> tuple[list[list[int]], list]:
        first = asyncio.ensure_future(fragments.get([products[0]], PARTS, build))
        while not build.calls:
            await asyncio.sleep(0.005)
        later = asyncio.ensure_future(fragments.get([products[0]], PARTS, build))
        await asyncio.sleep(0.05)
        calls = list(build.calls)
        build.gate.set()
        return calls, await asyncio.gather(first, later)

    calls, (first, later) = client._run(scenario())
    assert calls == [[products[0]], [products[0]]]
    assert first.found == later.found and products[0] in first.found


def test_a_failed_load_fails_every_caller_of_its_batch_and_the_next_batch_loads_again(client, products: list[int]) -> None:
    fragments = client.app.ctx.caches.fragments
    calls: list[list[int]] = []

    async def failing(ids: list[int], parts: frozenset[str]) -> dict[int, bytes]:
        calls.append(sorted(ids))
        raise ConnectionRefusedError("PostgreSQL is down")

    async def together() -> list:
        asked = ([products[3]], [products[4]])
        return await asyncio.gather(*(fragments.get(ids, PARTS, failing) for ids in asked), return_exceptions=True)

    results = client._run(together())
    assert [type(result) for result in results] == [ConnectionRefusedError] * 2 and len(calls) == 1
    built = client._run(fragments.get([products[3]], PARTS, reads._build))
    assert products[3] in built.found and fragments.collecting == {}


def test_a_caller_that_leaves_does_not_cancel_the_batch_of_the_others(client, products: list[int]) -> None:
    fragments = client.app.ctx.caches.fragments
    build = RecordedBuild()
    build.gate.clear()

    async def scenario() -> object:
        leaving = asyncio.ensure_future(fragments.get([products[5]], PARTS, build))
        staying = asyncio.ensure_future(fragments.get([products[4]], PARTS, build))
        while not build.calls:
            await asyncio.sleep(0.005)
        leaving.cancel()
        build.gate.set()
        return await staying

    staying = client._run(scenario())
    assert products[4] in staying.found
