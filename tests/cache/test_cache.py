"""The cache in process: hits run no SQL, keys are normalised, counts survive writes that cannot change them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from multiprocessing import Value

import orjson
import pytest

from catalog import queries
from catalog.cache import SharedState, open_caches
from catalog.cache.backends import Peek, RedisBackend
from catalog.cache.counts import count_name
from catalog.cache.invalidation import list_dependencies, product_write_effects
from catalog.cache.resilient import ResilientCache
from catalog.domain import Ordering, ProductFilter, ProductState
from tests.conftest import Database, StatementCapture, free_port
from tests.helpers import LOCAL_HIT, cache_layer, cache_state, statements


@pytest.fixture
def catalog(db: Database) -> Database:
    kitchen = db.category("Kitchen")
    for i in range(30):
        product = db.product(f"Kettle {i}", 10.0 + i, kitchen, is_active=i % 5 != 0)
        db.review(product, 1 + i % 5)
        db.inventory(product, i % 12)
    return db


ENDPOINTS = [
    "/products", "/products?category_id=1&page=2&page_size=5", "/products/3", "/products/999",
    "/products/batch?ids=3,1,2", "/categories", "/categories/1/products", "/inventory/low-stock",
]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_second_identical_get_runs_no_sql_and_a_304_neither(client, catalog: Database, url: str) -> None:
    _, first = client.get(url)
    _, second = client.get(url)
    assert (cache_state(first), cache_state(second)) == ("miss", "hit")
    assert statements(first) > 0 and statements(second) == 0
    assert second.status == first.status and second.body == first.body
    if first.status == 200:
        assert second.headers["etag"] == first.headers["etag"]
        _, conditional = client.get(url, headers={"if-none-match": first.headers["etag"]})
        assert conditional.status == 304 and statements(conditional) == 0


def test_parameter_order_and_spelling_do_not_split_the_cache(client, catalog: Database) -> None:
    _, first = client.get("/products?page_size=5&is_active=true&category_id=1")
    for spelling in ("/products?category_id=1&is_active=1&page_size=5", "/products?is_active=YES&page_size=05&category_id=1&page=1"):
        _, again = client.get(spelling)
        assert cache_state(again) == "hit" and again.body == first.body


def test_cursor_pages_are_cached_and_still_link_onwards(client, catalog: Database) -> None:
    _, first = client.get("/products?page_size=4")
    url = f"/products?page_size=4&cursor={first.headers['x-next-cursor']}"
    _, miss = client.get(url)
    _, hit = client.get(url)
    assert cache_state(hit) == "hit" and hit.json == miss.json and hit.json["page"] == 2
    assert hit.headers["x-next-cursor"] == miss.headers["x-next-cursor"]
    assert hit.headers["link"] == miss.headers["link"]


def test_hits_are_served_compressed_or_plain_as_asked(client, catalog: Database) -> None:
    _, zipped_miss = client.get("/products", headers={"accept-encoding": "gzip"})
    _, plain_hit = client.get("/products", headers={"accept-encoding": "identity"})
    _, zipped_hit = client.get("/products", headers={"accept-encoding": "gzip"})
    assert cache_state(plain_hit) == cache_state(zipped_hit) == "hit"
    assert "content-encoding" not in plain_hit.headers and zipped_hit.headers["content-encoding"] == "gzip"
    assert plain_hit.body == zipped_hit.body == zipped_miss.body
    assert zipped_hit.headers["etag"] == zipped_miss.headers["etag"] != plain_hit.headers["etag"]
    assert int(zipped_hit.headers["content-length"]) < 0.3 * len(plain_hit.body)


def put(client, product_id: int, body: dict):
    return client.put(f"/products/{product_id}", content=orjson.dumps(body))


def test_a_price_change_keeps_cached_counts_and_shows_at_once(client, catalog: Database) -> None:
    _, before = client.get("/products?category_id=1")
    _, response = put(client, 2, {"price": 99.5})
    assert response.status == 200
    request, after = client.get("/products?category_id=1")
    assert cache_state(after) == "miss" and after.json["total"] == before.json["total"]
    assert next(item for item in after.json["items"] if item["id"] == 2)["price"] == 99.5
    assert after.headers["etag"] != before.headers["etag"]
    # The page's keys, then the changed product with its reviews: the other products' JSON and the count
    # came from the cache.
    assert statements(after) == 3


def test_a_price_change_makes_stale_only_the_pages_that_show_it_or_sort_by_price(client, catalog: Database) -> None:
    """The mixed workload's write: the pages in the default order that do not show the product stay cached."""
    other_category = catalog.fetchval(
        "SELECT min(id) FROM categories WHERE id <> (SELECT category_id FROM products WHERE id = 2)"
    )
    stale = {
        "/products?page_size=5": True,  # shows product 2
        "/products?page_size=5&page=3": False,
        f"/products?category_id={other_category}": False,
        "/products?sort=price&page_size=5&page=3": True,  # its order may have changed anywhere
        "/products?min_price=0&page_size=5&page=3": True,  # a price moves products in and out of a range
        "/products/batch?ids=5,6": False,
        "/products/2": True,
    }
    before = {path: client.get(path)[1] for path in stale}
    assert put(client, 2, {"price": 0.5})[1].status == 200
    after = {path: client.get(path)[1] for path in stale}
    assert {path: cache_state(response) == "miss" for path, response in after.items()} == stale
    assert all(after[path].json == before[path].json for path, made_stale in stale.items() if not made_stale)
    assert next(item for item in after["/products?page_size=5"].json["items"] if item["id"] == 2) == after["/products/2"].json
    assert after["/products/2"].json["price"] == 0.5


