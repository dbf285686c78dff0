"""HTTP behaviour: ETag and 304, gzip, JSON errors, OpenAPI, CORS, health."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from catalog.representation import accepts_gzip, if_none_match_hits
from tests.conftest import Database

PLAIN = {"accept-encoding": "identity"}


@pytest.fixture
def big_catalog(db: Database) -> Database:
    kitchen = db.category("Kitchen", "Pots, pans and everything else a kitchen needs")
    for i in range(20):
        product = db.product(f"Stainless kettle {i}", 20.0 + i, kitchen, description="A kettle that boils water " * 3)
        db.review(product, 4, comment="Boils water quickly and quietly")
        db.inventory(product, 30)
    return db


def test_get_carries_a_strong_etag_and_304_on_match(client, big_catalog: Database) -> None:
    _, first = client.get("/products", headers=PLAIN)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert first.headers["cache-control"] == "no-cache"
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        _, response = client.get("/products", headers={**PLAIN, "if-none-match": header})
        assert response.status == 304
        assert response.body == b""
        assert response.headers["etag"] == etag
        assert response.headers["vary"] == first.headers["vary"]
        assert response.headers["cache-control"] == "no-cache"
    _, response = client.get("/products", headers={**PLAIN, "if-none-match": '"stale"'})
    assert response.status == 200 and response.body == first.body


def test_etag_changes_with_the_data(client, big_catalog: Database) -> None:
    _, before = client.get("/products/1", headers=PLAIN)
    big_catalog.execute("UPDATE products SET price = 99 WHERE id = 1")
    _, after = client.get("/products/1", headers={**PLAIN, "if-none-match": before.headers["etag"]})
    assert after.status == 200 and after.json["price"] == 99
    assert after.headers["etag"] != before.headers["etag"]


def test_every_successful_get_has_an_etag(client, big_catalog: Database) -> None:
    for url in ("/products", "/products/1", "/products/batch?ids=1,2", "/categories", "/categories/1/products",
                "/inventory/low-stock?threshold=100", "/health"):
        _, response = client.get(url)
        assert response.status == 200 and response.headers.get("etag"), url


def test_large_bodies_are_gzipped_for_clients_that_accept_it(client, big_catalog: Database) -> None:
    _, plain = client.get("/products", headers=PLAIN)
    assert "content-encoding" not in plain.headers
    assert len(plain.body) > 1024
    _, zipped = client.get("/products", headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["vary"]
    # httpx has gunzipped the body (the round trip); the wire size is the Content-Length sent.
    assert zipped.body == plain.body
    assert int(zipped.headers["content-length"]) <= 0.3 * len(plain.body)
    assert zipped.headers["etag"] != plain.headers["etag"]
    _, response = client.get("/products", headers={"accept-encoding": "gzip", "if-none-match": zipped.headers["etag"]})
    assert response.status == 304 and "content-encoding" not in response.headers


def test_small_bodies_and_refusing_clients_get_plain_json(client, big_catalog: Database) -> None:
    _, response = client.get("/categories", headers={"accept-encoding": "gzip"})
    assert len(response.body) <= 1024 and "content-encoding" not in response.headers
    _, response = client.get("/products", headers={"accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, False), ("", False), ("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.5", True),
     ("gzip;q=0", False), ("gzip; q=0.0", False), ("*", True), ("*;q=0", False), ("br", False),
     ("*, gzip;q=0", False), ("identity, *;q=0.1", True), ("gzip;q=abc", False)],
)
def test_accept_encoding_parsing(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_if_none_match_parsing() -> None:
    assert if_none_match_hits('W/"a", "b"', '"a"')
    assert not if_none_match_hits('"ab"', '"a"')
    assert not if_none_match_hits(None, '"a"')


def test_errors_are_json(client, db: Database) -> None:
    _, response = client.get("/no/such/route")
    assert response.status == 404 and "detail" in response.json
    _, response = client.patch("/products/1")
    assert response.status == 405 and "detail" in response.json
    assert response.headers["content-type"].startswith("application/json")


def test_body_over_the_limit_is_413(client, app, db: Database) -> None:
    body = orjson.dumps({"name": "x", "price": 1, "description": "a" * (app.config.REQUEST_MAX_SIZE + 1)})
    _, response = client.post("/products", content=body)
    assert response.status == 413 and "detail" in response.json
    assert db.fetchval("SELECT count(*) FROM products") == 0


def test_health(client) -> None:
    _, response = client.get("/health")
    assert response.status == 200 and response.json == {"status": "healthy"}


def test_timing_header_and_log(client, db: Database, caplog) -> None:
    with caplog.at_level("INFO", logger="catalog.access"):
        _, response = client.get("/categories")
    assert response.headers["server-timing"].startswith("total;dur=")
    assert 'db;dur=' in response.headers["server-timing"] and "cache;dur=" in response.headers["server-timing"]
    line = next(record.getMessage() for record in caplog.records if record.name == "catalog.access")
    assert line.startswith("GET /categories 200 ") and "sql=1" in line


def test_openapi_document_lists_every_endpoint(client) -> None:
    _, response = client.get("/docs/openapi.json")
    assert response.status == 200
    paths = response.json["paths"]
    assert {"/products", "/products/batch", "/products/{product_id}", "/categories",
            "/categories/{category_id}/products", "/inventory/low-stock", "/health"} <= set(paths)
    assert set(paths["/products/{product_id}"]) >= {"get", "put", "delete"}
    assert "Product" in response.json["components"]["schemas"]


def test_cors_answers_configured_origins_only(client, settings) -> None:
    origin = settings.cors_origins[0]
    _, response = client.options(
        "/products", headers={"origin": origin, "access-control-request-method": "GET"}
    )
    assert response.headers.get("access-control-allow-origin") == origin
    _, response = client.get("/products", headers={"origin": origin})
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-next-cursor", "link", "etag", "x-total-count-estimated"} <= exposed
    _, response = client.get("/health", headers={"origin": "https://evil.example"})
    assert response.headers.get("access-control-allow-origin") != "https://evil.example"


def test_slow_requests_are_logged_as_such(client, db: Database, settings, caplog) -> None:
    product = db.product()
    base = f"http://{client.host}:{client.port}"

    async def put_behind_a_row_lock() -> int:
        # Holding the product's row lock makes the PUT wait on purpose, past SLOW_REQUEST_MS.
        async with db.connection.transaction():
            await db.connection.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", product)
            put = asyncio.ensure_future(client._session.put(f"{base}/products/{product}", json={"price": 2}))
            await asyncio.sleep(settings.slow_request_ms / 1000 + 0.1)
        return (await put).status_code

    with caplog.at_level("INFO", logger="catalog.access"):
        assert db.run(put_behind_a_row_lock()) == 200
        client.get("/health")
    lines = {record.getMessage().split()[1]: record for record in caplog.records if record.name == "catalog.access"}
    assert lines[f"/products/{product}"].levelname == "WARNING" and lines[f"/products/{product}"].getMessage().endswith("SLOW")
    assert lines["/health"].levelname == "INFO" and "SLOW" not in lines["/health"].getMessage()


def test_head_is_never_compressed(client, db: Database) -> None:
    for i in range(20):
        db.product(f"A product with a name long enough {i}", description="x" * 100)
    _, response = client.head("/products", headers={"accept-encoding": "gzip"})
    assert response.status == 200 and "content-encoding" not in response.headers and response.headers["etag"]


def test_every_response_carries_a_request_id(client, db: Database) -> None:
    _, response = client.get("/health", headers={"x-request-id": "abc-123.x:y"})
    assert response.headers["x-request-id"] == "abc-123.x:y"
    _, generated = client.get("/no/such/route")
    assert generated.status == 404 and len(generated.headers["x-request-id"]) == 32
    _, forged = client.get("/health", headers={"x-request-id": "evil value\twith spaces" + "x" * 200})
    assert " " not in forged.headers["x-request-id"] and len(forged.headers["x-request-id"]) == 32


def test_readiness_reports_postgres_and_cache(client, db: Database) -> None:
    _, response = client.get("/health/ready")
    assert response.status == 200
    assert response.json == {"status": "ready", "postgres": "ok", "cache": "ok", "cache_backend": "Redis"}


def test_requests_rejected_before_routing_are_timed_and_logged_too(client, caplog) -> None:
    """Timing starts on http.lifecycle.request, before routing and middleware, and ends on its response."""
    with caplog.at_level("INFO", logger="catalog.access"):
        _, missing = client.get("/no/such/path")
        _, not_allowed = client.patch("/products", json={})
    for response in (missing, not_allowed):
        assert response.headers["server-timing"].startswith("total;dur=")
        assert response.headers["x-request-id"]
    lines = [record.getMessage() for record in caplog.records if record.name == "catalog.access"]
    assert any(line.startswith("GET /no/such/path 404 ") for line in lines), lines
    assert any(line.startswith("PATCH /products 405 ") for line in lines), lines


def test_a_write_announces_its_change_as_a_signal_handled_before_its_response(client, app, db: Database) -> None:
    from catalog import events

    kitchen, garden = db.category("Kitchen"), db.category("Garden")
    product = db.product(category_id=kitchen)
    base = f"http://{client.host}:{client.port}"

    async def put_while_listening() -> tuple[int, bool, dict]:
        announced = asyncio.ensure_future(app.event(events.PRODUCT_CHANGED, timeout=5))
        await asyncio.sleep(0)  # the waiter is registered before the write starts
        response = await client._session.put(f"{base}/products/{product}", json={"category_id": garden})
        return response.status_code, announced.done(), await announced

    status, announced_before_response, context = db.run(put_while_listening())
    assert status == 200 and announced_before_response
    assert context["product_id"] == product
    before, after = context["before"], context["after"]
    assert (before.is_active, before.category_id, after.is_active, after.category_id) == (True, kitchen, True, garden)
    assert (before.price, before.name) == (after.price, after.name)
