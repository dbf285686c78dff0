"""The OpenAPI document says what the API does: the bounds, required fields, nullable fields and patterns it
states for a request body are the ones enforced, and the keys it states for a response are the ones sent,
in the declared order (catalog.contract declares each shape once for all three)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from catalog import contract
from tests.conftest import Database

NUL = "\x00"


@pytest.fixture(scope="module")
def document(client) -> dict[str, Any]:
    _, response = client.get("/docs/openapi.json")
    assert response.status == 200
    return response.json


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["schemas"][name]


def post(client, body: object):
    return client.post("/products", content=orjson.dumps(body), headers={"content-type": "application/json"})


def put(client, product_id: int, body: object):
    return client.put(f"/products/{product_id}", content=orjson.dumps(body))


def test_document_serves_the_declared_components(document) -> None:
    assert document["components"]["schemas"] == contract.COMPONENTS
    assert list(document["components"]["schemas"]["Product"]["properties"]) == list(contract.PRODUCT.names)


def test_name_length_in_the_document_is_the_one_enforced(client, db: Database, document) -> None:
    for shape in ("ProductCreate", "ProductUpdate"):
        bounds = schema(document, shape)["properties"]["name"]
        fewest, most = bounds["minLength"], bounds["maxLength"]
        product = db.product()
        for length, kind in ((most + 1, "string_too_long"), (fewest - 1, "string_too_short")):
            body = {"name": "x" * length, "price": 1}
            _, response = post(client, body) if shape == "ProductCreate" else put(client, product, body)
            assert response.status == 422, (shape, length)
            assert response.json["detail"] == [
                {"loc": ["body", "name"], "msg": f"String should have {fewest} to {most} characters", "type": kind}
            ]
        for length in (fewest, most):
            body = {"name": "x" * length, "price": 1}
            _, response = post(client, body) if shape == "ProductCreate" else put(client, product, body)
            assert response.status in (200, 201) and len(response.json["name"]) == length, (shape, length)


def test_price_minimum_in_the_document_is_the_one_enforced(client, db: Database, document) -> None:
    minimum = schema(document, "ProductCreate")["properties"]["price"]["minimum"]
    _, response = post(client, {"name": "x", "price": minimum - 0.01})
    assert response.json["detail"] == [
        {"loc": ["body", "price"], "msg": f"Input should be greater than or equal to {minimum}",
         "type": "greater_than_equal"}
    ]
    _, response = post(client, {"name": "x", "price": minimum})
    assert response.status == 201 and response.json["price"] == minimum
    query_minimum = {p["name"]: p["schema"].get("minimum") for p in document["paths"]["/products"]["get"]["parameters"]}
    assert query_minimum["min_price"] == query_minimum["max_price"] == minimum
    _, response = client.get(f"/products?min_price={minimum - 0.01}")
    assert response.status == 422 and response.json["detail"][0]["type"] == "greater_than_equal"


@pytest.mark.parametrize(("shape", "method"), [("ProductCreate", post), ("ProductUpdate", put)])
def test_required_fields_in_the_document_are_the_ones_missing(client, db: Database, document, shape, method) -> None:
    product = db.product()
    _, response = method(client, {}) if method is post else method(client, product, {})
    missing = [] if response.status == 200 else [item["loc"][1] for item in response.json["detail"]]
    assert missing == schema(document, shape)["required"]


def test_nullable_and_patterned_fields_are_as_documented(client, db: Database, document) -> None:
    """Null is taken where the document says nullable and refused elsewhere; a NUL breaks a documented pattern."""
    category = db.category()
    product = db.product()
    valid = {"name": "x", "description": "y", "price": 1, "category_id": category, "is_active": True}
    for name, field in schema(document, "ProductUpdate")["properties"].items():
        _, response = put(client, product, {name: None})
        assert response.status == (200 if field.get("nullable") else 422), name
        if "pattern" in field:
            _, response = put(client, product, {name: f"bad{NUL}"})
            assert response.json["detail"] == [
                {"loc": ["body", name], "msg": "String should not contain NUL characters",
                 "type": "string_pattern_mismatch"}
            ]
        _, response = put(client, product, {name: valid[name]})
        assert response.status == 200, name


def test_search_length_in_the_document_is_the_one_enforced(client, db: Database, document) -> None:
    parameters = {p["name"]: p["schema"] for p in document["paths"]["/products"]["get"]["parameters"]}
    most = parameters["q"]["maxLength"]
    _, response = client.get(f"/products?q={'a' * most}")
    assert response.status == 200
    _, response = client.get(f"/products?q={'a' * (most + 1)}")
    assert response.json["detail"] == [
        {"loc": ["query", "q"], "msg": f"String should have at most {most} characters", "type": "string_too_long"}
    ]


def test_responses_send_the_documented_keys_in_order(client, db: Database, document) -> None:
    def keys(name: str) -> list[str]:
        return list(schema(document, name)["properties"])

    category = db.category("Kitchen", "Pots")
    product = db.product("Kettle", 5.0, category)
    db.review(product, 4, comment="fine")
    db.inventory(product, quantity=3, reserved=1)

    _, response = client.get(f"/products/{product}")
    body = response.json
    assert list(body) == keys("Product")
    assert list(body["category"]) == keys("Category")
    assert list(body["reviews"][0]) == keys("Review")
    assert list(body["inventory"]) == keys("Inventory")

    _, response = client.get("/products?include=")  # only what a Product always has
    assert list(response.json) == keys("ProductList")
    assert list(response.json["items"][0]) == schema(document, "Product")["required"]
    _, response = client.get("/products?include=reviews")
    assert list(response.json["items"][0]) == [key for key in keys("Product") if key not in ("category", "inventory")]

    _, response = client.get(f"/products/{product}/reviews")
    assert list(response.json) == keys("ReviewList") and list(response.json["items"][0]) == keys("Review")
    _, response = client.get("/categories")
    assert list(response.json[0]) == keys("Category")
    _, response = post(client, {"name": "Pan", "price": 3, "category_id": category})
    assert response.status == 201 and list(response.json) == keys("Product")