@pytest.mark.parametrize(
    ("write", "moved"),
    [
        (lambda client: client.post("/products", content=orjson.dumps({"name": "n", "price": 1, "category_id": 1})), +1),
        (lambda client: client.delete("/products/2"), -1),
        (lambda client: put(client, 2, {"is_active": False}), -1),
        (lambda client: put(client, 2, {"category_id": None}), 0),  # leaves the category, stays in all
    ],
)
def test_count_changing_writes_adjust_cached_counts_exactly(client, catalog: Database, write, moved: int) -> None:
    urls = ("/products", "/products?category_id=1", "/products?is_active=false", "/products?category_id=1&is_active=0")
    totals = {url: client.get(url)[1].json["total"] for url in urls}
    _, response = write(client)
    assert response.status in (200, 201, 204)
    for url in urls:
        with StatementCapture() as capture:
            request, after = client.get(url)
        active, category = ("is_active" not in url, 1 if "category_id" in url else None)
        where = "is_active = $1" + (" AND category_id = 1" if category else "")
        expected = catalog.fetchval(f"SELECT count(*) FROM products WHERE {where}", active)
        assert after.json["total"] == expected, url
        # Counts adjusted in the cache, not recounted: the page's keys and the moved product's load only.
        assert statements(after) <= 3, url
        assert not [sql for sql, _ in capture.statements if "count(" in sql.lower()], url
    assert totals["/products"] + moved == client.get("/products")[1].json["total"]


def test_concurrent_misses_compute_an_entry_once(client, catalog: Database) -> None:
    base = f"http://{client.host}:{client.port}"

    async def burst() -> list:
        return await asyncio.gather(*(client._session.get(f"{base}/products/batch?ids=5,6,7") for _ in range(20)))

    responses = catalog.run(burst())
    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    executed = [statements(response) for response in responses]
    assert sum(executed) == 2, executed  # one request loaded the batch (2 statements), 19 waited for it


