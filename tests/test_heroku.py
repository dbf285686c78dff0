"""Heroku's shape, reproduced with private servers: Postgres that refuses plaintext and allows 20 connections,
a Key-Value Store that speaks only TLS with a self-signed certificate and a password, and the Procfile's
release and web lines run as the platform runs them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest

from benchmarks.postgres import (
    PrivatePostgres,
    postgres_bin_dir,
    self_signed_certificate,
)
from benchmarks.servers import free_port, stop, wait_until_serving
from catalog.cache import SharedState, open_caches
from config.database import connect_arguments
from config.settings import PROJECT_ROOT, Settings
from tests.helpers import Sql, cache_state, fetch
from tests.servers import RedisServer, procfile

ADMIN_PASSWORD = "admin-Pa55-heroku"
APP_PASSWORD = "app-Pa55-heroku"
REDIS_PASSWORD = "kv-Pa55-heroku"
APP_CONNECTIONS = 20  # Heroku Postgres Essential-0
PRODUCTS = 200
CONCURRENT_GETS = 50
CONCURRENT_POSTS = 10
# 127.0.0.2 is this machine, but not a host the service takes for local: it gets Heroku's treatment.
REMOTE_HOST = "127.0.0.2"


@pytest.fixture(scope="module")
def heroku_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="catalog_heroku_"))  # pytest's tmp dirs are closed to the server's user
    try:
        cluster = PrivatePostgres(root, ADMIN_PASSWORD, postgres_bin_dir(with_tls=True))
        cluster.require_tls(APP_CONNECTIONS)
        cluster.start()
        try:
            create_app_role(cluster)
            yield cluster
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root)


def create_app_role(cluster: PrivatePostgres) -> None:
    admin_url = cluster.url("postgres", ADMIN_PASSWORD, "postgres")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        asyncio.run(asyncpg.connect(**{**connect_arguments(admin_url), "ssl": "disable"}, timeout=10))
    with Sql(admin_url) as admin:
        admin.execute(f"CREATE ROLE catalog_app LOGIN PASSWORD '{APP_PASSWORD}'")  # not a superuser
        admin.execute("CREATE DATABASE catalog OWNER catalog_app")


@pytest.fixture(scope="module")
def heroku_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("heroku_redis")
    server = RedisServer(directory, password=REDIS_PASSWORD, tls=self_signed_certificate(directory))
    server.start()
    yield server
    server.kill()


def app_url(cluster: PrivatePostgres, form: str) -> str:
    url = cluster.url("catalog_app", APP_PASSWORD, "catalog", host=REMOTE_HOST)
    return url if form == "heroku" else f"{url}?sslmode=require"


def heroku_env(database_url: str, redis_url: str, port: int) -> dict[str, str]:
    """What a dyno has: the add-ons' URLs, PORT, WEB_CONCURRENCY, DYNO and the config vars; no tuning."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DB_", "REDIS_", "CACHE_", "TEST_", "PG", "DATABASE_"))}
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, PORT=str(port), WEB_CONCURRENCY="2", DYNO="web.1",
        SECRET_KEY=uuid.uuid4().hex, CACHE_PREFIX=f"catalog_heroku_{uuid.uuid4().hex[:8]}",
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    return env


