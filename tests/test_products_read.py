"""GET /products and GET /products/{id}: shapes, values from the tables, filters and pagination."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from tests.conftest import Database
from tests.helpers import links


def test_product_fields_come_from_the_tables(client, db: Database) -> None:
    category = db.category("Kitchen", "Pots and pans")
    product = db.product("Kettle", 24.5, category, description="Steel", created_at=datetime(2024, 5, 1, 12, 30))
    db.review(product, 5, user_id=7, comment="great")
    db.review(product, 2, user_id=8)
    db.inventory(product, quantity=12, reserved=4)
    bare = db.product("Spoon", 1.0, created_at=datetime(2024, 5, 1, 12, 30, 0, 123456))

    _, response = client.get(f"/products/{product}")
    assert response.status == 200
    body = response.json
    review_rows = db.fetch("SELECT id, created_at FROM reviews WHERE product_id = $1 ORDER BY id", product)
    assert body == {
        "id": product,
        "name": "Kettle",
        "description": "Steel",
        "price": 24.5,
        "category_id": category,
        "is_active": True,
        "created_at": "2024-05-01T12:30:00",
        "category": {"id": category, "name": "Kitchen", "description": "Pots and pans"},
        "reviews": [
            {"id": review_rows[0]["id"], "user_id": 7, "rating": 5, "comment": "great",
             "created_at": review_rows[0]["created_at"].isoformat()},
            {"id": review_rows[1]["id"], "user_id": 8, "rating": 2, "comment": None,
             "created_at": review_rows[1]["created_at"].isoformat()},
        ],
        "inventory": {"quantity": 12, "reserved": 4, "available": 8, "in_stock": True},
        "average_rating": 3.5,
        "review_count": 2,
    }

    _, response = client.get(f"/products/{bare}")
    body = response.json
    assert body["created_at"] == "2024-05-01T12:30:00.123456"
    assert (body["category"], body["inventory"], body["reviews"]) == (None, None, [])
    assert (body["average_rating"], body["review_count"]) == (None, 0)


def test_inventory_without_available_stock_is_not_in_stock(client, db: Database) -> None:
    product = db.product()
    db.inventory(product, quantity=3, reserved=3)
    _, response = client.get(f"/products/{product}")
    assert response.json["inventory"] == {"quantity": 3, "reserved": 3, "available": 0, "in_stock": False}


def test_inactive_product_is_served_by_id(client, db: Database) -> None:
    product = db.product(is_active=False)
    _, response = client.get(f"/products/{product}")
    assert response.status == 200 and response.json["is_active"] is False


@pytest.mark.parametrize("product_id", ["999999", "0", "-1", "2147483648", "99999999999999999999"])
def test_absent_product_is_404(client, db: Database, product_id: str) -> None:
    _, response = client.get(f"/products/{product_id}")
    assert response.status == 404
    assert response.json == {"detail": "Product not found"}


def test_list_shape_and_totals(client, db: Database) -> None:
    ids = [db.product(f"P{i}", float(i)) for i in range(45)]
    db.product("hidden", is_active=False)

    _, response = client.get("/products")
    body = response.json
    assert response.status == 200
    assert [item["id"] for item in body["items"]] == ids[:20]
    assert (body["total"], body["page"], body["page_size"], body["total_pages"]) == (45, 1, 20, 3)

    _, response = client.get("/products?page=3")
    body = response.json
    assert [item["id"] for item in body["items"]] == ids[40:]
    assert body["page"] == 3
    assert "X-Next-Cursor" not in response.headers and "Link" not in response.headers


def test_page_past_the_last_is_empty(client, db: Database) -> None:
    db.product()
    _, response = client.get("/products?page=5")
    assert response.status == 200
    assert response.json["items"] == [] and response.json["total"] == 1


def test_empty_catalog(client, db: Database) -> None:
    _, response = client.get("/products")
    assert response.json == {"items": [], "total": 0, "page": 1, "page_size": 20, "total_pages": 0}


def test_filters(client, db: Database) -> None:
    kitchen, garden = db.category("Kitchen"), db.category("Garden")
    active_kitchen = [db.product(category_id=kitchen) for _ in range(3)]
    inactive_kitchen = [db.product(category_id=kitchen, is_active=False) for _ in range(2)]
    db.product(category_id=garden)

    def ids(query: str) -> tuple[list[int], int]:
        _, response = client.get(f"/products?{query}")
        assert response.status == 200, response.text
        return [item["id"] for item in response.json["items"]], response.json["total"]

    assert ids(f"category_id={kitchen}") == (active_kitchen, 3)
    assert ids(f"category_id={kitchen}&is_active=false") == (inactive_kitchen, 2)
    for spelling in ("0", "no", "OFF", "False"):
        assert ids(f"category_id={kitchen}&is_active={spelling}") == (inactive_kitchen, 2)
    for spelling in ("1", "yes", "On", "TRUE"):
        assert ids(f"category_id={kitchen}&is_active={spelling}") == (active_kitchen, 3)
    assert ids("category_id=999") == ([], 0)


def walk_cursors(client, query: str) -> tuple[list[int], list[int]]:
    """Follow X-Next-Cursor from the first page; the ids seen and the page numbers reported."""
    seen: list[int] = []
    pages: list[int] = []
    url = f"/products?{query}"
    while True:
        _, response = client.get(url)
        assert response.status == 200, response.text
        body = response.json
        seen.extend(item["id"] for item in body["items"])
        pages.append(body["page"])
        next_cursor = response.headers.get("X-Next-Cursor")
        if next_cursor is None:
            assert "Link" not in response.headers
            return seen, pages
        assert f"cursor={next_cursor}" in links(response.headers["Link"])["next"]
        url = f"/products?{query}&cursor={next_cursor}"


def test_cursor_walk_visits_each_product_once_in_order_and_matches_pages(client, db: Database) -> None:
    kitchen = db.category()
    expected = []
    for i in range(53):
        active = i % 7 != 0
        product = db.product(f"P{i}", category_id=kitchen if i % 2 else None, is_active=active)
        if active and i % 2:
            expected.append(product)

    seen, pages = walk_cursors(client, f"category_id={kitchen}&page_size=4")
    assert seen == expected
    assert pages == list(range(1, math.ceil(len(expected) / 4) + 1))

    by_page = []
    for page in pages:
        _, response = client.get(f"/products?category_id={kitchen}&page_size=4&page={page}")
        by_page.extend(item["id"] for item in response.json["items"])
    assert by_page == seen


def test_link_header_is_a_working_absolute_url(client, db: Database) -> None:
    ids = [db.product() for _ in range(3)]
    _, response = client.get("/products?page_size=2")
    url = links(response.headers["Link"])["next"]
    assert url.startswith("http://")
    path = url[url.index("/products") :]
    _, response = client.get(path)
    assert [item["id"] for item in response.json["items"]] == ids[2:]
    assert response.json["page"] == 2


def test_cursor_wins_over_page(client, db: Database) -> None:
    ids = [db.product() for _ in range(6)]
    _, first = client.get("/products?page_size=2")
    _, response = client.get(f"/products?page_size=2&page=3&cursor={first.headers['X-Next-Cursor']}")
    assert [item["id"] for item in response.json["items"]] == ids[2:4]
    assert response.json["page"] == 2


def test_cursor_continues_after_the_last_row_even_if_it_was_deleted(client, db: Database) -> None:
    ids = [db.product() for _ in range(5)]
    _, first = client.get("/products?page_size=2")
    db.execute("DELETE FROM products WHERE id = $1", ids[1])
    _, response = client.get(f"/products?page_size=2&cursor={first.headers['X-Next-Cursor']}")
    assert [item["id"] for item in response.json["items"]] == ids[2:4]
