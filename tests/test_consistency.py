"""Consistency under concurrency, on a real 2-worker server with the Redis response cache on, as shipped.

Readers walk the cursors while writers change the catalog; a write shows on the very next read, whichever
worker serves it; DELETE is one transaction. One server on its own fresh database and cache prefix serves
the module. Every request opens a new connection, so the two workers share the requests of each test.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis

from benchmarks.servers import free_port, start_sanic, stop
from tests.conftest import create_database, drop_database
from tests.helpers import Sql, connect, forget_cached_now, workers_by_request

SEEDED_PRODUCTS = 300
SEEDED_CATEGORIES = 4
READERS, WRITERS = 8, 4
LOAD_S = 6.0
PAGE_SIZES = (7, 20, 50)
MAX_WALK_PAGES = 200  # a walk longer than this is going round in circles
REQUEST_TIMEOUT_S = 10.0
TEST_TIMEOUT_S = 120.0


def is_stable(product_id: int) -> bool:
    """The seeded products no writer touches: their sort keys and filters hold for a whole walk."""
    return product_id % 5 == 0


@dataclass(frozen=True)
class Row:
    price: float
    category_id: int | None
    is_active: bool
    name: str = ""


@dataclass
class Server:
    url: str
    database_url: str
    log: Path
    redis: redis.Redis
    redis_url: str
    cache_prefix: str
    categories: list[int]
    seeded: dict[int, Row]

    def expire_cache(self) -> None:
        """After direct SQL: drop every cached response and count (what the TTL would do in 60 s)."""
        forget_cached_now(self.redis_url, self.cache_prefix)

    def client(self, request_ids: list[str] | None = None) -> httpx.AsyncClient:
        """A client that opens a new connection for every request (remembering their ids if asked)."""

        async def remember(response: httpx.Response) -> None:
            if request_ids is not None:
                request_ids.append(response.headers.get("x-request-id", "?"))

        return httpx.AsyncClient(
            base_url=self.url, timeout=REQUEST_TIMEOUT_S, headers={"Connection": "close"},
            event_hooks={"response": [remember]},
        )


def bounded(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TEST_TIMEOUT_S))


def a_price(rng: random.Random) -> float:
    """Half-unit prices in a narrow range: many ties, so (price, id) keysets break them by id."""
    return round(rng.uniform(1, 60) * 2) / 2


def seed(database_url: str) -> tuple[list[int], dict[int, Row]]:
    """Categories, products (one in seven inactive) with inventory, and reviews on every third product."""
    rng = random.Random(20261129)
    with Sql(database_url) as sql:
        categories = [
            sql.fetchval("INSERT INTO categories (name) VALUES ($1) RETURNING id", f"Category {n}")
            for n in range(SEEDED_CATEGORIES)
        ]
        sql.executemany(
            "INSERT INTO products (name, price, category_id, is_active) VALUES ($1, $2, $3, $4)",
            [(f"Seeded {n}", a_price(rng), rng.choice(categories), n % 7 != 3) for n in range(SEEDED_PRODUCTS)],
        )
        sql.execute("INSERT INTO inventory (product_id, quantity) SELECT id, id % 30 FROM products")
        sql.execute(
            "INSERT INTO reviews (product_id, user_id, rating) SELECT id, u, 1 + (id + u) % 5"
            " FROM products, generate_series(1, 2) AS u WHERE id % 3 = 0"
        )
        rows = sql.fetch("SELECT id, price, category_id, is_active, name FROM products")
    return categories, {row["id"]: Row(row["price"], row["category_id"], row["is_active"], row["name"]) for row in rows}


@pytest.fixture(scope="module")
def server(postgres_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database_url = create_database(postgres_server_url, "catalog_consistency")
    cache_prefix = f"catalog_consistency_{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    log = tmp_path_factory.mktemp("consistency") / "server.log"
    port = free_port()
    try:
        categories, seeded = seed(database_url)  # before the server starts: nothing cached yet
        env = {
            **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "CACHE_PREFIX": cache_prefix,
            "CACHE_RESPONSES": "true", "CACHE_TTL": "60", "LOG_LEVEL": "INFO",
            # Two small pools: other test runs share the machine's max_connections.
            "DB_POOL_MIN": "2", "DB_POOL_MAX": "8",
        }
        process = start_sanic(env, port, log)
        try:
            yield Server(f"http://127.0.0.1:{port}", database_url, log, client, redis_url, cache_prefix, categories, seeded)
        finally:
            assert stop(process) == 0
    finally:
        drop_database(postgres_server_url, database_url)
        for key in client.scan_iter(match=f"{cache_prefix}:*", count=1000):
            client.delete(key)
        client.close()


# 1. Concurrent readers and writers ----------------------------------------------------------------------


@dataclass
class Load:
    walks: int = 0
    pages: int = 0
    repriced_repeats: int = 0  # by price, items seen twice because a writer repriced them mid-walk
    writes: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


async def walk(client: httpx.AsyncClient, params: dict[str, Any], load: Load) -> list[dict] | None:
    """Every item from the first page to the last, following X-Next-Cursor; None if it went wrong."""
    items: list[dict] = []
    cursor: dict[str, str] = {}
    for _ in range(MAX_WALK_PAGES):
        response = await client.get("/products", params={**params, **cursor})
        load.pages += 1
        if response.status_code != 200:
            load.anomalies.append(f"{params} answered {response.status_code}: {response.text[:200]}")
            return None
        items.extend(response.json()["items"])
        if "x-next-cursor" not in response.headers:
            return items
        cursor = {"cursor": response.headers["x-next-cursor"]}
    load.anomalies.append(f"{params}: no last page after {MAX_WALK_PAGES} pages")
    return None


def check_walk(params: dict[str, Any], items: list[dict], stable: dict[int, Row], load: Load) -> None:
    by_price = params.get("sort") == "price"
    keys = [(item["price"], item["id"]) if by_price else (item["id"],) for item in items]
    ids = [item["id"] for item in items]
    problems = []
    # Each page is one SELECT of the rows strictly after the previous page's last row as that page reported
    # it, so the keys as reported climb strictly through the whole walk whatever the writers did. This holds
    # for every item; for stable products, whose keys never change, it is their true order.
    if any(earlier >= later for earlier, later in pairwise(keys)):
        problems.append("keys out of order")
    # The same key twice breaks the order above; the same id twice is legitimate only by price, under two
    # prices (a writer repriced it upwards between two pages). Never for a stable product.
    if len(set(keys)) != len(keys) or any(n > 1 for i, n in Counter(ids).items() if i in stable or not by_price):
        problems.append(f"repeated ids {sorted(i for i, n in Counter(ids).items() if n > 1)}")
    if by_price:
        load.repriced_repeats += len(ids) - len(set(ids))
    category = params.get("category_id")
    if any(not item["is_active"] or category not in (None, item["category_id"]) for item in items):
        problems.append("items outside the filter")
    wanted = {i for i, row in stable.items() if row.is_active and category in (None, row.category_id)}
    if missing := wanted - set(ids):
        problems.append(f"stable products missing {sorted(missing)}")
    load.anomalies.extend(f"walk {params}: {problem}" for problem in problems)


async def reader(server: Server, rng: random.Random, deadline: float, load: Load) -> None:
    stable = {i: row for i, row in server.seeded.items() if is_stable(i)}
    async with server.client(load.request_ids) as client:
        while time.monotonic() < deadline:
            params: dict[str, Any] = {"page_size": rng.choice(PAGE_SIZES)}
            if rng.random() < 0.5:
                params["category_id"] = rng.choice(server.categories)
            if rng.random() < 0.5:
                params["sort"] = "price"
            items = await walk(client, params, load)
            if items is not None:
                load.walks += 1
                check_walk(params, items, stable, load)


async def write_once(
    client: httpx.AsyncClient, rng: random.Random, owned: list[int], categories: list[int]
) -> tuple[str, int, int]:
    """One random write on a product this writer owns: (kind, status, expected status)."""
    kind = rng.choice(("create", "create", "reprice", "reprice", "deactivate", "reactivate", "move", "move", "delete"))
    if kind == "create" or not owned:
        body = {"name": f"New {rng.randrange(10**6)}", "price": a_price(rng), "category_id": rng.choice(categories)}
        response = await client.post("/products", json=body)
        if response.status_code == 201:
            owned.append(response.json()["id"])
        return "create", response.status_code, 201
    product_id = rng.choice(owned)
    if kind == "delete":
        owned.remove(product_id)
        return kind, (await client.delete(f"/products/{product_id}")).status_code, 204
    changes = {
        "reprice": {"price": a_price(rng), "name": f"Renamed {rng.randrange(10**6)}"},
        "deactivate": {"is_active": False},
        "reactivate": {"is_active": True},
        "move": {"category_id": rng.choice(categories)},
    }[kind]
    return kind, (await client.put(f"/products/{product_id}", json=changes)).status_code, 200


async def writer(server: Server, rng: random.Random, owned: list[int], deadline: float, load: Load) -> None:
    async with server.client(load.request_ids) as client:
        while time.monotonic() < deadline:
            kind, status, expected = await write_once(client, rng, owned, server.categories)
            load.writes[kind] += 1
            if status != expected:
                load.anomalies.append(f"{kind} answered {status}, not {expected}")


def test_concurrent_walks_see_every_stable_product_once_in_order(server: Server) -> None:
    writable = sorted(i for i in server.seeded if not is_stable(i))
    load = Load()

    async def run() -> None:
        deadline = time.monotonic() + LOAD_S
        await asyncio.gather(
            *(reader(server, random.Random(f"reader {n}"), deadline, load) for n in range(READERS)),
            # Each writer owns its share of the products, so every write has one right answer.
            *(writer(server, random.Random(f"writer {n}"), writable[n::WRITERS], deadline, load)
              for n in range(WRITERS)),
        )

    started = time.monotonic()
    bounded(run())
    served_by = workers_by_request(server.log, load.request_ids)
    workers = Counter(served_by.get(rid) for rid in load.request_ids)
    print(
        f"\nreaders={READERS} writers={WRITERS} walks={load.walks} pages={load.pages} "
        f"writes={sum(load.writes.values())} {dict(load.writes)} repriced repeats={load.repriced_repeats} "
        f"requests per worker={dict(workers)} anomalies={len(load.anomalies)} in {time.monotonic() - started:.1f} s"
    )
    assert load.anomalies == []
    assert load.walks >= READERS and sum(load.writes.values()) >= WRITERS
    assert len(workers) == 2 and None not in workers, workers


# 2. Read-your-writes across workers ---------------------------------------------------------------------


ROUNDS = 5  # each: create, reprice and rename, move, deactivate, reactivate, delete
READS_EACH = 2  # every kind of read, each on a new connection


def stale_reads(kind: str, response: httpx.Response, product_id: int, expected: dict[int, Row], anchor: int,
                category: int | None = None) -> str | None:
    """What ``response`` shows that the writes acknowledged so far contradict, or None."""

    def shown(item: dict) -> Row:
        return Row(item["price"], item["category_id"], item["is_active"], item["name"])

    if kind == "product":
        if product_id not in expected:
            return None if response.status_code == 404 else f"{response.status_code} after the delete"
        ok = response.status_code == 200 and shown(response.json()) == expected[product_id]
        return None if ok else f"{response.status_code} {response.text[:300]}"
    if kind == "batch":
        wanted = [i for i in (product_id, anchor) if i in expected]
        got = {item["id"]: shown(item) for item in response.json()}
        ok = list(got) == wanted and all(got[i] == expected[i] for i in wanted)
        return None if ok else f"ids {list(got)} rows {got} (wanted {wanted})"
    listing = response.json()
    got = [(item["id"], shown(item)) for item in listing["items"]]
    wanted_items = sorted((i, row) for i, row in expected.items() if row.is_active and row.category_id == category)
    if got == wanted_items and listing["total"] == len(wanted_items):
        return None
    return f"category {category}: total {listing['total']} ids {[i for i, _ in got]}, wanted {wanted_items}"


async def write(client: httpx.AsyncClient, kind: str, product_id: int, rng: random.Random,
                categories: list[int]) -> httpx.Response:
    """One step of a product's life: created in the first category, changed, moved to the second, deleted."""
    if kind == "create":
        return await client.post("/products", json={"name": "Mover", "price": a_price(rng), "category_id": categories[0]})
    if kind == "delete":
        return await client.delete(f"/products/{product_id}")
    changes = {
        "reprice": {"price": a_price(rng), "name": f"Mover {rng.randrange(10**6)}"},
        "move": {"category_id": categories[1]},
        "deactivate": {"is_active": False},
        "reactivate": {"is_active": True},
    }[kind]
    return await client.put(f"/products/{product_id}", json=changes)


