"""The Redis response cache seen from outside: a real 2-worker server, each request on a new connection.

Hits are read from the Server-Timing header, the worker that answered from the access log (by the
request's X-Request-ID), so every "the next request" below is asserted for requests answered by both
workers, and totals are compared with ``SELECT count(*)``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.helpers import (
    FOLLOW_UPS,
    Catalog,
    Server,
    Sql,
    cache_layer,
    forget_cached_now,
    project,
    running,
    server_env,
    server_timing,
)

CACHE_TTL_S = 30


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture(scope="module")
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """This module's CACHE_PREFIX; its keys (and those of the short-lived server's) are deleted at the end."""
    prefix = f"catalog_workers_{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


@pytest.fixture(scope="module")
def server(database: str, catalog: Catalog, redis_url: str, prefix: str, tmp_path_factory) -> Iterator[Server]:
    # Behind one proxy, as on Heroku: Link URLs take the scheme and host the client used.
    env = server_env(database, redis_url, CACHE_PREFIX=prefix, CACHE_TTL=str(CACHE_TTL_S), SANIC_PROXIES_COUNT="1")
    with running(env, tmp_path_factory.mktemp("workers") / "server.log") as started:
        yield started


# Every cached endpoint; formatted with the seeded catalog as ``c``.
CACHED_URLS = [
    "/products", "/products?category_id={c.kitchen}", "/products/{c.first}",
    "/products/batch?ids={c.third},{c.first},{c.second}", "/categories", "/categories/{c.kitchen}/products",
    "/inventory/low-stock",
]


@pytest.mark.parametrize("template", CACHED_URLS)
def test_every_worker_serves_the_second_identical_get_from_the_cache(
    server: Server, catalog: Catalog, template: str
) -> None:
    url = template.format(c=catalog)
    warmed = server.warm(url)
    for response in server.follow_ups(url):
        assert server_timing(response) == (0, "hit"), url
        assert response.status_code == 200 and response.content == warmed.content
        assert response.headers["etag"] == warmed.headers["etag"]


@pytest.mark.parametrize("template", CACHED_URLS)
def test_a_conditional_get_of_a_cached_entry_is_a_304_without_sql(
    server: Server, catalog: Catalog, template: str
) -> None:
    url = template.format(c=catalog)
    etag = server.warm(url).headers["etag"]
    for response in server.follow_ups(url, {"if-none-match": etag}):
        assert response.status_code == 304 and response.content == b""
        assert response.headers["etag"] == etag
        assert server_timing(response) == (0, "hit"), url


def test_a_cached_page_links_with_the_scheme_and_host_each_client_asked_with(server: Server, catalog: Catalog) -> None:
    """The body is cached, and its Link URLs are absolute: one client's must never reach another."""
    asked = [("https", "shop.example"), ("http", "shop.example"), ("https", "api.example"), ("https", "shop.example")]
    for scheme, host in asked:
        headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": scheme, "host": host}
        for response in server.follow_ups("/products?page_size=1", headers):
            assert response.headers["link"].startswith(f"<{scheme}://{host}/products?"), (scheme, host)
    assert server_timing(response) == (0, "hit")


# Totals whose counts writes adjust in the cache; each with the SQL condition that counts it.
def watched_totals(catalog: Catalog) -> dict[str, str]:
    k, g = catalog.kitchen, catalog.garden
    return {
        "/products": "is_active",
        "/products?is_active=false": "NOT is_active",
        f"/products?category_id={k}": f"is_active AND category_id = {k}",
        f"/products?category_id={k}&is_active=false": f"NOT is_active AND category_id = {k}",
        f"/products?category_id={g}": f"is_active AND category_id = {g}",
        f"/products?category_id={g}&is_active=false": f"NOT is_active AND category_id = {g}",
    }


def warm_totals(server: Server, catalog: Catalog) -> dict[str, int]:
    return {url: server.warm(url).json()["total"] for url in watched_totals(catalog)}


def assert_totals(server: Server, sql: Sql, catalog: Catalog, before: dict[str, int], moved: dict[str, int]) -> None:
    """Every follow-up of every watched list has its total moved by ``moved`` (else unchanged), as counted."""
    for url, where in watched_totals(catalog).items():
        counted = sql.fetchval(f"SELECT count(*) FROM products WHERE {where}")
        assert counted == before[url] + moved.get(url, 0), url
        assert {response.json()["total"] for response in server.follow_ups(url)} == {counted}, url


