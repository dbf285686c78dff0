"""GET /products/batch, /categories, /categories/{id}/products and /inventory/low-stock."""

from __future__ import annotations

from tests.conftest import Database


def ids_of(response) -> list[int]:
    assert response.status == 200, response.text
    return [item["id"] for item in response.json]


def test_batch_keeps_the_given_order_and_leaves_out_absent_ids(client, db: Database) -> None:
    first, second, inactive = db.product(), db.product(), db.product(is_active=False)
    db.review(second, 3)
    _, response = client.get(f"/products/batch?ids={inactive},999,{second},{first}")
    assert ids_of(response) == [inactive, second, first]
    assert response.json[1]["review_count"] == 1


def test_batch_accepts_spaces_and_100_ids(client, db: Database) -> None:
    products = [db.product() for _ in range(3)]
    _, response = client.get(f"/products/batch?ids= {products[0]} , {products[2]}")
    assert ids_of(response) == [products[0], products[2]]
    many = ",".join(str(i) for i in range(1, 101))
    _, response = client.get(f"/products/batch?ids={many}")
    assert ids_of(response) == products


def test_categories_by_id(client, db: Database) -> None:
    parent = db.category("Home", "Everything for the home")
    child = db.category("Kitchen", parent_id=parent)
    _, response = client.get("/categories")
    assert response.status == 200
    assert response.json == [
        {"id": parent, "name": "Home", "description": "Everything for the home"},
        {"id": child, "name": "Kitchen", "description": None},
    ]


def test_category_products_include_inactive_in_id_order(client, db: Database) -> None:
    kitchen, garden = db.category("Kitchen"), db.category("Garden")
    expected = [db.product(category_id=kitchen, is_active=i % 2 == 0) for i in range(5)]
    db.product(category_id=garden)
    _, response = client.get(f"/categories/{kitchen}/products")
    assert ids_of(response) == expected
    assert all(item["category"]["name"] == "Kitchen" for item in response.json)
    _, response = client.get("/categories/777/products")
    assert ids_of(response) == []


def test_category_products_beyond_one_chunk(client, db: Database) -> None:
    kitchen = db.category()
    db.execute(
        "INSERT INTO products (name, price, category_id) SELECT 'p' || g, g, $1 FROM generate_series(1, 2500) g",
        kitchen,
    )
    expected = [row["id"] for row in db.fetch("SELECT id FROM products ORDER BY id")]
    _, response = client.get(f"/categories/{kitchen}/products")
    assert ids_of(response) == expected


def test_low_stock_compares_available_with_threshold(client, db: Database) -> None:
    plenty, low, reserved_away, none_left, no_inventory = (db.product() for _ in range(5))
    db.inventory(plenty, 50)
    db.inventory(low, 9)
    db.inventory(reserved_away, 30, reserved=25)
    db.inventory(none_left, 0)
    inactive_low = db.product(is_active=False)
    db.inventory(inactive_low, 1)

    _, response = client.get("/inventory/low-stock")
    assert ids_of(response) == [low, reserved_away, none_left, inactive_low]
    assert response.json[1]["inventory"] == {"quantity": 30, "reserved": 25, "available": 5, "in_stock": True}
    _, response = client.get("/inventory/low-stock?threshold=1")
    assert ids_of(response) == [none_left]
    _, response = client.get("/inventory/low-stock?threshold=51")
    assert ids_of(response) == [plenty, low, reserved_away, none_left, inactive_low]
    assert no_inventory not in ids_of(response)
