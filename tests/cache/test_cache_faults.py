"""Redis failing makes a real 2-worker server slower, never wrong: killed, restarted empty, flushed, or absent.

The Redis here is a private ``redis-server`` this module starts, kills and restarts on the same port; it
keeps nothing on disk, so a restarted one is empty. Every response is compared with the database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from catalog.cache.coherence import LIVE_S
from tests.helpers import (
    Catalog,
    Server,
    Sql,
    project,
    running,
    server_env,
    server_timing,
)
from tests.servers import RedisServer

RESPONSE_BOUND_S = 1.0  # a request while Redis is down may be slower, never slower than this
RECOVERY_S = 5.0  # Redis back (breaker closed, stale entries dropped) within this
RETRY_AFTER_S = 0.5


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def server(database: str, catalog: Catalog, private_redis: RedisServer, tmp_path_factory) -> Iterator[Server]:
    env = server_env(database, private_redis.url, CACHE_PREFIX=f"catalog_faults_{uuid.uuid4().hex[:10]}",
                     REDIS_RETRY_AFTER_S=str(RETRY_AFTER_S))
    with running(env, tmp_path_factory.mktemp("faults") / "server.log") as started:
        yield started


@pytest.fixture
def redis_up(private_redis: RedisServer) -> RedisServer:
    """The private Redis running at the start of each test, whatever the one before did to it."""
    private_redis.ensure_running()
    return private_redis


def whole_page(sql: Sql, category_id: int) -> dict:
    """What ``/products?category_id=..&page_size=100`` must hold (a category's active products fit)."""
    where = "is_active AND category_id = $1"
    return {"total": sql.fetchval(f"SELECT count(*) FROM products WHERE {where}", category_id),
            "items": sql.products(where, category_id)}


def truths(sql: Sql, catalog: Catalog) -> dict[str, Callable[[], object]]:
    """The URLs the fault tests read, each with what the database says its response must hold."""
    k, first, second = catalog.kitchen, catalog.first, catalog.second
    return {
        f"/products/{first}": lambda: sql.products("id = $1", first)[0],
        f"/products/batch?ids={second},{first}": lambda: [*sql.products("id = $1", second),
                                                          *sql.products("id = $1", first)],
        f"/products?category_id={k}&page_size=100": lambda: whole_page(sql, k),
        f"/categories/{k}/products": lambda: sql.products("category_id = $1", k),
    }


def assert_correct(server: Server, sql: Sql, catalog: Catalog) -> list[httpx.Response]:
    """Follow-ups of every URL: each a bounded 200 that agrees with the database. All of them."""
    responses = []
    for url, truth in truths(sql, catalog).items():
        expected = truth()
        for response in server.follow_ups(url):
            assert response.status_code == 200, (url, response.text)
            assert response.elapsed.total_seconds() < RESPONSE_BOUND_S, (url, response.elapsed)
            assert project(response.json()) == expected, url
            responses.append(response)
    return responses


def assert_cached_again(server: Server, sql: Sql, catalog: Catalog) -> None:
    """Within RECOVERY_S, every follow-up of every URL is a hit again, and right."""
    deadline = time.monotonic() + RECOVERY_S
    while True:
        states = [server_timing(response)[1] for response in assert_correct(server, sql, catalog)]
        if set(states) == {"hit"}:
            return
        assert time.monotonic() < deadline, f"not all hits {RECOVERY_S} s after Redis came back: {states}"
        time.sleep(0.1)


def write(server: Server, method: str, path: str, body: dict) -> httpx.Response:
    response = server.write(method, path, body)
    assert response.status_code in (200, 201), response.text
    assert response.elapsed.total_seconds() < RESPONSE_BOUND_S, response.elapsed
    return response


def kill(redis_up: RedisServer) -> None:
    """Redis killed, and past the moment the workers' local copies could still be served: their channel to
    Redis closes with it (they drop them at once), and without a proof that it works they serve none past
    LIVE_S."""
    redis_up.kill()
    time.sleep(LIVE_S)


def cache_states(responses: list[httpx.Response]) -> set[str]:
    return {server_timing(response)[1] for response in responses}


def test_a_killed_redis_costs_no_request_and_is_used_again_once_restarted(
    server: Server, sql: Sql, catalog: Catalog, redis_up: RedisServer
) -> None:
    assert_cached_again(server, sql, catalog)
    kill(redis_up)
    assert cache_states(assert_correct(server, sql, catalog)) == {"off"}  # both workers skip it
    redis_up.start()  # same port, empty
    assert_cached_again(server, sql, catalog)


def test_writes_while_redis_is_down_succeed_and_show_once_it_is_back(
    server: Server, sql: Sql, catalog: Catalog, redis_up: RedisServer
) -> None:
    assert_cached_again(server, sql, catalog)
    redis_up.kill()
    # They cannot invalidate anything in Redis, and must still succeed.
    price = sql.fetchval("SELECT price FROM products WHERE id = $1", catalog.first) + 1
    assert write(server, "PUT", f"/products/{catalog.first}", {"price": price}).json()["price"] == price
    write(server, "POST", "/products", {"name": "Outage kettle", "price": 3.5, "category_id": catalog.kitchen})
    assert cache_states(assert_correct(server, sql, catalog)) == {"off"}
    redis_up.start()
    assert_cached_again(server, sql, catalog)


def test_a_write_while_redis_hangs_shows_on_every_worker_once_it_answers(
    server: Server, sql: Sql, catalog: Catalog, redis_up: RedisServer
) -> None:
    assert_cached_again(server, sql, catalog)
    with redis_up.client() as client:  # Redis keeps its entries but answers nothing for a second
        client.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    answers_again = time.monotonic() + 1.0
    price = sql.fetchval("SELECT price FROM products WHERE id = $1", catalog.first) + 1
    write(server, "PUT", f"/products/{catalog.first}", {"price": price})  # its invalidation times out

    # The entries it could not invalidate are still in Redis: from the write's return on, no worker of
    # this host may serve them, neither while Redis hangs nor once it answers (until the writer has
    # dropped them all), and then caching resumes.
    assert_correct(server, sql, catalog)
    time.sleep(max(0.0, answers_again - time.monotonic()))
    assert_correct(server, sql, catalog)
    assert_cached_again(server, sql, catalog)


def test_a_flushed_redis_costs_only_misses(server: Server, sql: Sql, catalog: Catalog, redis_up: RedisServer) -> None:
    assert_cached_again(server, sql, catalog)
    with redis_up.client() as client:
        client.flushall()
    # Answered from the workers' local copies, which stay true, or made again and right.
    assert cache_states(assert_correct(server, sql, catalog)) <= {"hit", "miss"}

    # Generations restart from nothing after a flush: a write must still invalidate what was cached since.
    write(server, "PUT", f"/products/{catalog.second}", {"price": 77.25})
    assert_cached_again(server, sql, catalog)


def assert_each_worker_misses_once(server: Server, responses: list[httpx.Response], expected: object) -> None:
    """Without Redis each worker keeps its own entries: its first response is a miss, the others hits."""
    served: set[int] = set()
    for response in responses:
        worker = server.worker(response)
        assert response.status_code == 200, response.text
        assert server_timing(response)[1] == ("hit" if worker in served else "miss"), worker
        assert project(response.json()) == expected
        served.add(worker)


def test_without_redis_each_worker_caches_in_process_and_every_write_reaches_both(
    database: str, sql: Sql, catalog: Catalog, tmp_path: Path
) -> None:
    garden = catalog.garden
    url = f"/products?category_id={garden}&page_size=100"
    product = sql.fetchval("SELECT min(id) FROM products WHERE is_active AND category_id = $1", garden)
    with running(server_env(database, None, CACHE_TTL="30"), tmp_path / "server.log") as server:
        assert "REDIS_URL is not set" in server.log.read_text()
        assert_each_worker_misses_once(server, server.follow_ups(url), whole_page(sql, garden))

        # A write on one worker bumps the generation both share: neither serves what it had cached.
        assert server.write("PUT", f"/products/{product}", {"price": 66.5}).status_code == 200
        assert_each_worker_misses_once(server, server.follow_ups(url), whole_page(sql, garden))
        shovel = {"name": "Shovel", "price": 9, "category_id": garden}
        assert server.write("POST", "/products", shovel).status_code == 201
        assert_each_worker_misses_once(server, server.follow_ups(url), whole_page(sql, garden))


def test_totals_are_the_same_and_exact_with_redis_up_killed_back_and_flushed(
    server: Server, sql: Sql, catalog: Catalog, redis_up: RedisServer
) -> None:
    """Over 10,000 products, where a missing count used to be answered with the planner's estimate.

    The bulk is inactive and in a category of its own, so the planner, which takes category and activity
    as independent, misjudges the lists that combine them.
    """
    bulk = sql.fetchval("INSERT INTO categories (name) VALUES ('Bulk') RETURNING id")
    sql.execute(
        "INSERT INTO products (name, price, category_id, is_active)"
        " SELECT 'Bulk ' || i, 1, $1::int, false FROM generate_series(1, 12000) i", bulk
    )
    sql.execute("ANALYZE products")
    lists = {"/products": "is_active", "/products?is_active=false": "NOT is_active"}
    for category in (catalog.kitchen, catalog.garden, bulk):
        lists[f"/products?category_id={category}"] = f"is_active AND category_id = {category}"
        lists[f"/products?category_id={category}&is_active=false"] = f"NOT is_active AND category_id = {category}"
    counted = {url: sql.fetchval(f"SELECT count(*) FROM products WHERE {where}") for url, where in lists.items()}

    def totals() -> dict[str, set[int]]:
        seen: dict[str, set[int]] = {}
        for url in lists:
            for response in server.follow_ups(f"{url}&page_size=1" if "?" in url else f"{url}?page_size=1"):
                assert response.status_code == 200 and "x-total-count-estimated" not in response.headers, url
                seen.setdefault(url, set()).add(response.json()["total"])
        return seen

    expected = {url: {count} for url, count in counted.items()}
    try:
        with redis_up.client() as client:
            client.flushall()  # nothing counted before the bulk arrived behind the service's back
        assert totals() == expected
        redis_up.kill()
        assert totals() == expected
        redis_up.start()
        assert totals() == expected
        with redis_up.client() as client:
            client.flushall()
        assert totals() == expected
    finally:
        sql.execute("DELETE FROM products WHERE category_id = $1", bulk)
        sql.execute("DELETE FROM categories WHERE id = $1", bulk)
        redis_up.ensure_running()
        with redis_up.client() as client:
            client.flushall()


def test_a_killed_redis_serves_every_include_built_without_fragments(
    server: Server, sql: Sql, catalog: Catalog, redis_up: RedisServer
) -> None:
    """Bodies built without Redis (no fragments read or kept) equal those built through it."""
    urls = [
        f"/products?category_id={catalog.kitchen}&page_size=100&include=category,inventory",
        f"/products?category_id={catalog.kitchen}&page_size=100&include=reviews",
        f"/products/batch?ids={catalog.third},{catalog.first}",
        f"/products/{catalog.second}",
    ]
    with_redis = {url: server.warm(url).json() for url in urls}
    kill(redis_up)
    for url in urls:
        for response in server.follow_ups(url):
            assert response.status_code == 200 and server_timing(response)[1] == "off", url
            assert response.json() == with_redis[url], url
    redis_up.start()
