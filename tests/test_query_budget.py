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
    # The page's keys, its products, their reviews, and the count capped past the limit with the planner's
    # estimate in the same statement; not the background count.
    assert request.ctx.stats.statements == 4


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


def test_products_serialised_once_are_reused_by_pages_batches_and_the_product(client, catalog: Database) -> None:
    """Each product's JSON is kept as a fragment: once built, a page, a batch or the product itself (other
    response cache entries) loads no model, and a page costs only its keys query."""
    request, cold = client.get("/products?page_size=50")
    assert request.ctx.stats.statements == 4  # keys, products with their joins, their reviews, the count
    request, page = client.get("/products?page_size=20")
    assert request.ctx.stats.statements == 1  # the keys: all 20 products are in the cache, and so is the count
    assert page.json["items"] == cold.json["items"][:20]
    request, batch = client.get("/products/batch?ids=3,1,3,2")
    assert request.ctx.stats.statements == 0
    assert batch.json == [cold.json["items"][i] for i in (2, 0, 2, 1)]
    request, single = client.get("/products/7")
    assert request.ctx.stats.statements == 0 and single.json == cold.json["items"][6]
    assert statements(client, "/products?page_size=60") == 3  # only products 51 to 60 are loaded


def test_each_include_combination_has_its_own_fragments_with_review_stats(client, catalog: Database) -> None:
    _, full = client.get("/products?page_size=5")
    request, lean = client.get("/products?page_size=5&include=category,inventory")
    assert request.ctx.stats.statements == 3  # keys, products with their joins, review counts and averages
    for whole, part in zip(full.json["items"], lean.json["items"], strict=True):
        assert "reviews" not in part and len(whole["reviews"]) == part["review_count"] == 2
        assert part == {key: value for key, value in whole.items() if key != "reviews"}
    assert statements(client, "/products?page_size=4&include=category,inventory") == 1  # another response


def test_a_write_makes_the_products_fragment_unreachable_at_once(client, catalog: Database) -> None:
    client.get("/products?page_size=10")
    _, response = client.put("/products/4", content=b'{"price": 12.5, "name": "Renamed"}')
    assert response.status == 200
    request, page = client.get("/products?page_size=10&include=category,inventory,reviews")  # another entry
    assert request.ctx.stats.statements == 3  # keys, then product 4 loaded again with its reviews
    assert (page.json["items"][3]["name"], page.json["items"][3]["price"]) == ("Renamed", 12.5)
    request, batch = client.get("/products/batch?ids=4,5")
    assert request.ctx.stats.statements == 0 and batch.json[0]["price"] == 12.5


def test_a_product_whose_fragment_disagrees_with_its_key_is_read_again(client, catalog: Database) -> None:
    """A product changed after its fragment was kept (here behind the service's back; through the API, by a
    write between a page's keys query and its fragment lookup) is shown where its key placed it, as it is."""
    client.get("/products?page_size=10&sort=price")
    catalog.run(catalog.connection.execute("UPDATE products SET price = 1.5 WHERE id = 3"))  # cache kept
    request, page = client.get("/products?page_size=9&sort=price")  # another response, the same fragments
    assert request.ctx.stats.statements == 3  # keys, then product 3 loaded again with its reviews
    assert [(item["id"], item["price"]) for item in page.json["items"][:4]] == [(1, 1.0), (3, 1.5), (2, 2.0), (4, 4.0)]