def page_of(kitchen: int, index: int) -> str:
    """The kitchen's page of 10 (by id) that holds its active product number ``index`` (from 0)."""
    return f"/products?category_id={kitchen}&page_size=10&page={index // 10 + 1}"


def create(server: Server, category_id: int, name: str = "Teapot", price: float = 20.0) -> dict:
    response = server.write("POST", "/products", {"name": name, "price": price, "category_id": category_id})
    assert response.status_code == 201, response.text
    return response.json()


def assert_all_changed(server: Server, url: str, warmed: httpx.Response) -> list[httpx.Response]:
    """The follow-ups of ``url``: each with a new ETag (and all with the same body)."""
    responses = server.follow_ups(url)
    assert len({response.content for response in responses}) == 1, url
    for response in responses:
        assert response.headers.get("etag") != warmed.headers.get("etag"), url
    return responses


def test_a_created_product_shows_on_the_next_request(server: Server, sql: Sql, catalog: Catalog) -> None:
    kitchen = catalog.kitchen
    totals = warm_totals(server, catalog)
    page = page_of(kitchen, totals[f"/products?category_id={kitchen}"])  # where the new product will be
    listed, new_id = f"/categories/{kitchen}/products", sql.fetchval("SELECT last_value + 1 FROM products_id_seq")
    warmed = {url: server.warm(url) for url in (page, listed, f"/products/{new_id}")}
    assert warmed[f"/products/{new_id}"].status_code == 404  # a cached 404, which the creation must replace

    created = create(server, kitchen, "Teapot", 12.5)
    assert created["id"] == new_id
    row = sql.products("id = $1", new_id)[0]
    assert row == (new_id, "Teapot", 12.5, kitchen, True)

    for response in assert_all_changed(server, page, warmed[page]):
        assert project(response.json())["items"][-1] == row
    for response in assert_all_changed(server, listed, warmed[listed]):
        assert project(response.json()) == sql.products("category_id = $1", kitchen)
    for response in server.follow_ups(f"/products/{new_id}"):
        assert response.status_code == 200 and project(response.json()) == row
    assert_totals(server, sql, catalog, totals, {"/products": +1, f"/products?category_id={kitchen}": +1})


def test_a_price_change_shows_on_the_next_request_and_keeps_totals(server: Server, sql: Sql, catalog: Catalog) -> None:
    kitchen = catalog.kitchen
    product = create(server, kitchen)["id"]
    totals = warm_totals(server, catalog)
    page = page_of(kitchen, totals[f"/products?category_id={kitchen}"] - 1)  # the product is the last one
    urls = (f"/products/{product}", f"/products/batch?ids={catalog.first},{product}", page,
            f"/categories/{kitchen}/products")
    warmed = {url: server.warm(url) for url in urls}
    assert product in [item["id"] for item in warmed[page].json()["items"]]

    response = server.write("PUT", f"/products/{product}", {"price": 21.75})
    assert response.status_code == 200 and response.json()["price"] == 21.75
    assert sql.fetchval("SELECT price FROM products WHERE id = $1", product) == 21.75

    for url in urls:
        for response in assert_all_changed(server, url, warmed[url]):
            body = response.json()
            items = body if isinstance(body, list) else body.get("items", [body])
            assert [item["price"] for item in items if item["id"] == product] == [21.75], url
    assert_totals(server, sql, catalog, totals, {})


def test_moving_a_product_moves_it_between_totals(server: Server, sql: Sql, catalog: Catalog) -> None:
    kitchen, garden = catalog.kitchen, catalog.garden
    product = create(server, kitchen)["id"]
    totals = warm_totals(server, catalog)
    lists = {category: f"/categories/{category}/products" for category in (kitchen, garden)}
    warmed = {url: server.warm(url) for url in (*lists.values(), f"/products/{product}")}

    response = server.write("PUT", f"/products/{product}", {"category_id": garden, "is_active": False})
    assert response.status_code == 200

    for response in assert_all_changed(server, f"/products/{product}", warmed[f"/products/{product}"]):
        assert project(response.json()) == (product, "Teapot", 20.0, garden, False)
    for category, url in lists.items():
        for response in assert_all_changed(server, url, warmed[url]):
            assert project(response.json()) == sql.products("category_id = $1", category)
    assert_totals(server, sql, catalog, totals, {
        "/products": -1, f"/products?category_id={kitchen}": -1,
        "/products?is_active=false": +1, f"/products?category_id={garden}&is_active=false": +1,
    })


