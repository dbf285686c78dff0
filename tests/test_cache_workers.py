"""The Redis response cache seen from outside: a real 2-worker server, each request on a new connection.

Hits are read from the Server-Timing header, the worker that answered from the access log (by the
request's X-Request-ID), so every "the next request" below is asserted for requests answered by both
workers, and totals are compared with ``SELECT count(*)``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from benchmarks.servers import free_port, start_sanic, stop
from tests.conftest import create_database, drop_database
from tests.helpers import Sql

REQUEST_TIMEOUT_S = 5
FOLLOW_UPS = 6  # requests that must all show a change; more are sent until both workers have answered
MAX_REQUESTS = 40  # per URL: with connections spread over two workers, both answer long before this
CACHE_TTL_S = 30


@dataclass(frozen=True)
class Catalog:
    """What ``seed`` made: two categories, products in each (some inactive), one in none."""

    kitchen: int
    garden: int
    first: int  # three products of the kitchen
    second: int
    third: int
    loose: int  # in no category, for changes made behind the service's back


def seed(sql: Sql) -> Catalog:
    kitchen, garden = [row["id"] for row in sql.fetch(
        "INSERT INTO categories (name, description) VALUES ('Kitchen', 'Pots and pans'), ('Garden', NULL)"
        " RETURNING id"
    )]
    # 27 kitchen products (every 6th inactive), 12 garden ones (every 4th inactive), 3 in no category.
    sql.execute(
        "INSERT INTO products (name, price, category_id, is_active)"
        " SELECT 'Kettle ' || i, 10 + i, $1::int, i % 6 <> 0 FROM generate_series(1, 27) i"
        " UNION ALL SELECT 'Rake ' || i, 5 + i / 4.0, $2::int, i % 4 <> 0 FROM generate_series(1, 12) i"
        " UNION ALL SELECT 'Gift card ' || i, 25, NULL, true FROM generate_series(1, 3) i",
        kitchen, garden,
    )
    sql.execute(
        "INSERT INTO reviews (product_id, user_id, rating) SELECT id, id, 1 + id % 5 FROM products WHERE id % 3 <> 0"
    )
    sql.execute("INSERT INTO inventory (product_id, quantity, reserved) SELECT id, id % 15, id % 3 FROM products")
    ids = [row["id"] for row in sql.fetch("SELECT id FROM products ORDER BY id")]
    return Catalog(kitchen, garden, ids[0], ids[1], ids[2], ids[-1])


def server_timing(response: httpx.Response) -> tuple[int, str]:
    """The SQL statements a response ran and what the cache did for it."""
    found = re.search(r'db;dur=[\d.]+;desc="(\d+) statements", cache;dur=[\d.]+;desc="([\w-]+)"',
                      response.headers["server-timing"])
    assert found, response.headers["server-timing"]
    return int(found.group(1)), found.group(2)


def project(body: Any) -> Any:
    """What the database decides of a product, of a list of them, or of a page (with its total)."""
    if isinstance(body, list):
        return [project(item) for item in body]
    if "items" in body:
        return {"total": body["total"], "items": project(body["items"])}
    return body["id"], body["name"], body["price"], body["category_id"], body["is_active"]


class Server:
    """A running server: every request on a new connection, and which worker answered it."""

    def __init__(self, base_url: str, log: Path) -> None:
        self.log = log
        self.http = httpx.Client(
            base_url=base_url, timeout=REQUEST_TIMEOUT_S, headers={"connection": "close"},
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.get(path, headers=headers)

    def write(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return self.http.request(method, path, json=body)

    def worker(self, response: httpx.Response) -> int:
        """The pid in the access log line of this response's request id."""
        request_id = re.escape(response.headers["x-request-id"])
        line = rf"^\S+ \S+ (\d+) \w+ catalog\.access: .* id={request_id}\b"
        found = re.search(line, self.log.read_text(), re.MULTILINE)
        assert found, f"no access log line for request {request_id}"
        return int(found.group(1))

    def follow_ups(self, path: str, headers: dict[str, str] | None = None) -> list[httpx.Response]:
        """At least FOLLOW_UPS GETs of ``path``, and as many more as it takes for both workers to answer."""
        responses: list[httpx.Response] = []
        workers: set[int] = set()
        while len(responses) < FOLLOW_UPS or len(workers) < 2:
            assert len(responses) < MAX_REQUESTS, f"one worker answered all of {len(responses)} requests"
            responses.append(self.get(path, headers))
            workers.add(self.worker(responses[-1]))
        return responses

    def warm(self, path: str) -> httpx.Response:
        """GET ``path`` on both workers until it is a hit: the last response."""
        responses = self.follow_ups(path)
        assert {response.status_code for response in responses} <= {200, 404}, (path, responses[-1].text)
        assert server_timing(responses[-1]) == (0, "hit"), (path, responses[-1].headers["server-timing"])
        return responses[-1]

    def close(self) -> None:
        self.http.close()


@contextmanager
def running(env: dict[str, str], log: Path) -> Iterator[Server]:
    """The service with ``env`` on two workers, once both are up; stopped on leaving.

    Nothing it served may have logged a traceback (how it shuts down is test_pool_and_shutdown's concern).
    """
    port = free_port()
    process = start_sanic(env, port, log, workers=2)
    server = Server(f"http://127.0.0.1:{port}", log)
    try:
        yield server
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]
    finally:
        server.close()
        stop(process)


def server_env(database_url: str, redis_url: str | None, **settings: str) -> dict[str, str]:
    """The environment of a server on ``database_url``; without Redis when ``redis_url`` is None."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DATABASE_URL=database_url, DB_POOL_MIN="2", DB_POOL_MAX="10", **settings)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


@pytest.fixture(scope="module")
def database(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url, "catalog_cache_workers")
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="module")
def sql(database: str) -> Iterator[Sql]:
    connection = Sql(database)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def catalog(sql: Sql) -> Catalog:
    return seed(sql)


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
        redis_client.incr(f"{prefix}_limit:epoch")
        for url in lists:
            server.get(url)
        update(product, {"category_id": catalog.kitchen, "is_active": True})
        update(catalog.second, {"is_active": True})
        settled(server)