def test_misses_in_one_worker_share_one_computation_when_another_worker_holds_the_lock(client, catalog: Database) -> None:
    """The lock of the entry is taken (as by another worker that then never fills it): every request here
    waits for it in vain, then they compute the entry once between them, not once each."""
    base = f"http://{client.host}:{client.port}"
    url = "/products/batch?ids=5,6,7"
    store = client.app.ctx.caches.store
    held = catalog.run(store.lookup(f"{client.host}:{client.port}{url}", ["p5", "p6", "p7"], "r"))
    assert held.leader and held.value is None

    async def burst() -> list:
        return await asyncio.gather(*(client._session.get(f"{base}{url}") for _ in range(20)))

    responses = catalog.run(burst())
    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    assert sum(statements(response) for response in responses) == 2
    assert client.app.ctx.caches.responses.productions == {}


def test_copies_serve_while_the_breaker_skips_redis_but_not_after_an_unconfirmed_write(client, catalog: Database) -> None:
    """Timeouts open the breaker, but the worker's listener still vouches for its copies; a write that could
    not reach Redis leaves them possibly stale, so then they are not used."""
    store = client.app.ctx.caches.store
    client.get("/products/3")
    _, copied = client.get("/products/3")
    assert cache_layer(copied) == LOCAL_HIT
    try:
        store.open_until = time.monotonic() + 60
        _, while_open = client.get("/products/3")
        assert (cache_layer(while_open), statements(while_open)) == (LOCAL_HIT, 0)
        store.unconfirmed_writes.value += 1
        _, unconfirmed = client.get("/products/3")
        assert cache_layer(unconfirmed) == "off" and statements(unconfirmed) > 0
    finally:
        store.unconfirmed_writes.value = 0
        store.open_until = 0.0
    assert unconfirmed.body == copied.body


class CountedLookups:
    """The app's real Redis lookups, counted, and held at a gate until a test opens it."""

    def __init__(self, store) -> None:
        self.store, self.real, self.calls, self.gate = store, store.lookup, 0, asyncio.Event()
        self.gate.set()

    async def lookup(self, *args):
        self.calls += 1
        await self.gate.wait()
        return await self.real(*args)

    def __enter__(self) -> CountedLookups:
        self.store.lookup = self.lookup
        return self

    def __exit__(self, *_: object) -> None:
        del self.store.lookup  # the instance attribute: the method shows again


def test_concurrent_requests_for_one_url_share_one_redis_lookup(client, catalog: Database) -> None:
    """A hot entry's copies expire in every worker at once: the requests that then miss their copy share one
    lookup, instead of queueing hundreds for the worker's Redis connections."""
    base = f"http://{client.host}:{client.port}"
    responses_cache = client.app.ctx.caches.responses

    async def burst() -> list:
        return await asyncio.gather(*(client._session.get(f"{base}/products/batch?ids=5,6,7") for _ in range(20)))

    with CountedLookups(client.app.ctx.caches.store) as lookups:
        responses = catalog.run(burst())
    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    assert lookups.calls == 1 and sum(statements(response) for response in responses) == 2
    assert responses_cache.asking == {}


def test_a_request_after_an_invalidation_does_not_share_a_lookup_begun_before_it(client, catalog: Database) -> None:
    """Redis may answer that lookup from before the write: a request that comes once the write has reached
    this worker looks up on its own."""
    url = f"http://{client.host}:{client.port}/products/batch?ids=5,6,7"
    local = client.app.ctx.caches.responses.local

    async def scenario(lookups: CountedLookups) -> tuple[int, list]:
        lookups.gate.clear()
        before = asyncio.ensure_future(client._session.get(url))
        while lookups.calls < 1:
            await asyncio.sleep(0.005)
        local.drop(["p6"])  # as the worker's listener does when a write announces the bump of p6
        after = asyncio.ensure_future(client._session.get(url))
        await asyncio.sleep(0.05)
        calls = lookups.calls
        lookups.gate.set()
        return calls, await asyncio.gather(before, after)

    with CountedLookups(client.app.ctx.caches.store) as lookups:
        calls, responses = catalog.run(scenario(lookups))
    assert calls == 2
    assert [response.status_code for response in responses] == [200, 200]


def state(is_active: bool, category_id: int | None, price: float = 9.5, name: str = "Kettle") -> ProductState:
    return ProductState(is_active, category_id, price, name)


