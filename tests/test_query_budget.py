"""Statements actually sent per request (counted from Tortoise's statement log), whatever the data size."""

from __future__ import annotations

import math

import pytest

from tests.conftest import Database


def statements(client, url: str) -> int:
    request, response = client.get(url)
    assert response.status == 200, response.text
    return request.ctx.stats.statements


@pytest.fixture
def catalog(db: Database) -> Database:
    """Products with categories, reviews and inventory, so every join and prefetch has rows to load."""
    kitchen = db.category("Kitchen")
    db.execute(
        "INSERT INTO products (name, price, category_id) SELECT 'p' || g, g, $1 FROM generate_series(1, 150) g",
        kitchen,
    )
    db.execute("INSERT INTO reviews (product_id, user_id, rating) SELECT id, 1, 1 + id % 5 FROM products")
    db.execute("INSERT INTO reviews (product_id, user_id, rating) SELECT id, 2, 4 FROM products")
    db.execute("INSERT INTO inventory (product_id, quantity) SELECT id, id % 20 FROM products")
    return db


def test_list_pages(client, catalog: Database) -> None:
    assert statements(client, "/products") == 4  # the page's keys, its products with their joins, their reviews, the count
    assert statements(client, "/products?page_size=100&page=2") <= 3
    _, first = client.get("/products?page_size=100")
    assert statements(client, f"/products?page_size=100&cursor={first.headers['X-Next-Cursor']}") <= 3
    assert statements(client, "/products?category_id=1&is_active=false") <= 3


def test_a_page_whose_total_is_an_estimate_is_four_statements(client, catalog: Database) -> None:
    totals = client.app.ctx.caches.totals
    totals.exact_max = 100  # the 150 active products are a large list
    try:
        catalog.expire_cache()
        request, response = client.get("/products")
    finally:
        totals.exact_max = client.app.ctx.settings.exact_count_max_rows
    assert response.status == 200 and response.headers["x-total-count-estimated"] == "true"
    # The page's keys, its products, their reviews, the count capped past the limit, the planner's estimate;
    # not the background count.
    assert request.ctx.stats.statements == 5


def test_single_product(client, catalog: Database) -> None:
    assert statements(client, "/products/5") == 2


@pytest.mark.parametrize("count", [1, 20, 100])
def test_batch_is_two_statements_whatever_the_number_of_ids(client, catalog: Database, count: int) -> None:
    ids = ",".join(str(i) for i in range(1, count + 1))
    assert statements(client, f"/products/batch?ids={ids}") == 2


def test_categories(client, catalog: Database) -> None:
    assert statements(client, "/categories") == 1


@pytest.mark.parametrize("extra", [0, 850, 1850, 2850])
def test_whole_sets_are_two_statements_per_thousand(client, catalog: Database, extra: int) -> None:
    catalog.execute(
        "INSERT INTO products (name, price, category_id) SELECT 'q' || g, g, 1 FROM generate_series(1, $1) g", extra
    )
    catalog.execute("INSERT INTO inventory (product_id, quantity) SELECT id, 0 FROM products WHERE name LIKE 'q%'")
    returned = 150 + extra
    budget = 2 * math.ceil(returned / 1000)
    assert statements(client, "/categories/1/products") <= budget
    low = catalog.fetchval("SELECT count(*) FROM inventory WHERE quantity - reserved < 10")
    assert statements(client, "/inventory/low-stock") <= 2 * math.ceil(low / 1000)