def test_every_write_shows_on_the_next_read_on_either_worker(server: Server) -> None:
    rng = random.Random("read your writes")
    reads: list[tuple[str, str, str | None]] = []  # (write's request id, read's request id, stale or None)
    writes = Counter[str]()

    def setup() -> tuple[list[int], dict[int, Row]]:
        """Two fresh categories holding a few seeded products, so lists and totals are exactly known."""
        with Sql(server.database_url) as sql:
            categories = [row["id"] for row in sql.fetch(
                "INSERT INTO categories (name) VALUES ('Moves A'), ('Moves B') RETURNING id")]
            rows = sql.fetch(
                "INSERT INTO products (name, price, category_id, is_active)"
                " SELECT 'Neighbour ' || n, n, ($1::int[])[1 + n % 2], n % 4 <> 0 FROM generate_series(1, 8) AS n"
                " RETURNING id, name, price, category_id, is_active",
                categories,
            )
        server.expire_cache()
        return categories, {r["id"]: Row(r["price"], r["category_id"], r["is_active"], r["name"]) for r in rows}

    async def read_all(client: httpx.AsyncClient, write: httpx.Response, product_id: int,
                       expected: dict[int, Row], anchor: int, categories: list[int]) -> None:
        for _ in range(READS_EACH):
            checks = [("product", f"/products/{product_id}", {}, None),
                      ("batch", "/products/batch", {"ids": f"{product_id},{anchor}"}, None)]
            checks += [("list", "/products", {"category_id": c, "page_size": 100}, c) for c in categories]
            for kind, path, params, category in checks:
                response = await client.get(path, params=params)
                stale = stale_reads(kind, response, product_id, expected, anchor, category)
                reads.append((write.headers["x-request-id"], response.headers["x-request-id"],
                              stale and f"{kind} after {write.request.method} {write.request.url.path}: {stale}"))

    async def run(categories: list[int], expected: dict[int, Row]) -> None:
        anchor = min(expected)  # a neighbour every batch read asks for beside the written product
        async with server.client() as client:
            for _ in range(ROUNDS):
                product_id = 0
                for kind in ("create", "reprice", "move", "deactivate", "reactivate", "delete"):
                    response = await write(client, kind, product_id, rng, categories)
                    assert response.status_code == {"create": 201, "delete": 204}.get(kind, 200), response.text
                    if kind == "delete":
                        del expected[product_id]
                    else:
                        body = response.json()
                        product_id = body["id"]
                        expected[product_id] = Row(body["price"], body["category_id"], body["is_active"], body["name"])
                    writes[kind] += 1
                    await read_all(client, response, product_id, expected, anchor, categories)

    started = time.monotonic()
    bounded(run(*setup()))
    worker = workers_by_request(server.log, (rid for write, read, _ in reads for rid in (write, read)))
    other_worker = sum(worker[write] != worker[read] for write, read, _ in reads)
    stale = [problem for _, _, problem in reads if problem]
    print(
        f"\nwrites={sum(writes.values())} {dict(writes)} reads={len(reads)} read by the other worker={other_worker} "
        f"stale={len(stale)} in {time.monotonic() - started:.1f} s"
    )
    assert stale == []
    assert other_worker >= len(reads) // 10, "the reads hardly reached the worker that did not write"