def test_write_effects() -> None:
    generations, deltas = product_write_effects(7, None, state(True, 3))
    assert set(generations) == {"all", "p7", "c3", "m1:*", "m1:3"} and deltas == {"1:*": 1, "1:3": 1}
    # A change that moves the product in or out of no list: no membership generation, no count delta.
    generations, deltas = product_write_effects(7, state(True, 3), state(True, 3))
    assert set(generations) == {"all", "p7", "c3"} and deltas == {}
    generations, deltas = product_write_effects(7, state(True, 3), state(False, 4))
    assert set(generations) == {"all", "p7", "c3", "c4", "m1:*", "m1:3", "m0:*", "m0:4"}
    assert deltas == {"1:*": -1, "1:3": -1, "0:*": 1, "0:4": 1}
    # From one category to another: the unfiltered list keeps its members.
    generations, deltas = product_write_effects(7, state(True, 3), state(True, 4))
    assert set(generations) == {"all", "p7", "c3", "c4", "m1:3", "m1:4"} and deltas == {"1:3": -1, "1:4": 1}
    assert product_write_effects(7, state(False, None), None) == (["all", "p7", "m0:*"], {"0:*": -1})
    # A new price or name reorders the lists sorted by it, and moves nothing in or out of a counted list.
    generations, deltas = product_write_effects(7, state(True, 3), state(True, 3, price=12.0))
    assert set(generations) == {"all", "p7", "c3", "o:price"} and deltas == {}
    generations, deltas = product_write_effects(7, state(True, 3), state(True, 3, name="Teapot"))
    assert set(generations) == {"all", "p7", "c3", "o:name"} and deltas == {}
    assert count_name(ProductFilter(False, 12)) == "0:12"


def test_what_a_page_depends_on_beyond_its_products() -> None:
    assert list_dependencies(ProductFilter(True), Ordering()) == ["m1:*"]
    assert list_dependencies(ProductFilter(False, 4), Ordering("-price")) == ["m0:4", "o:price"]
    assert list_dependencies(ProductFilter(True), Ordering("created_at")) == ["m1:*"]  # no write changes it
    assert list_dependencies(ProductFilter(True, min_price=3.0), Ordering()) == ["all"]


def test_a_capped_count_counts_up_to_its_cap(catalog: Database) -> None:
    async def counts() -> list[int]:
        return [await queries.count_products_up_to(ProductFilter(True, 1), most) for most in (1, 23, 24, 25, 1000)]

    assert catalog.fetchval("SELECT count(*) FROM products WHERE is_active AND category_id = 1") == 24
    capped = catalog.run(counts())
    assert [count.counted for count in capped] == [1, 23, 24, 24, 24]
    # At the cap the planner's estimate comes with it (the planner's, not a count: any positive guess).
    assert [count.estimate is not None and count.estimate > 0 for count in capped] == [True, True, True, False, False]


@pytest.mark.parametrize("store", ["redis", "in process", "redis down"])
def test_lists_over_the_exact_count_limit_get_an_estimate_at_once_then_their_count(
    client, catalog: Database, settings, store: str
) -> None:
    """24 active products and 6 inactive: exact up to the limit, the planner's estimate beyond it, whatever
    keeps the counts; only where a count can be kept does the estimate give way to it."""
    redis_url = {"redis": settings.redis_url, "in process": None, "redis down": f"redis://127.0.0.1:{free_port()}/0"}

    async def totals(limit: int) -> tuple[tuple[int, bool], ...]:
        limited = replace(settings, exact_count_max_rows=limit, redis_url=redis_url[store],
                          cache_prefix=f"{settings.cache_prefix}_limit{limit}")
        caches = open_caches(limited, SharedState.new())
        try:
            first = (await caches.totals.total(ProductFilter(True)), await caches.totals.total(ProductFilter(False)))
            await asyncio.gather(*caches.totals.tasks.values())
            return *first, await caches.totals.total(ProductFilter(True))
        finally:
            await caches.close()

    assert catalog.run(totals(24)) == ((24, True), (6, True), (24, True))
    (estimate, exact), small, then = catalog.run(totals(23))
    assert exact is False and estimate >= 24  # at least what the capped count saw
    assert small == (6, True)
    if store == "redis down":  # nowhere to keep the count: an estimate again
        assert then[1] is False and then[0] >= 24
    else:
        assert then == (24, True)


