"""page=N in the default order starts from a cached anchor: the same pages as a plain OFFSET, kept right
across writes that move products in or out of a list, reused across writes that do not."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from catalog import queries
from catalog.domain import ProductFilter
from tests.conftest import Database
from tests.helpers import statements

EVERY = 3  # small, so that a catalog of a few dozen products has many anchors


@pytest.fixture
def anchored(client, db: Database) -> Iterator[Database]:
    anchors = client.app.ctx.caches.anchors
    original = anchors.every
    anchors.every = EVERY
    try:
        yield db
    finally:
        anchors.every = original


def listed(db: Database, where: str = "is_active") -> list[int]:
    return [row["id"] for row in db.fetch(f"SELECT id FROM products WHERE {where} ORDER BY id")]


def assert_every_page_matches(client, db: Database, query: str = "", where: str = "is_active") -> None:
    expected = listed(db, where)
    for page_size in (2, 5):
        pages = -(-len(expected) // page_size) + 2  # and two pages past the end
        for page in range(1, pages + 1):
            _, response = client.get(f"/products?page_size={page_size}&page={page}{query}")
            assert response.status == 200, response.text
            items = [item["id"] for item in response.json["items"]]
            assert items == expected[(page - 1) * page_size: page * page_size], (page_size, page)
            assert response.json["total"] == len(expected)


def test_anchors_are_every_nth_id(client, anchored: Database) -> None:
    kitchen = anchored.category()
    for i in range(20):
        anchored.product(f"P{i}", category_id=kitchen if i % 2 else None, is_active=i % 7 != 3)
    every_id = listed(anchored)
    in_kitchen = listed(anchored, f"is_active AND category_id = {kitchen}")
    assert anchored.run(queries.page_anchors(ProductFilter(), EVERY)) == every_id[EVERY - 1::EVERY]
    assert anchored.run(queries.page_anchors(ProductFilter(True, kitchen), 2)) == in_kitchen[1::2]
    assert anchored.run(queries.page_anchors(ProductFilter(True, kitchen + 1), 2)) == []
    with pytest.raises(ValueError):
        anchored.run(queries.page_anchors(ProductFilter(min_price=1.0), EVERY))


def test_pages_from_anchors_are_the_offset_pages(client, anchored: Database) -> None:
    kitchen = anchored.category()
    for i in range(37):
        anchored.product(f"P{i}", category_id=kitchen if i % 3 else None, is_active=i % 5 != 4)
    assert_every_page_matches(client, anchored)
    assert_every_page_matches(client, anchored, f"&category_id={kitchen}", f"is_active AND category_id = {kitchen}")
    assert_every_page_matches(client, anchored, "&is_active=false", "NOT is_active")


def test_writes_that_move_products_rebuild_the_anchors(client, anchored: Database) -> None:
    ids = [anchored.product(f"P{i}", float(i)) for i in range(30)]
    assert_every_page_matches(client, anchored)
    # Out of the list early on (positions after it all shift), back in, deleted, created.
    assert client.put(f"/products/{ids[1]}", json={"is_active": False})[1].status == 200
    assert_every_page_matches(client, anchored)
    assert client.put(f"/products/{ids[1]}", json={"is_active": True})[1].status == 200
    assert client.delete(f"/products/{ids[4]}")[1].status == 204
    assert client.post("/products", json={"name": "New", "price": 3.5})[1].status == 201
    assert_every_page_matches(client, anchored)


def test_writes_that_move_nothing_keep_the_anchors(client, anchored: Database) -> None:
    for i in range(30):
        anchored.product(f"P{i}", float(i))
    client.get("/products?page_size=2")  # counts the list, once
    _, first = client.get("/products?page_size=2&page=9")
    shown = [item["id"] for item in first.json["items"]]
    # A product the page does not show: in the default order nothing moves, and the page stays cached.
    assert client.put("/products/3", json={"price": 99.0, "name": "Renamed"})[1].status == 200
    request, again = client.get("/products?page_size=2&page=9")
    assert request.ctx.cache in ("hit", "local") and again.json == first.json
    # One it shows: the page is made again, from the same anchors, and only that product is loaded.
    assert client.put(f"/products/{shown[0]}", json={"price": 98.0})[1].status == 200
    _, changed = client.get("/products?page_size=2&page=9")
    assert [item["id"] for item in changed.json["items"]] == shown and changed.json["items"][0]["price"] == 98.0
    # The first computation ran the anchors' query beside the page's keys and its products' load (two); the
    # last reused the anchors and the other product's fragment: its keys, and the changed product's load.
    assert (statements(first), statements(changed)) == (4, 3)


def test_without_redis_page_n_is_a_plain_offset(client, anchored: Database) -> None:
    for i in range(25):
        anchored.product(f"P{i}")
    store = client.app.ctx.caches.store
    store.open_until = time.monotonic() + 60  # the breaker open: Redis is skipped
    try:
        assert_every_page_matches(client, anchored)
    finally:
        store.open_until = 0.0