# 3. DELETE atomicity ------------------------------------------------------------------------------------


async def product_with_reviews_and_stock(server: Server, database: asyncpg.Connection) -> int:
    product_id = await database.fetchval(
        "INSERT INTO products (name, price, category_id) VALUES ('Doomed', 5, $1) RETURNING id", server.categories[0]
    )
    await database.fetch(
        "INSERT INTO reviews (product_id, user_id, rating) SELECT $1, u, 4 FROM generate_series(1, 3) AS u", product_id
    )
    await database.fetch("INSERT INTO inventory (product_id, quantity) VALUES ($1, 12)", product_id)
    server.expire_cache()
    return product_id


async def rows_of(database: asyncpg.Connection, product_id: int) -> tuple[int, int, int]:
    """How many products, reviews and inventory rows the product has in the database."""
    return tuple(await database.fetchrow(
        "SELECT (SELECT count(*) FROM products WHERE id = $1), (SELECT count(*) FROM reviews WHERE product_id = $1),"
        " (SELECT count(*) FROM inventory WHERE product_id = $1)",
        product_id,
    ))


def test_delete_takes_reviews_and_inventory_along_or_nothing(server: Server) -> None:
    async def run() -> None:
        database = await connect(server.database_url)
        try:
            async with server.client() as client:
                deleted = await product_with_reviews_and_stock(server, database)
                assert await rows_of(database, deleted) == (1, 3, 1)
                assert (await client.delete(f"/products/{deleted}")).status_code == 204
                assert await rows_of(database, deleted) == (0, 0, 0)
                assert (await client.get(f"/products/{deleted}")).status_code == 404

                # The trigger fails the last statement of the DELETE's transaction, after reviews and inventory went.
                victim = await product_with_reviews_and_stock(server, database)
                await database.execute("CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql"
                                       " AS $$ BEGIN RAISE EXCEPTION 'deleting refused by the test'; END $$")
                await database.execute("CREATE TRIGGER refuse_delete BEFORE DELETE ON products FOR EACH ROW"
                                       f" WHEN (OLD.id = {victim}) EXECUTE FUNCTION refuse_delete()")
                try:
                    failed = await client.delete(f"/products/{victim}")
                finally:
                    await database.execute("DROP TRIGGER refuse_delete ON products")
                    await database.execute("DROP FUNCTION refuse_delete()")
                print(f"\nDELETE failing midway answered {failed.status_code} "
                      f"{failed.headers.get('content-type')} {failed.text[:200]}")
                assert 500 <= failed.status_code < 600
                assert "detail" in orjson.loads(failed.content) and "Traceback" not in failed.text
                assert await rows_of(database, victim) == (1, 3, 1)
                still_there = await client.get(f"/products/{victim}")
                assert still_there.status_code == 200 and still_there.json()["review_count"] == 3

                assert (await client.delete(f"/products/{victim}")).status_code == 204
                assert await rows_of(database, victim) == (0, 0, 0)
                assert (await client.get(f"/products/{victim}")).status_code == 404
        finally:
            await database.close()

    bounded(run())


