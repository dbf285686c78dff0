"""POST, PUT and DELETE /products: what is written, what is answered, what is refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from tests.conftest import Database


def post(client, body: object):
    return client.post("/products", content=orjson.dumps(body), headers={"content-type": "application/json"})


def put(client, product_id: int | str, body: object):
    return client.put(
        f"/products/{product_id}", content=orjson.dumps(body), headers={"content-type": "application/json"}
    )


def test_create_returns_the_new_product_and_writes_it(client, db: Database) -> None:
    category = db.category("Kitchen")
    before = datetime.utcnow() - timedelta(seconds=5)
    _, response = post(client, {"name": "Kettle", "description": "Steel", "price": 19.99, "category_id": category,
                                "is_active": False, "unknown": "ignored"})
    assert response.status == 201, response.text
    body = response.json
    row = db.fetch("SELECT * FROM products WHERE id = $1", body["id"])[0]
    assert (row["name"], row["description"], row["price"], row["category_id"]) == ("Kettle", "Steel", 19.99, category)
    assert row["is_active"] is True  # is_active is not a POST field
    assert before <= row["created_at"] <= datetime.utcnow() + timedelta(seconds=5)
    assert body == {
        "id": row["id"], "name": "Kettle", "description": "Steel", "price": 19.99, "category_id": category,
        "is_active": True, "created_at": row["created_at"].isoformat(),
        "category": {"id": category, "name": "Kitchen", "description": None},
        "reviews": [], "inventory": None, "average_rating": None, "review_count": 0,
    }


def test_create_minimal(client, db: Database) -> None:
    _, response = post(client, {"name": "x", "price": 0})
    assert response.status == 201
    assert response.json["category"] is None and response.json["description"] is None
    assert response.json["price"] == 0.0


def test_create_with_unknown_category_is_422_and_writes_nothing(client, db: Database) -> None:
    _, response = post(client, {"name": "Kettle", "price": 1, "category_id": 424242})
    assert response.status == 422
    assert response.json["detail"][0]["loc"] == ["body", "category_id"]
    assert db.fetchval("SELECT count(*) FROM products") == 0


def test_update_changes_only_given_fields_and_sets_updated_at(client, db: Database) -> None:
    kitchen, garden = db.category("Kitchen"), db.category("Garden")
    product = db.product("Kettle", 10.0, kitchen, description="Steel")
    db.execute("UPDATE products SET updated_at = '2020-01-01' WHERE id = $1", product)

    _, response = put(client, product, {"price": 12.5, "category_id": garden})
    assert response.status == 200, response.text
    assert (response.json["price"], response.json["category"]["name"]) == (12.5, "Garden")
    assert (response.json["name"], response.json["description"]) == ("Kettle", "Steel")
    row = db.fetch("SELECT * FROM products WHERE id = $1", product)[0]
    assert (row["price"], row["category_id"], row["name"]) == (12.5, garden, "Kettle")
    assert row["updated_at"] > datetime(2020, 1, 2)


def test_update_null_category_removes_it_and_is_active_toggles(client, db: Database) -> None:
    product = db.product(category_id=db.category())
    _, response = put(client, product, {"category_id": None, "is_active": False})
    assert response.status == 200
    assert (response.json["category_id"], response.json["category"], response.json["is_active"]) == (None, None, False)
    assert db.fetchval("SELECT category_id IS NULL AND NOT is_active FROM products WHERE id = $1", product)


def test_empty_update_changes_nothing(client, db: Database) -> None:
    product = db.product("Kettle")
    db.execute("UPDATE products SET updated_at = '2020-01-01' WHERE id = $1", product)
    _, response = put(client, product, {})
    assert response.status == 200 and response.json["name"] == "Kettle"
    assert db.fetchval("SELECT updated_at FROM products WHERE id = $1", product) == datetime(2020, 1, 1)


def test_update_absent_or_unknown_category(client, db: Database) -> None:
    _, response = put(client, 999, {"name": "x"})
    assert response.status == 404 and response.json == {"detail": "Product not found"}
    _, response = put(client, 999, {})
    assert response.status == 404
    product = db.product(category_id=db.category())
    _, response = put(client, product, {"category_id": 31337})
    assert response.status == 422 and response.json["detail"][0]["loc"] == ["body", "category_id"]


def test_delete_takes_reviews_and_inventory_along(client, db: Database) -> None:
    product, other = db.product(), db.product()
    for product_id in (product, other):
        db.review(product_id, 4)
        db.inventory(product_id, 5)
    _, response = client.delete(f"/products/{product}")
    assert response.status == 204 and response.body == b""
    counts = db.fetch(
        "SELECT (SELECT count(*) FROM products WHERE id = $1) p, (SELECT count(*) FROM reviews WHERE product_id = $1) r,"
        " (SELECT count(*) FROM inventory WHERE product_id = $1) i, (SELECT count(*) FROM reviews) all_r", product
    )[0]
    assert tuple(counts) == (0, 0, 0, 1)
    _, response = client.delete(f"/products/{product}")
    assert response.status == 404 and response.json == {"detail": "Product not found"}


def test_written_product_is_visible_to_the_next_read(client, db: Database) -> None:
    _, created = post(client, {"name": "New", "price": 3})
    _, listing = client.get("/products")
    assert [item["id"] for item in listing.json["items"]] == [created.json["id"]]
    assert listing.json["total"] == 1
