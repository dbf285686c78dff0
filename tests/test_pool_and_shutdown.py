"""A real 2-worker server under more concurrent requests than its pools hold, and stopped mid-request."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from benchmarks.servers import free_port, start_sanic, stop
from catalog.seed import seed
from tests.conftest import create_database, drop_database
from tests.helpers import connect, fetch

PRODUCTS = 2000
WORKERS = 2
POOL_MAX = 5
CONCURRENT_REQUESTS = 500
SHUTDOWN_TIMEOUT_S = 30
PUT_PRICES = (11.0, 12.0, 13.0, 14.0)
# The server's sessions on the test database: every client's but the asking session's (an autovacuum
# worker analysing the freshly seeded tables is in pg_stat_activity too).
SERVER_SESSIONS = (
    "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend'"
)
LOCK_WAITERS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"


@pytest.fixture(scope="module")
def database(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url, "catalog_pool")
    try:
        asyncio.run(seed(url, PRODUCTS, progress=False))
        yield url
    finally:
        drop_database(postgres_server_url, url)


@pytest.fixture(scope="module")
def server_env(database: str, redis_url: str) -> Iterator[dict[str, str]]:
    prefix = f"catalog_pool_{uuid.uuid4().hex[:10]}"
    yield {
        **os.environ, "DATABASE_URL": database, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
        "WEB_CONCURRENCY": str(WORKERS), "DB_POOL_MIN": "2", "DB_POOL_MAX": str(POOL_MAX),
    }
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def server_sessions(url: str) -> list[str]:
    return [row["state"] for row in fetch(url, SERVER_SESSIONS)]


def wait_for_no_sessions(url: str, within_s: float = 5) -> None:
    """A backend leaves pg_stat_activity a moment after its client hung up."""
    deadline = time.monotonic() + within_s
    while sessions := server_sessions(url):
        assert time.monotonic() < deadline, f"sessions left after the server stopped: {sessions}"
        time.sleep(0.1)


async def burst(base: str, paths: list[str], database: str) -> tuple[list[httpx.Response | BaseException], int]:
    """GET every path at once, each on its own connection; also the most server sessions seen meanwhile."""
    monitor = await connect(database)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(await monitor.fetch(SERVER_SESSIONS)))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            outcomes = await asyncio.gather(*(client.get(path) for path in paths), return_exceptions=True)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await monitor.close()
    return outcomes, peak


def test_more_requests_than_pooled_connections_get_200_or_a_clean_503(
    database: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    category_ids = [row["id"] for row in fetch(database, "SELECT id FROM categories ORDER BY id")]
    paths = [
        "/products?page_size=100" if n % 2 else f"/categories/{category_ids[n % len(category_ids)]}/products"
        for n in range(CONCURRENT_REQUESTS)
    ]
    env = {**server_env, "DB_ACQUIRE_TIMEOUT": "1", "CACHE_RESPONSES": "false"}
    port = free_port()
    process = start_sanic(env, port, tmp_path / "server.log")
    try:
        before = server_sessions(database)
        outcomes, peak = asyncio.run(burst(f"http://127.0.0.1:{port}", paths, database))
        after = server_sessions(database)
    finally:
        assert stop(process) == 0
    wait_for_no_sessions(database)

    failures = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
    assert not failures, failures[:5]
    counts = Counter(response.status_code for response in outcomes)
    print(f"\nstatuses {dict(counts)}; server sessions: before {len(before)}, peak {peak}, after {len(after)}, "
          "stopped 0")
    assert set(counts) <= {200, 503} and counts[200] > 0, counts
    for response in outcomes:
        if response.status_code == 503:
            assert response.json() == {"detail": "Database unavailable, try again shortly"}
            assert int(response.headers["retry-after"]) > 0
    # The burst filled both pools without growing them past their maximum; every connection went back, idle.
    assert peak == WORKERS * POOL_MAX
    assert len(after) <= WORKERS * POOL_MAX and set(after) <= {"idle"}, after


@dataclass(frozen=True)
class Shutdown:
    product_id: int
    puts: list[httpx.Response | BaseException]  # PUTs in flight when SIGTERM came
    late: httpx.Response | httpx.TransportError  # a request on a new connection during the shutdown
    exit_code: int
    seconds: float  # from SIGTERM to the exit
    after_release_s: float  # from the release of the lock the PUTs waited on to the exit


@pytest.fixture(scope="module")
def shutdown(database: str, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Shutdown:
    """SIGTERM while PUTs wait on the test's lock on their row; the lock is released a little later."""
    product_id = fetch(database, "SELECT min(id) AS id FROM products")[0]["id"]
    port = free_port()
    log = tmp_path_factory.mktemp("shutdown") / "server.log"
    process = start_sanic({**server_env, "SANIC_GRACEFUL_SHUTDOWN_TIMEOUT": "15"}, port, log)

    async def stop_while_requests_wait() -> tuple[list[httpx.Response | BaseException], httpx.Response | Exception]:
        lock, monitor = await connect(database), await connect(database)
        try:
            transaction = lock.transaction()
            await transaction.start()
            await lock.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", product_id)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=SHUTDOWN_TIMEOUT_S) as client:
                puts = asyncio.gather(*(
                    client.put(f"/products/{product_id}", json={"price": price}, headers={"connection": "close"})
                    for price in PUT_PRICES
                ), return_exceptions=True)
                # In flight for sure: every PUT's transaction waits for the row (monitored from a session of
                # its own, as a session reads pg_stat_activity once per transaction).
                deadline = time.monotonic() + 10
                while await monitor.fetchval(LOCK_WAITERS) < len(PUT_PRICES):
                    assert time.monotonic() < deadline, "the PUTs never reached the row lock"
                    await asyncio.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                times["signalled"] = time.monotonic()
                await asyncio.sleep(0.5)
                # Refused or answered, either comes at once: 3 s is ample.
                try:
                    late = await client.get("/health", headers={"connection": "close"}, timeout=3)
                except httpx.TransportError as error:
                    late = error
                await transaction.rollback()
                times["released"] = time.monotonic()
                return await puts, late
        finally:
            await lock.close()
            await monitor.close()

    times: dict[str, float] = {}
    try:
        puts, late = asyncio.run(stop_while_requests_wait())
        exit_code = process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        exited = time.monotonic()
    finally:
        if process.poll() is None:
            stop(process)
    outcome = Shutdown(product_id, puts, late, exit_code, exited - times["signalled"], exited - times["released"])
    print(f"\nexit {exit_code} {outcome.seconds:.1f} s after SIGTERM, {outcome.after_release_s:.1f} s after the "
          f"lock's release; new connection during the shutdown: {late!r}")
    if exit_code != 0:  # what the server said of it, for the failure's report
        print(log.read_text()[-4000:])
    return outcome