ESTIMATED = "x-total-count-estimated"


def test_an_estimated_total_is_marked_and_not_kept_then_the_count_arrives(client, catalog: Database) -> None:
    totals = client.app.ctx.caches.totals
    totals.exact_max = 5
    try:
        catalog.expire_cache()
        responses = [client.get("/products?page_size=3")[1]]
        deadline = time.monotonic() + 5
        while ESTIMATED in responses[-1].headers:
            assert time.monotonic() < deadline, "no exact count within 5 s"
            time.sleep(0.02)  # the background count runs while a request runs the server's loop
            responses.append(client.get("/products?page_size=3")[1])
        _, again = client.get("/products?page_size=3")
    finally:
        totals.exact_max = client.app.ctx.settings.exact_count_max_rows
    assert responses[0].headers[ESTIMATED] == "true" and responses[0].json["total"] >= 6
    for estimated in responses[:-1]:
        assert cache_state(estimated) == "miss" and estimated.status == 200
    exact = catalog.fetchval("SELECT count(*) FROM products WHERE is_active")
    assert responses[-1].json["total"] == exact and cache_state(responses[-1]) == "miss"
    assert cache_state(again) == "hit" and again.body == responses[-1].body and ESTIMATED not in again.headers


def test_redis_entries_live_for_the_cache_ttl(client, catalog: Database, settings) -> None:
    client.get("/products/4")
    epoch = int(catalog.redis.get(f"{settings.cache_prefix}:epoch"))
    keys = list(catalog.redis.scan_iter(f"{settings.cache_prefix}:r:*/products/4|{epoch}|*"))
    assert len(keys) == 1
    assert settings.cache_ttl * 1000 - 2000 < catalog.redis.pttl(keys[0]) <= settings.cache_ttl * 1000


def test_breaker_skips_a_failing_backend_then_tries_again(settings) -> None:
    class Failing:
        calls = 0

        async def lookup(self, base, dependencies, kind):
            Failing.calls += 1
            raise ConnectionError("down")

    async def scenario() -> list[int]:
        cache = ResilientCache(Failing(), replace(settings, redis_retry_after=0.2), "test", Value("q", 0))
        seen = []
        for _ in range(6):
            assert (await cache.lookup("k", [], "r")).key is None
            seen.append(Failing.calls)
        await asyncio.sleep(0.25)
        await cache.lookup("k", [], "r")
        seen.append(Failing.calls)
        return seen

    # Three failures in a row open the breaker; after redis_retry_after one call tries again.
    assert asyncio.run(scenario()) == [1, 2, 3, 3, 3, 3, 4]


def test_a_write_on_a_transport_redis_closed_is_a_redis_failure_not_an_error(settings) -> None:
    """uvloop raises RuntimeError for it, and redis-py passes that on: the request is served without the cache."""

    class Closed:
        async def lookup(self, base, dependencies, kind):
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    async def scenario() -> tuple[object, int]:
        cache = ResilientCache(Closed(), settings, "test", Value("q", 0))
        return (await cache.lookup("k", [], "r")).key, cache.failures_in_a_row

    assert asyncio.run(scenario()) == (None, 1)