def test_a_deleted_product_is_gone_on_the_next_request(server: Server, sql: Sql, catalog: Catalog) -> None:
    kitchen = catalog.kitchen
    product = create(server, kitchen)["id"]
    totals = warm_totals(server, catalog)
    batch, listed = f"/products/batch?ids={product},{catalog.first}", f"/categories/{kitchen}/products"
    warmed = {url: server.warm(url) for url in (f"/products/{product}", batch, listed)}

    assert server.write("DELETE", f"/products/{product}").status_code == 204
    assert sql.products("id = $1", product) == []

    for response in server.follow_ups(f"/products/{product}"):
        assert response.status_code == 404 and response.json() == {"detail": "Product not found"}
    for response in assert_all_changed(server, batch, warmed[batch]):
        assert project(response.json()) == sql.products("id = $1", catalog.first)
    for response in assert_all_changed(server, listed, warmed[listed]):
        assert product not in [item["id"] for item in response.json()]
    assert_totals(server, sql, catalog, totals, {"/products": -1, f"/products?category_id={kitchen}": -1})


def test_redis_entries_expire_after_the_cache_ttl(
    server: Server, catalog: Catalog, redis_client: redis.Redis, prefix: str
) -> None:
    def entries() -> set[bytes]:
        return set(redis_client.scan_iter(f"{prefix}:r:*", count=1000))

    before = entries()
    urls = (f"/products?category_id={catalog.garden}&page_size=3",  # asked nowhere else
            f"/products/batch?ids={catalog.second},{catalog.third}", "/inventory/low-stock?threshold=3")
    for url in urls:
        assert server_timing(server.get(url))[1] == "miss"
    made = entries() - before
    assert len(made) == len(urls) and not any(key.endswith(b"|lock") for key in made)  # fills release their lock
    for key in made:
        assert CACHE_TTL_S * 1000 - 500 < redis_client.pttl(key) <= CACHE_TTL_S * 1000, key
    for key in before:  # nothing is kept without an expiry (-2: expired since)
        ttl = redis_client.pttl(key)
        assert ttl == -2 or 0 < ttl <= CACHE_TTL_S * 1000, key