# 4. A write whose client leaves --------------------------------------------------------------------------


async def wait_for(condition: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.05)


def test_a_write_whose_client_leaves_commits_and_invalidates(server: Server) -> None:
    """Sanic cancels a request when its client closes the connection. A write goes on to its commit and its
    invalidation all the same (a write cut between the two would leave the cache serving the old product),
    and its log line says 499, not 500."""

    async def run() -> None:
        database = await connect(server.database_url)
        blocker = await connect(server.database_url)
        try:
            product_id = await database.fetchval(
                "INSERT INTO products (name, price, category_id) VALUES ('Abandoned', 5, $1) RETURNING id",
                server.categories[0],
            )
            server.expire_cache()
            async with server.client() as client:
                for _ in range(4):  # cached, on both workers
                    assert (await client.get(f"/products/{product_id}")).json()["price"] == 5

            # The test holds the product's row, so the PUT waits in its transaction until the client has gone.
            locked = blocker.transaction()
            await locked.start()
            await blocker.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", product_id)
            host, port = server.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            body = b'{"price": 7.5}'
            writer.write(b"PUT /products/%d HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (product_id, len(body), body))
            await writer.drain()

            async def waits_for_the_row() -> bool:
                return await database.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'") > 0

            await wait_for(waits_for_the_row, "the PUT waiting for the row")
            writer.close()

            async def logged_as_left() -> bool:
                return f"PUT /products/{product_id} 499 " in server.log.read_text(errors="replace")

            await wait_for(logged_as_left, "the PUT's log line with 499")
            await locked.rollback()

            async def committed() -> bool:
                return await database.fetchval("SELECT price FROM products WHERE id = $1", product_id) == 7.5

            await wait_for(committed, "the PUT committed after its client left")
            async with server.client() as client:
                prices = [(await client.get(f"/products/{product_id}")).json()["price"] for _ in range(6)]
            assert prices == [7.5] * 6
            assert f"PUT /products/{product_id} 500 " not in server.log.read_text(errors="replace")
        finally:
            await blocker.close()
            await database.close()

    bounded(run())