def test_waiters_for_one_entry_share_one_poll(settings) -> None:
    class Filling:
        peeks = 0

        async def peek(self, key):
            Filling.peeks += 1
            return Peek(b"entry" if Filling.peeks >= 3 else None)

    async def scenario() -> tuple[list, int]:
        cache = ResilientCache(Filling(), settings, "test", Value("q", 0))
        waiters = [asyncio.ensure_future(cache.wait_for_fill("k")) for _ in range(50)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # a client that left: the others still get the entry
        results = await asyncio.gather(*waiters[1:])
        return results, len(cache.polls)

    results, polls_left = asyncio.run(scenario())
    assert results == [b"entry"] * 49
    assert Filling.peeks == 3 and polls_left == 0  # one poll for all 50, not 50 polls


def test_a_worker_out_of_redis_connections_misses_without_opening_the_breaker(settings) -> None:
    one = replace(settings, redis_max_connections=1, cache_prefix=settings.cache_prefix + "_busy")

    async def scenario() -> tuple[list, bool, int]:
        caches = open_caches(one, SharedState.new())
        pool = caches.store.backend.client.connection_pool
        pool.timeout = 0.05
        held = await pool.get_connection()  # the only connection, kept busy
        try:
            lookups = [await caches.store.lookup(f"k{i}", ["p1"], "r") for i in range(5)]
            return lookups, caches.store.available, caches.store.failures_in_a_row
        finally:
            await pool.release(held)
            await caches.close()

    lookups, available, failures = asyncio.run(scenario())
    assert [lookup.key for lookup in lookups] == [None] * 5  # misses, served without the cache
    assert available and failures == 0


def test_redis_backend_round_trip(settings, catalog: Database) -> None:
    import redis.asyncio as redis_asyncio

    async def scenario() -> tuple:
        client = redis_asyncio.from_url(settings.redis_url)
        backend = RedisBackend(client, replace(settings, cache_prefix=settings.cache_prefix + "_rt"))
        try:
            first = await backend.lookup("x", ["p1"], "r")
            second = await backend.lookup("x", ["p1"], "r")  # lock held by the first
            await backend.fill(first.key, b"value", {})
            hit = await backend.lookup("x", ["p1"], "r")
            await backend.product_written(["p1"], {}, None)
            after_write = await backend.lookup("x", ["p1"], "r")
            # An entry checked against a product it shows: good until that product's generation moves.
            shown = await backend.lookup("page", ["m1:*"], "r")
            await backend.fill(shown.key, b"page", {"p2": "0", "p3": "0"})
            page_hit, peeked = await backend.lookup("page", ["m1:*"], "r"), await backend.peek(shown.key)
            await backend.product_written(["p3"], {}, None)
            stale_peek = await backend.peek(shown.key)  # as a request waiting on another's fill sees it
            await backend.fill(shown.key, b"page", {"p2": "0", "p3": "0"})
            after_product_write = await backend.lookup("page", ["m1:*"], "r")
            return first, second, hit, after_write, (shown, page_hit, peeked, stale_peek, after_product_write)
        finally:
            await client.aclose()

    first, second, hit, after_write, checked = catalog.run(scenario())
    assert (first.value, first.leader, second.leader) == (None, True, False)
    assert (hit.value, hit.key) == (b"value", first.key)
    assert after_write.value is None and after_write.key != first.key
    shown, page_hit, peeked, stale_peek, after_product_write = checked
    assert (page_hit.value, page_hit.key, peeked.value) == (b"page", shown.key, b"page")
    assert (stale_peek.value, stale_peek.stale) == (None, True)
    # Same key (its own generations did not move), the entry stale: a miss, and this request computes it.
    assert (after_product_write.key, after_product_write.value, after_product_write.leader) == (shown.key, None, True)


def totals_match_sql(client, db: Database, categories: list[int]) -> list[tuple[int, int]]:
    """(API total, SQL count) for each category's active products, and for all of them."""
    pairs = []
    for category in [*categories, None]:
        url = "/products" if category is None else f"/products?category_id={category}"
        where = "is_active" if category is None else f"is_active AND category_id = {int(category)}"
        pairs.append((client.get(url)[1].json["total"], db.fetchval(f"SELECT count(*) FROM products WHERE {where}")))
    return pairs


def test_concurrent_moves_of_one_product_keep_totals_exact(client, db: Database) -> None:
    categories = [db.category(f"C{i}") for i in range(3)]
    for i in range(30):
        db.product(category_id=categories[i % 3])
    for _ in totals_match_sql(client, db, categories):
        pass  # counts now cached, so the writes below adjust them
    base = f"http://{client.host}:{client.port}"

    async def moves() -> set[int]:
        # Without the row lock each PUT could take the same "before" and move the counts twice.
        requests = [
            client._session.put(f"{base}/products/1", json={"category_id": categories[i % 3]}) for i in range(60)
        ]
        return {response.status_code for response in await asyncio.gather(*requests)}

    assert db.run(moves()) == {200}
    pairs = totals_match_sql(client, db, categories)
    assert all(api == sql for api, sql in pairs), pairs


def test_a_count_made_during_a_write_is_not_kept_to_be_adjusted_twice(client, db: Database) -> None:
    category = db.category()
    for _ in range(10):
        db.product(category_id=category)
    base = f"http://{client.host}:{client.port}"

    async def round_trip(round_number: int) -> None:
        # Every count is missing (epoch bumped), so these reads count while the POST commits and adjusts.
        reads = [client._session.get(f"{base}/products?category_id={category}&page_size={n}") for n in range(1, 9)]
        write = client._session.post(f"{base}/products", json={"name": f"n{round_number}", "price": 1, "category_id": category})
        await asyncio.gather(write, *reads)

    for round_number in range(25):
        db.expire_cache()
        db.run(round_trip(round_number))
        _, after = client.get(f"/products?category_id={category}&page_size=50")
        assert after.json["total"] == db.fetchval("SELECT count(*) FROM products WHERE category_id = $1", category)


def test_a_slow_redis_costs_a_few_short_timeouts_then_is_skipped_until_it_recovers(settings, tmp_path) -> None:
    import threading
    import time

    import redis as redis_sync
    import redis.asyncio as redis_asyncio

    from tests.servers import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    port = server.port
    try:
        quick = replace(settings, redis_timeout=0.05, redis_retry_after=0.5, cache_prefix="slow")

        async def scenario() -> tuple[list[float], bool, bool]:
            client = redis_asyncio.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.05,
                                            socket_connect_timeout=0.05)
            cache = ResilientCache(RedisBackend(client, quick), quick, "Redis", Value("q", 0))
            try:
                first = await cache.lookup("k", ["p1"], "r")
                await cache.fill(first.key, b"v", {})
                # The server stops answering for a second, as a Redis busy with a slow command would.
                threading.Thread(target=lambda: redis_sync.Redis(port=port).execute_command("DEBUG", "SLEEP", "1")).start()
                await asyncio.sleep(0.1)
                waits = []
                for _ in range(6):
                    started = time.perf_counter()
                    assert (await cache.lookup("k", ["p1"], "r")).value is None
                    waits.append(time.perf_counter() - started)
                await asyncio.sleep(1.5)
                resumed = (await cache.lookup("k", ["p1"], "r")).value == b"v"
                return waits, cache.available, resumed
            finally:
                await client.aclose()

        waits, available, resumed = asyncio.run(scenario())
        assert max(waits[:3]) < 0.5 and max(waits[3:]) < 0.01, waits  # 3 bounded timeouts, then skipped
        assert available and resumed
    finally:
        server.kill()


def test_more_concurrent_calls_than_redis_connections_wait_instead_of_failing(settings) -> None:
    small = replace(settings, redis_max_connections=2, cache_prefix=settings.cache_prefix + "_pool")

    async def scenario() -> tuple[int, bool]:
        caches = open_caches(small, SharedState.new())
        try:
            lookups = await asyncio.gather(*(caches.store.lookup(f"k{i}", ["p1"], "r") for i in range(200)))
            return sum(lookup.key is not None for lookup in lookups), caches.store.available
        finally:
            await caches.close()

    answered, available = asyncio.run(scenario())
    assert answered == 200 and available  # every call got a connection in turn; the breaker stayed closed