def test_a_change_made_behind_the_service_shows_once_the_ttl_has_passed(
    database: str, sql: Sql, catalog: Catalog, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    url = f"/products/{catalog.loose}"
    env = server_env(database, redis_url, CACHE_PREFIX=f"{prefix}_ttl", CACHE_TTL="1")
    with running(env, tmp_path / "server.log") as short_lived:
        started = time.monotonic()  # the entry is filled after this, so it lives until started + 1 s at least
        first = short_lived.get(url)
        filled = time.monotonic()  # ... and at most until filled + 1 s
        assert server_timing(first)[1] == "miss"
        sql.execute("UPDATE products SET price = price + 1 WHERE id = $1", catalog.loose)

        cached = [response for response in (short_lived.get(url) for _ in range(FOLLOW_UPS))
                  if time.monotonic() < started + 0.9]
        assert cached, "the machine is too slow to see the entry within its TTL"
        for response in cached:
            assert server_timing(response) == (0, "hit") and response.json() == first.json()

        time.sleep(max(0.0, filled + 1.05 - time.monotonic()))
        for response in short_lived.follow_ups(url):
            assert response.json()["price"] == first.json()["price"] + 1


ESTIMATED = "x-total-count-estimated"
SMALL_LIMIT = 5  # EXACT_COUNT_MAX_ROWS of the server below: most watched lists are larger
SETTLE_S = 5.0


def test_totals_over_the_exact_count_limit_are_marked_estimates_until_counted_then_follow_writes(
    database: str, sql: Sql, catalog: Catalog, redis_url: str, prefix: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Every response's total is either marked as an estimate or the count; a write never adjusts an estimate."""
    lists = watched_totals(catalog)

    def count(url: str) -> int:
        return sql.fetchval(f"SELECT count(*) FROM products WHERE {lists[url]}")

    def settled(server: Server) -> None:
        """Within SETTLE_S every list answers its count, unmarked, on both workers; until then, marked estimates."""
        for url in lists:
            deadline = time.monotonic() + SETTLE_S
            while True:
                responses = server.follow_ups(url)
                exact = [response.json()["total"] == count(url) for response in responses]
                marked = [response.headers.get(ESTIMATED) == "true" for response in responses]
                assert all(e or m for e, m in zip(exact, marked)), (url, [r.json()["total"] for r in responses])
                if all(exact) and not any(marked):
                    break
                assert time.monotonic() < deadline, f"{url}: no count within {SETTLE_S} s"
                time.sleep(0.05)

    env = server_env(database, redis_url, CACHE_PREFIX=f"{prefix}_limit", EXACT_COUNT_MAX_ROWS=str(SMALL_LIMIT))
    with running(env, tmp_path / "server.log") as server:
        for url in lists:  # the first request of each list
            first = server.get(url)
            assert first.headers.get(ESTIMATED) == ("true" if count(url) > SMALL_LIMIT else None), url
            assert first.headers.get(ESTIMATED) or first.json()["total"] == count(url), url
        assert min(count(url) for url in lists) <= SMALL_LIMIT < max(count(url) for url in lists)
        settled(server)

        def update(product: int, changes: dict) -> None:
            assert server.write("PUT", f"/products/{product}", changes).status_code == 200

        # Counted lists follow writes that move products between categories and in and out of activity.
        product = create(server, catalog.kitchen)["id"]
        update(product, {"category_id": catalog.garden, "is_active": False})
        update(catalog.second, {"is_active": False})
        for url in lists:
            seen = {(response.json()["total"], response.headers.get(ESTIMATED)) for response in server.follow_ups(url)}
            assert seen == {(count(url), None)}, url

        # Writes while the lists are only estimated (their counts dropped) replace the estimates, not adjust them.
        forget_cached_now(redis_url, f"{prefix}_limit")
        for url in lists:
            server.get(url)
        update(product, {"category_id": catalog.kitchen, "is_active": True})
        update(catalog.second, {"is_active": True})
        settled(server)


@pytest.fixture(scope="module")
def uncached_server(database: str, catalog: Catalog, redis_url: str, prefix: str, tmp_path_factory) -> Iterator[Server]:
    """Responses not cached: what a request does not load from PostgreSQL comes from the product fragments."""
    env = server_env(database, redis_url, CACHE_PREFIX=f"{prefix}_fragments", CACHE_RESPONSES="false")
    with running(env, tmp_path_factory.mktemp("fragments") / "server.log") as started:
        yield started


def test_a_write_makes_a_products_fragment_unreachable_on_every_worker(
    uncached_server: Server, sql: Sql, catalog: Catalog
) -> None:
    product = catalog.second
    urls = {
        f"/products/{product}": 0,  # statements once every product is in the fragments (and the count cached)
        f"/products/batch?ids={product},{catalog.first}": 0,
        f"/products?category_id={catalog.kitchen}&page_size=100": 1,  # the keys
    }
    for url, warm in urls.items():
        responses = uncached_server.follow_ups(url)
        assert server_timing(responses[-1]) == (warm, "-"), url
    price = sql.fetchval("SELECT price FROM products WHERE id = $1", product) + 1.25
    assert uncached_server.write("PUT", f"/products/{product}", {"price": price}).status_code == 200
    for url in urls:
        for response in uncached_server.follow_ups(url):  # both workers, the first request of each included
            body = response.json()
            items = body["items"] if "items" in body else body if isinstance(body, list) else [body]
            assert next(item for item in items if item["id"] == product)["price"] == price, url
            assert project(body) == project(uncached_server.get(url).json()), url


def test_every_write_reaches_the_local_copies_of_both_workers(server: Server, catalog: Catalog) -> None:
    """Both workers answer from their own copies (no Redis call), and a write's response returns only once
    both have dropped what it changed."""
    url = f"/products/{catalog.third}"
    for price in (31.5, 32.5, 33.5, 34.5, 35.5):
        warmed = server.follow_ups(url) + server.follow_ups(url)
        local = {server.worker(response) for response in warmed if cache_layer(response) == "local"}
        assert len(local) == 2, [cache_layer(response) for response in warmed]
        assert server.write("PUT", url, {"price": price}).status_code == 200
        assert {response.json()["price"] for response in server.follow_ups(url)} == {price}