def test_sigterm_lets_in_flight_requests_finish_then_exits_cleanly(shutdown: Shutdown, database: str) -> None:
    assert [getattr(put, "status_code", put) for put in shutdown.puts] == [200] * len(PUT_PRICES)
    assert shutdown.exit_code == 0
    assert shutdown.seconds < SHUTDOWN_TIMEOUT_S
    price = fetch(database, f"SELECT price FROM products WHERE id = {shutdown.product_id}")[0]["price"]
    assert float(price) in PUT_PRICES
    wait_for_no_sessions(database)


def test_a_connection_opened_during_the_shutdown_is_refused_or_answered(shutdown: Shutdown) -> None:
    assert isinstance(shutdown.late, (httpx.Response, httpx.ConnectError)), repr(shutdown.late)


@pytest.mark.parametrize(
    ("bounds", "detail"),
    [
        ({"DB_COMMAND_TIMEOUT": "1", "REQUEST_TIMEOUT": "20"}, "Database unavailable, try again shortly"),
        ({"DB_COMMAND_TIMEOUT": "20", "REQUEST_TIMEOUT": "1"}, "Response Timeout"),
    ],
    ids=["statement-timeout", "request-timeout"],
)
def test_a_request_held_past_its_bounds_gets_a_json_503_before_a_router_would_cut_it(
    bounds: dict[str, str], detail: str, database: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    """Heroku's router answers a request still running at 30 s with an HTML page; the service answers first."""
    product_id = fetch(database, "SELECT min(id) AS id FROM products")[0]["id"]
    price_before = fetch(database, f"SELECT price FROM products WHERE id = {product_id}")[0]["price"]
    port = free_port()
    process = start_sanic({**server_env, **bounds}, port, tmp_path / "server.log")

    async def put_behind_a_lock() -> tuple[httpx.Response, float]:
        lock = await connect(database)
        try:
            async with lock.transaction():
                await lock.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", product_id)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    started = time.monotonic()
                    response = await client.put(f"/products/{product_id}", json={"price": 99.0})
                    return response, time.monotonic() - started
        finally:
            await lock.close()

    try:
        response, seconds = asyncio.run(put_behind_a_lock())
    finally:
        assert stop(process) == 0
    assert response.status_code == 503 and response.json() == {"detail": detail}
    assert 1 <= seconds < 5
    assert fetch(database, f"SELECT price FROM products WHERE id = {product_id}")[0]["price"] == price_before
