"""Bad input on every parameter and body field: a 422 naming each bad field, never a 500, nothing written."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import Database


def assert_422(response, *locs: list) -> None:
    assert response.status == 422, response.text
    detail = response.json["detail"]
    assert all(set(item) == {"loc", "msg", "type"} for item in detail)
    assert [item["loc"] for item in detail] == [list(loc) for loc in locs]


@pytest.mark.parametrize(
    ("query", "locs"),
    [
        ("page_size=0", [["query", "page_size"]]),
        ("page_size=101", [["query", "page_size"]]),
        ("page_size=-5", [["query", "page_size"]]),
        ("page_size=abc", [["query", "page_size"]]),
        ("page_size=2.5", [["query", "page_size"]]),
        ("page_size=99999999999999999999999999", [["query", "page_size"]]),
        ("page=0", [["query", "page"]]),
        ("page=-1", [["query", "page"]]),
        ("page=x", [["query", "page"]]),
        ("page=99999999999999", [["query", "page"]]),
        ("category_id=abc", [["query", "category_id"]]),
        ("category_id=0", [["query", "category_id"]]),
        ("category_id=2147483648", [["query", "category_id"]]),
        ("is_active=maybe", [["query", "is_active"]]),
        ("is_active=2", [["query", "is_active"]]),
        ("cursor=garbage", [["query", "cursor"]]),
        ("cursor=a.b", [["query", "cursor"]]),
        ("cursor=" + "A" * 5000, [["query", "cursor"]]),
        ("page_size=0&page=0&is_active=x&category_id=y",
         [["query", "page_size"], ["query", "is_active"], ["query", "category_id"], ["query", "page"]]),
    ],
)
def test_list_parameters(client, db: Database, query: str, locs: list) -> None:
    _, response = client.get(f"/products?{query}")
    assert_422(response, *locs)


def test_tampered_and_foreign_cursors(client, db: Database) -> None:
    kitchen = db.category()
    for _ in range(3):
        db.product(category_id=kitchen)
    _, response = client.get(f"/products?page_size=1&category_id={kitchen}")
    cursor = response.headers["X-Next-Cursor"]
    payload, signature = cursor.split(".")
    tampered = ("B" if payload[0] != "B" else "C") + payload[1:]
    for bad in (f"{tampered}.{signature}", f"{payload}.{signature[:-2]}", f"{payload}.", f".{signature}"):
        _, response = client.get(f"/products?page_size=1&category_id={kitchen}&cursor={bad}")
        assert_422(response, ["query", "cursor"])
    # A cursor made for one filter is refused under another, never served with the other's rows.
    _, response = client.get(f"/products?page_size=1&cursor={cursor}")
    assert_422(response, ["query", "cursor"])
    _, response = client.get(f"/products?page_size=1&category_id={kitchen}&is_active=false&cursor={cursor}")
    assert_422(response, ["query", "cursor"])


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("", ["query", "ids"]),
        ("ids=", ["query", "ids"]),
        ("ids=1,a", ["query", "ids", 1]),
        ("ids=1,,2", ["query", "ids", 1]),
        ("ids=1.5", ["query", "ids", 0]),
        ("ids=" + ",".join(["1"] * 101), ["query", "ids"]),
        ("ids=" + ",".join(["1"] * 2_000), ["query", "ids"]),
    ],
)
def test_batch_ids(client, db: Database, query: str, loc: list) -> None:
    _, response = client.get(f"/products/batch?{query}")
    assert_422(response, loc)


def test_request_line_past_the_header_limit_is_413_json(client, db: Database) -> None:
    ids = ",".join(["1"] * 10_000)
    _, response = client.get(f"/products/batch?ids={ids}")
    assert response.status == 413
    assert response.json == {"detail": "Request header exceeds the size limit"}


@pytest.mark.parametrize("path", ["/products/abc", "/products/1.5", "/products/1e3"])
def test_product_id_not_an_integer(client, db: Database, path: str) -> None:
    for send in (client.get, client.delete, lambda url: client.put(url, content=b"{}")):
        _, response = send(path)
        assert_422(response, ["path", "product_id"])


def test_category_id_path_and_threshold(client, db: Database) -> None:
    _, response = client.get("/categories/abc/products")
    assert_422(response, ["path", "category_id"])
    for threshold in ("0", "-3", "x", "1e9"):
        _, response = client.get(f"/inventory/low-stock?threshold={threshold}")
        assert_422(response, ["query", "threshold"])


def post_raw(client, body: bytes):
    return client.post("/products", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({}, [["body", "name"], ["body", "price"]]),
        ({"name": "", "price": 1}, [["body", "name"]]),
        ({"name": "x" * 201, "price": 1}, [["body", "name"]]),
        ({"name": 5, "price": 1}, [["body", "name"]]),
        ({"name": None, "price": 1}, [["body", "name"]]),
        ({"name": "x", "price": -0.01}, [["body", "price"]]),
        ({"name": "x", "price": "12"}, [["body", "price"]]),
        ({"name": "x", "price": True}, [["body", "price"]]),
        ({"name": "x", "price": None}, [["body", "price"]]),
        ({"name": "x", "price": 1, "description": 3}, [["body", "description"]]),
        ({"name": "x", "price": 1, "category_id": "1"}, [["body", "category_id"]]),
        ({"name": "x", "price": 1, "category_id": 1.5}, [["body", "category_id"]]),
        ({"name": "x", "price": 1, "category_id": True}, [["body", "category_id"]]),
        ({"name": "x", "price": 1, "category_id": 2**40}, [["body", "category_id"]]),
        ({"name": "x", "price": 1, "category_id": -1}, [["body", "category_id"]]),
        ({"name": "", "price": -1, "description": [], "category_id": "a"},
         [["body", "name"], ["body", "description"], ["body", "price"], ["body", "category_id"]]),
        ([1, 2], [["body"]]),
        ("text", [["body"]]),
        (None, [["body"]]),
    ],
)
def test_create_body(client, db: Database, body: object, locs: list) -> None:
    _, response = post_raw(client, orjson.dumps(body))
    assert_422(response, *locs)
    assert db.fetchval("SELECT count(*) FROM products") == 0


@pytest.mark.parametrize("raw", [b"", b"{", b'{"name": "x", "price": NaN}', b'{"name":"x","price":1e400}', b"\xff\xfe"])
def test_create_malformed_json(client, db: Database, raw: bytes) -> None:
    _, response = post_raw(client, raw)
    assert_422(response, ["body"])
    assert db.fetchval("SELECT count(*) FROM products") == 0


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({"name": ""}, [["body", "name"]]),
        ({"name": None}, [["body", "name"]]),
        ({"price": -1}, [["body", "price"]]),
        ({"price": None}, [["body", "price"]]),
        ({"is_active": "yes"}, [["body", "is_active"]]),
        ({"is_active": None}, [["body", "is_active"]]),
        ({"category_id": "x", "is_active": 1}, [["body", "category_id"], ["body", "is_active"]]),
        ([], [["body"]]),
    ],
)
def test_update_body(client, db: Database, body: object, locs: list) -> None:
    product = db.product("Kettle", 5.0)
    _, response = client.put(f"/products/{product}", content=orjson.dumps(body))
    assert_422(response, *locs)
    row = db.fetch("SELECT name, price, is_active FROM products WHERE id = $1", product)[0]
    assert tuple(row) == ("Kettle", 5.0, True)


def test_injection_strings_are_data_not_sql(client, db: Database) -> None:
    payload = "x'); DROP TABLE products; --"
    _, response = client.get(f"/products?category_id={payload}")
    assert_422(response, ["query", "category_id"])
    _, response = post_raw(client, orjson.dumps({"name": payload, "price": 1}))
    assert response.status == 201 and response.json["name"] == payload
    assert db.fetchval("SELECT count(*) FROM products") == 1


@pytest.mark.parametrize("field", ["name", "description"])
def test_nul_characters_are_refused_not_a_database_error(client, db: Database, field: str) -> None:
    body = {"name": "ok", "price": 1, field: "bad\x00value"}
    _, response = post_raw(client, orjson.dumps(body))
    assert_422(response, ["body", field])
    product = db.product("Kettle")
    _, response = client.put(f"/products/{product}", content=orjson.dumps({field: "\x00"}))
    assert_422(response, ["body", field])
    assert db.fetchval("SELECT count(*) FROM products") == 1


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_bodies_that_are_not_json_get_415(client, db: Database, content_type: str) -> None:
    _, response = client.post("/products", content=b'{"name": "x", "price": 1}', headers={"content-type": content_type})
    assert response.status == 415 and response.json == {"detail": "Request body must be application/json"}
    _, response = client.post(
        "/products", content=b'{"name": "x", "price": 1}', headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status == 201
    assert db.fetchval("SELECT count(*) FROM products") == 1


def test_unicode_and_duplicate_parameters(client, db: Database) -> None:
    _, response = post_raw(client, orjson.dumps({"name": "Teekessel ☕ 日本", "price": 1}))
    assert response.status == 201 and response.json["name"] == "Teekessel ☕ 日本"
    _, response = client.get("/products?page_size=1&page_size=abc")
    assert response.status == 200 and response.json["page_size"] == 1  # the first of a repeated parameter counts
    _, response = client.get("/products?category_id=%00")
    assert_422(response, ["query", "category_id"])
    _, response = client.get("/products/1%00")
    assert_422(response, ["path", "product_id"])


@pytest.mark.parametrize("name", ["page_size", "page", "category_id", "is_active", "sort", "min_price", "max_price"])
def test_an_empty_typed_parameter_is_invalid(client, db: Database, name: str) -> None:
    _, response = client.get(f"/products?{name}=")
    assert_422(response, ["query", name])


def test_empty_cursor_and_search_mean_none(client, db: Database) -> None:
    product = db.product("Kettle")
    for query in ("cursor=", "q=", "q=%20"):
        _, response = client.get(f"/products?{query}")
        assert response.status == 200 and [item["id"] for item in response.json["items"]] == [product], query


INJECTIONS = ["1; DROP TABLE products", "' OR '1'='1", "1) OR (1=1", "\\'; DELETE FROM reviews; --", "%27%3B--"]
QUERY_PARAMETERS = ["page_size", "page", "category_id", "is_active", "cursor", "sort", "min_price", "max_price", "include"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_every_parameter_and_field_changes_nothing(client, db: Database, payload: str) -> None:
    product = db.product("Kettle", 5.0)
    db.review(product, 4)
    before = db.fetch("SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM reviews)")[0]
    for name in QUERY_PARAMETERS:
        _, response = client.get("/products", params={name: payload})
        assert response.status == 422, (name, response.text)
    for url in ("/products/batch", "/inventory/low-stock"):
        _, response = client.get(url, params={"ids" if "batch" in url else "threshold": payload})
        assert response.status == 422
    _, response = client.get("/products", params={"q": payload})
    assert response.status in (200, 422) and response.json.get("items", []) == []
    for path in (f"/products/{payload}", f"/categories/{payload}/products", f"/products/{payload}/reviews"):
        _, response = client.get(path)
        assert response.status in (404, 422), path
    for field in ("price", "category_id", "is_active"):
        _, response = client.put(f"/products/{product}", content=orjson.dumps({field: payload}))
        assert response.status == 422, field
    _, response = client.put(f"/products/{product}", content=orjson.dumps({"name": payload, "description": payload}))
    assert response.status == 200 and response.json["name"] == payload  # stored as text, never run
    after = db.fetch("SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM reviews)")[0]
    assert tuple(after) == tuple(before)


def error(field: str, msg: str, type_: str) -> dict:
    return {"loc": ["body", field], "msg": msg, "type": type_}


@pytest.mark.parametrize(
    ("method", "body", "detail"),
    [
        ("POST", {}, [error("name", "Field required", "missing"), error("price", "Field required", "missing")]),
        ("POST", {"name": "x" * 201, "price": -1, "description": "a\x00", "category_id": 0, "is_active": "ignored"}, [
            error("name", "String should have 1 to 200 characters", "string_too_long"),
            error("description", "String should not contain NUL characters", "string_pattern_mismatch"),
            error("price", "Input should be greater than or equal to 0", "greater_than_equal"),
            error("category_id", "Category 0 does not exist", "foreign_key"),
        ]),
        ("POST", {"category_id": 1.5, "description": 3, "price": True, "name": ""}, [
            error("name", "String should have 1 to 200 characters", "string_too_short"),
            error("description", "Input should be a valid string", "string_type"),
            error("price", "Input should be a valid number", "float_type"),
            error("category_id", "Input should be a valid integer", "int_type"),
        ]),
        ("POST", {"name": "x", "price": 1, "category_id": 2**31}, [
            error("category_id", "Category 2147483648 does not exist", "foreign_key"),
        ]),
        ("POST", [1], [{"loc": ["body"], "msg": "Input should be a valid dictionary or object", "type": "dict_type"}]),
        ("PUT", {"is_active": "yes", "category_id": True, "price": "12", "name": None}, [
            error("name", "Input should be a valid string", "string_type"),
            error("price", "Input should be a valid number", "float_type"),
            error("category_id", "Input should be a valid integer", "int_type"),
            error("is_active", "Input should be a valid boolean", "bool_type"),
        ]),
        ("PUT", {"name": "\x00", "unknown": 1}, [
            error("name", "String should not contain NUL characters", "string_pattern_mismatch"),
        ]),
    ],
)
def test_body_errors_word_for_word(client, db: Database, method: str, body: object, detail: list) -> None:
    """The frontend shows these messages: their wording, types and order are part of the contract."""
    product = db.product("Kettle", 5.0)
    if method == "POST":
        _, response = post_raw(client, orjson.dumps(body))
    else:
        _, response = client.put(f"/products/{product}", content=orjson.dumps(body))
    assert response.status == 422 and response.json == {"detail": detail}
    assert db.fetchval("SELECT count(*) FROM products") == 1


def test_a_category_that_does_not_exist_is_named(client, db: Database) -> None:
    missing = db.category() + 1000
    _, response = post_raw(client, orjson.dumps({"name": "x", "price": 1, "category_id": missing}))
    assert response.json == {"detail": [error("category_id", f"Category {missing} does not exist", "foreign_key")]}
    product = db.product()
    _, response = client.put(f"/products/{product}", content=orjson.dumps({"category_id": missing}))
    assert response.json == {"detail": [error("category_id", f"Category {missing} does not exist", "foreign_key")]}
