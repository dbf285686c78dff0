"""Connections always go back to the pool, also when requests fail midway."""

from __future__ import annotations

import asyncio

import orjson
from tortoise import Tortoise

from tests.conftest import TEST_POOL_MAX, Database


def checked_out(db: Database) -> tuple[int, int]:
    pool = Tortoise.get_connection("default")._pool
    return pool.get_size() - pool.get_idle_size(), pool.get_size()


def test_pool_returns_to_baseline_after_failing_requests(client, db: Database) -> None:
    product = db.product()
    client.get("/products")
    assert checked_out(db)[0] == 0
    base = f"http://{client.host}:{client.port}"
    bad_category = orjson.dumps({"name": "x", "price": 1, "category_id": 999_999})

    async def burst() -> list[int]:
        session = client._session
        requests = []
        for _ in range(3 * TEST_POOL_MAX):
            # Each of these fails inside the query layer, after a connection was taken from the pool.
            requests.append(session.put(f"{base}/products/{product}", content=bad_category))
            requests.append(session.post(f"{base}/products", content=bad_category))
            requests.append(session.delete(f"{base}/products/424242"))
            requests.append(session.get(f"{base}/products?page_size=100"))
        responses = await asyncio.gather(*requests)
        return [response.status_code for response in responses]

    statuses = db.run(burst())
    assert sorted(set(statuses)) == [200, 404, 422]
    in_use, size = checked_out(db)
    assert in_use == 0
    assert size <= TEST_POOL_MAX
    assert db.fetchval("SELECT count(*) FROM products") == 1


def test_a_use_interrupted_between_prepare_and_execute_leaves_no_open_transaction(client, db: Database) -> None:
    """asyncpg prepares with Flush: PostgreSQL stays inside an implicit transaction (state 'active', waiting
    for the client) until the next message. A use that ends in an exception must not leave it so in the pool."""
    connection_client = Tortoise.get_connection("default")

    async def interrupted() -> int:
        try:
            async with connection_client.acquire_connection() as connection:
                pid = connection.get_server_pid()
                await connection.prepare("SELECT id FROM products")
                raise asyncio.CancelledError  # as when Sanic cancels the request of a client that left
        except asyncio.CancelledError:
            return pid

    pid = db.run(interrupted())
    state = db.fetch("SELECT state, wait_event FROM pg_stat_activity WHERE pid = $1", pid)
    assert [tuple(row) for row in state] in ([("idle", "ClientRead")], [])
    assert checked_out(db)[0] == 0
