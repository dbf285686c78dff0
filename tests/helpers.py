"""What test modules share besides fixtures: direct SQL on a test database, the catalog that the tests of a
real 2-worker server seed and the server as they talk to it, and what the service's headers say.

Direct SQL never goes through the service: ``Sql`` from synchronous code (on a loop of its own, or on one
the caller drives), ``fetch`` for one statement on a connection of its own, and ``connect`` for coroutines
that run beside the requests they watch. All connect as the service does (``config.database``'s
arguments), and a statement that hangs fails the test instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks.servers import free_port, start_sanic, stop
from catalog.cache import forget_cached
from config.database import connect_arguments
from config.settings import Settings

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 60  # the longest, test_query_plans' count of every list, takes about 1 s per 100,000 products
REQUEST_TIMEOUT_S = 5
FOLLOW_UPS = 6  # requests that must all show a change; more are sent until both workers have answered
MAX_REQUESTS = 40  # per URL: with connections spread over two workers, both answer long before this


def forget_cached_now(redis_url: str, prefix: str) -> None:
    """After direct SQL, on a server of its own process: what ``catalog forget-cache`` does (every worker has
    dropped what it cached, local copies included, when this returns). On a thread, so that a test may call
    it with its own event loop running."""
    settings = replace(Settings(), redis_url=redis_url, cache_prefix=prefix)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, forget_cached(settings)).result()


async def connect(url: str) -> asyncpg.Connection:
    """A connection to ``url`` on the running loop."""
    return await asyncpg.connect(
        **connect_arguments(url), timeout=CONNECT_TIMEOUT_S, command_timeout=STATEMENT_TIMEOUT_S
    )


class Sql:
    """One connection to ``url``, used synchronously.

    It runs on a loop of its own unless ``run`` drives the caller's: conftest's ``Database`` passes the
    ReusableClient's, so that its tests may also run their own coroutines on the app's loop (``db.run``).
    """

    def __init__(self, url: str, run: Callable[[Coroutine], Any] | None = None) -> None:
        self.runner = None if run else asyncio.Runner()
        self.run = run or self.runner.run
        self.connection: asyncpg.Connection = self.run(connect(url))

    def execute(self, query: str, *args: Any) -> str:
        return self.run(self.connection.execute(query, *args))

    def executemany(self, query: str, args: list[tuple]) -> None:
        self.run(self.connection.executemany(query, args))

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.connection.fetch(query, *args))

    def fetchval(self, query: str, *args: Any) -> Any:
        return self.run(self.connection.fetchval(query, *args))

    def products(self, where: str, *args: Any) -> list[tuple]:
        """(id, name, price, category_id, is_active) of the products matching ``where``, by id."""
        rows = self.fetch(
            f"SELECT id, name, price, category_id, is_active FROM products WHERE {where} ORDER BY id", *args
        )
        return [tuple(row) for row in rows]

    def close(self) -> None:
        self.run(self.connection.close())
        if self.runner:
            self.runner.close()

    def __enter__(self) -> Sql:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on a connection of its own, closed before returning (nothing of the test's lingers in
    pg_stat_activity, and a server that restarted since is no matter)."""
    with Sql(url) as sql:
        return sql.fetch(query, *args)


# A real 2-worker server and the catalog its tests seed ---------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """What ``seed_catalog`` made: two categories, products in each (some inactive), one in none."""

    kitchen: int
    garden: int
    first: int  # three products of the kitchen
    second: int
    third: int
    loose: int  # in no category, for changes made behind the service's back


def seed_catalog(sql: Sql) -> Catalog:
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
        request_id = response.headers["x-request-id"]
        found = workers_by_request(self.log, [request_id])
        assert request_id in found, f"no access log line for request {request_id}"
        return found[request_id]

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


# What the headers say ------------------------------------------------------------------------------------


def server_timing(response: httpx.Response) -> tuple[int, str]:
    """The SQL statements a response ran and what the cache did for it (``cache_state``)."""
    found = re.search(r'db;dur=[\d.]+;desc="(\d+) statements", cache;dur=[\d.]+;desc="([\w-]+)"',
                      response.headers["server-timing"])
    assert found, response.headers["server-timing"]
    return int(found.group(1)), HIT if found.group(2) == LOCAL_HIT else found.group(2)


# catalog.http logs every request once: "<asctime> <pid> <LEVEL> catalog.access: ... id=<request id>".
ACCESS_LINE = re.compile(r" (\d+) \w+ catalog\.access: .* id=([A-Za-z0-9._:-]+)")


def workers_by_request(log: Path, request_ids: Iterable[str], wait_s: float = 2.0) -> dict[str, int]:
    """The worker pid that served each of ``request_ids``, by the X-Request-ID its response carried. A worker
    writes its lines when the event-loop turn that sent the responses ends (``catalog.logs``), so a line may
    follow its response by a moment: read again until all are there or ``wait_s`` has passed."""
    wanted = set(request_ids)
    deadline = time.monotonic() + wait_s
    while True:
        found = {rid: int(pid) for pid, rid in ACCESS_LINE.findall(log.read_text()) if rid in wanted}
        if len(found) == len(wanted) or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


def statements(response) -> int:
    """The SQL statements a response ran."""
    return int(re.search(r'db;dur=[\d.]+;desc="(\d+) statements"', response.headers["server-timing"]).group(1))


HIT, LOCAL_HIT = "hit", "local"


def cache_layer(response) -> str:
    """What the cache did for a response: hit (in Redis), local (the worker's own copy), miss, off, or - where
    it had no part."""
    return re.search(r'cache;dur=[\d.]+;desc="(\w+|-)"', response.headers["server-timing"]).group(1)


def cache_state(response) -> str:
    """As ``cache_layer``, with both kinds of hits a hit."""
    layer = cache_layer(response)
    return HIT if layer == LOCAL_HIT else layer


def links(header: str) -> dict[str, str]:
    """RFC 8288 Link header to {rel: url}."""
    found = {}
    for entry in header.split(", <"):
        url, _, params = entry.lstrip("<").partition(">")
        found[params.split('rel="')[1].rstrip('"')] = url
    return found