def release(env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-c", procfile()["release"]], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


async def concurrent_uncached_requests(base: str) -> list[int]:
    """Distinct URLs never asked before, and writes, all at once: more than the pools' 2 x 8 connections."""
    limits = httpx.Limits(max_connections=CONCURRENT_GETS + CONCURRENT_POSTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        gets = [client.get(f"/products/{product_id}") for product_id in range(10, 10 + CONCURRENT_GETS // 2)]
        gets += [client.get("/products", params={"page_size": size}) for size in range(50, 50 + CONCURRENT_GETS // 2)]
        posts = [client.post("/products", json={"name": f"Concurrent {n}", "price": n}) for n in range(CONCURRENT_POSTS)]
        responses = await asyncio.gather(*gets, *posts)
    return [response.status_code for response in responses]


def app_sessions(cluster: PrivatePostgres) -> list[asyncpg.Record]:
    return fetch(
        cluster.url("postgres", ADMIN_PASSWORD, "postgres"),
        "SELECT a.pid, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'catalog_app'",
    )


@pytest.fixture(scope="module")
def seeded(heroku_postgres: PrivatePostgres, heroku_redis: RedisServer) -> None:
    """The release phase on an empty database, then `catalog seed` over the same TLS connection rules."""
    env = heroku_env(app_url(heroku_postgres, "heroku"), heroku_redis.url, free_port())
    assert "Success upgrading" in release(env)
    seeded = subprocess.run([str(Path(sys.executable).parent / "catalog"), "seed", "--products", str(PRODUCTS),
                             "--quiet"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr


@pytest.mark.parametrize("form", ["heroku", "sslmode=require"])
def test_procfile_on_heroku_postgres_and_key_value_store_over_tls(
    form: str, heroku_postgres: PrivatePostgres, heroku_redis: RedisServer, seeded: None, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = heroku_env(app_url(heroku_postgres, form), heroku_redis.url, port)
    release(env)  # nothing pending now; the platform runs it on every deploy
    log = tmp_path / "web.log"
    with log.open("w") as output:
        web = subprocess.Popen(["bash", "-c", f"exec {procfile()['web']}"], cwd=PROJECT_ROOT, env=env,
                               stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(web, port, log)
        ready = httpx.get(f"{base}/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "postgres": "ok", "cache": "ok", "cache_backend": "Redis"}

        first, again = (httpx.get(f"{base}/products/3") for _ in range(2))
        assert first.status_code == again.status_code == 200
        assert cache_state(again) == "hit"

        created = httpx.post(f"{base}/products", json={"name": f"Read back {form}", "price": 2.5})
        assert created.status_code == 201
        assert httpx.get(f"{base}/products/{created.json()['id']}").json()["name"] == f"Read back {form}"

        statuses = asyncio.run(concurrent_uncached_requests(base))
        assert statuses == [200] * CONCURRENT_GETS + [201] * CONCURRENT_POSTS

        sessions = app_sessions(heroku_postgres)
        print(f"\n{form}: {len(statuses)} concurrent requests {sorted(set(statuses))}; app sessions "
              f"{len(sessions)}, encrypted {sum(session['ssl'] for session in sessions)}")
        assert sessions and all(session["ssl"] for session in sessions), sessions
        assert len(sessions) <= 2 * 8  # each worker's pool fits: (20 - 3 kept for others) // 2 workers
    finally:
        assert stop(web) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "2 workers x pool of 2 to 8 connections (server allows 20, 3 kept for others)" in text
    assert "Redis over TLS without verifying its certificate" in text
    for secret in (APP_PASSWORD, REDIS_PASSWORD, env["SECRET_KEY"]):
        assert secret not in text, text[max(0, text.index(secret) - 1000):][:2000]
    assert "Traceback" not in text, text[text.index("Traceback"):][:3000]


def test_redis_certificate_verification_follows_the_settings(heroku_redis: RedisServer, tmp_path: Path) -> None:
    certificate = heroku_redis.tls[0]
    unverified = replace(Settings(), redis_url=heroku_redis.url, redis_ssl_cert_reqs="none")
    verified = replace(unverified, redis_ssl_cert_reqs="required", redis_ssl_ca_certs=str(certificate))
    other_ca, _ = self_signed_certificate(tmp_path)
    wrong_ca = replace(verified, redis_ssl_ca_certs=str(other_ca))
    system_cas = replace(verified, redis_ssl_ca_certs=None)

    async def ping(settings: Settings) -> str:
        caches = open_caches(settings, SharedState.new())
        try:
            return await caches.store.ping()
        finally:
            await caches.close()

    assert asyncio.run(ping(unverified)) == "ok"
    assert asyncio.run(ping(verified)) == "ok"
    assert asyncio.run(ping(wrong_ca)).startswith("unavailable")
    assert asyncio.run(ping(system_cas)).startswith("unavailable")
