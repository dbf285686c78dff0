"""PostgreSQL going away and coming back under a running 2-worker server: clean 503s, then recovery.

The cluster is a private one (pgserver's PostgreSQL 16 binaries, its own data folder and TCP port),
because the tests stop and start it; the machine's shared server is never touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from benchmarks.postgres import PrivatePostgres
from benchmarks.servers import free_port, start_sanic, stop
from catalog.seed import seed
from tests.conftest import migrate
from tests.helpers import Sql, fetch, workers_by_request

ADMIN_PASSWORD = "admin-PW"
APP_PASSWORD = "s3cret-PW"
PRODUCTS = 300
OUTAGE_ANSWER_S = 10  # the longest a request may take to say 503 while PostgreSQL is down
RECOVERY_S = 20  # how soon after PostgreSQL is back every endpoint must answer 200 again
HTTP_TIMEOUT_S = 15
ENDPOINTS = ("/products", "/products/1", "/categories")


@dataclass(frozen=True)
class Service:
    base: str
    log: Path
    database_url: str

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        # A new connection per request, so requests spread over both workers.
        return httpx.get(f"{self.base}{path}", headers={"connection": "close", **kwargs.pop("headers", {})},
                         timeout=HTTP_TIMEOUT_S, **kwargs)

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """On a connection of its own: the cluster may have restarted since the last statement."""
        return fetch(self.database_url, sql, *args)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="catalog_faults_"))
    try:
        cluster = PrivatePostgres(root, ADMIN_PASSWORD)
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running:  # not after a failed restart
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def service(postgres: PrivatePostgres, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with Sql(postgres.url("postgres", ADMIN_PASSWORD, "postgres")) as admin:
        admin.execute(f"CREATE ROLE catalog_app LOGIN PASSWORD '{APP_PASSWORD}'")
        admin.execute("CREATE DATABASE catalog OWNER catalog_app")
    url = postgres.url("catalog_app", APP_PASSWORD, "catalog")
    migrate(url)
    asyncio.run(seed(url, PRODUCTS, progress=False))

    port = free_port()
    log = tmp_path_factory.mktemp("faults") / "server.log"
    prefix = f"catalog_faults_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
        "CACHE_RESPONSES": "false", "WEB_CONCURRENCY": "2", "DB_POOL_MIN": "2", "DB_POOL_MAX": "5",
        "DB_CONNECT_TIMEOUT": "2",  # bounds a connection attempt that gets no answer at all
    }
    process = start_sanic(env, port, log)
    try:
        yield Service(f"http://127.0.0.1:{port}", log, url)
    finally:
        assert stop(process) == 0
        with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)


def assert_log_clean(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text, text[text.index("Traceback"):][:2000]
    assert APP_PASSWORD not in text


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert list(body) == ["detail"]
    assert not re.search(r"traceback|select |insert |asyncpg|\.py", response.text, re.IGNORECASE), response.text
    assert int(response.headers["retry-after"]) > 0


def test_serves_while_postgres_is_up(service: Service) -> None:
    for path in ENDPOINTS:
        assert service.get(path).status_code == 200, path
    ready = service.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["postgres"] == "ok"


def test_outage_answers_503_quickly_and_writes_nothing(service: Service, postgres: PrivatePostgres) -> None:
    product_count = service.fetch("SELECT count(*) FROM products")[0][0]
    category_id = service.fetch("SELECT min(id) FROM categories")[0][0]
    # A product whose JSON is kept (catalog.cache.fragments) needs no SQL; one never served needs PostgreSQL.
    never_served = service.fetch("SELECT max(id) FROM products")[0][0]
    paths = [path for path in ENDPOINTS if path != "/products/1"] + [f"/products/{never_served}"]
    with postgres.down():
        for path in (*paths, f"/categories/{category_id}/products", "/products?page_size=100"):
            started = time.monotonic()
            response = service.get(path)
            assert time.monotonic() - started < OUTAGE_ANSWER_S, path
            assert_unavailable(response)

        created = httpx.post(f"{service.base}/products", json={"name": "Written during the outage", "price": 1.5},
                             timeout=HTTP_TIMEOUT_S)
        assert_unavailable(created)

        health = service.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "healthy"})
        ready = service.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["postgres"].startswith("unavailable")
        assert ready.json()["cache"] == "ok"

    assert service.fetch("SELECT count(*) FROM products")[0][0] == product_count
    assert service.fetch("SELECT count(*) FROM products WHERE name = 'Written during the outage'")[0][0] == 0
    assert_log_clean(service.log)


def test_recovers_without_restart_on_both_workers(service: Service, postgres: PrivatePostgres) -> None:
    with postgres.down():
        assert service.get("/products").status_code == 503  # the pools have seen their connections die

    restarted = time.monotonic()
    while [service.get(path).status_code for path in ENDPOINTS] != [200] * len(ENDPOINTS):
        assert time.monotonic() < restarted + RECOVERY_S, f"not every endpoint answers 200 {RECOVERY_S} s after"
        time.sleep(0.5)
    print(f"\nevery endpoint answers 200 {time.monotonic() - restarted:.1f} s after PostgreSQL is back")

    product = service.fetch("SELECT id, name, price, category_id FROM products ORDER BY id LIMIT 1")[0]
    served = service.get(f"/products/{product['id']}").json()
    assert (served["name"], served["price"], served["category_id"]) == (
        product["name"], float(product["price"]), product["category_id"]
    )
    active = service.fetch("SELECT count(*) FROM products WHERE is_active")[0][0]
    assert service.get("/products").json()["total"] == active
    categories = [(row["id"], row["name"]) for row in service.fetch("SELECT id, name FROM categories ORDER BY id")]
    assert [(category["id"], category["name"]) for category in service.get("/categories").json()] == categories

    # Both workers recovered: a request's log line names the pid that served it (and its X-Request-ID).
    marker = uuid.uuid4().hex[:8]
    for number in range(20):
        path = (*ENDPOINTS, "/health/ready")[number % 4]
        response = service.get(path, headers={"x-request-id": f"{marker}{number}"})
        assert response.status_code == 200, (path, response.text)
    served_by = workers_by_request(service.log, [f"{marker}{number}" for number in range(20)])
    assert len(served_by) == 20 and len(set(served_by.values())) == 2, served_by
    assert_log_clean(service.log)

