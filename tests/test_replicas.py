"""Reads on a real streaming replica that lags by a second, through separate service instances (as dynos: their own
processes and ports, one PostgreSQL primary, one Redis).

The module makes one private primary (pgserver's binaries, ``wal_level = replica``, a replication line in
pg_hba.conf) and a standby of it with ``pg_basebackup -R`` applying each commit a second late
(``recovery_min_apply_delay``), then starts two pairs of instances with DATABASE_REPLICA_URLS naming the
standby: one pair with the response cache, one without (on a Redis of the module's own, which a test kills). One
instance of a pair writes, the other reads at once. A fifth instance runs without Redis, its two workers sharing
the in-process cache.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
import redis

from benchmarks.postgres import PrivatePostgres
from benchmarks.servers import free_port, start_sanic, stop
from catalog.cache.backends import RedisBackend
from catalog.db import PoolSize, fit_replica_pool
from catalog.replicas import Replica, parse_position
from config.settings import Settings
from tests.conftest import migrate
from tests.helpers import (
    Catalog,
    Server,
    Sql,
    fetch,
    seed_catalog,
    server_env,
    server_timing,
)
from tests.servers import RedisServer

ADMIN_PASSWORD = "admin-Pa55-replica"
APP_PASSWORD = "app-Pa55-replica"
APPLY_DELAY_MS = 1000
ROUNDS = 30
DEEP_PAGE = "/products?page=4&page_size=5"  # 15 rows in: from a page anchor (PAGE_ANCHOR_EVERY=5)
REPLICA_USE_S = 15  # how soon a replica that has the writes (again) must take reads
OUTAGE_GET_S = 5.0  # the longest a GET may take while the replica goes away


def test_positions_are_read_as_numbers_and_the_lag_is_the_wait_of_the_oldest_unreplayed_wal() -> None:
    assert parse_position("16/B374D848") == 0x16_B374D848
    replica = Replica("replica1", "r", {})
    replica.observe(replayed=100, received=100, now=10.0)
    assert replica.lag_s == 0.0
    replica.observe(replayed=100, received=150, now=11.0)  # a write arrived, held back
    replica.observe(replayed=100, received=180, now=11.5)
    replica.observe(replayed=150, received=200, now=12.2)  # the first one replayed: the second has waited 0.7 s
    assert (replica.position, round(replica.lag_s, 3)) == (150, 0.7)
    replica.observe(replayed=200, received=200, now=30.0)  # caught up, then idle: no lag however long
    assert replica.lag_s == 0.0


def test_redis_keeps_the_highest_write_position_across_32_bit_halves(settings: Settings) -> None:
    import redis.asyncio as redis_asyncio

    tracking = replace(settings, cache_prefix=f"{settings.cache_prefix}_positions",
                       database_replica_urls=("postgres://u@replica.example/x",))

    async def record(positions: list[int]) -> list[bytes]:
        client = redis_asyncio.from_url(settings.redis_url)
        backend = RedisBackend(client, tracking)
        kept = []
        try:
            for position in positions:
                await backend.record_write_position(position)
                kept.append(await client.get(backend.write_position))
            await client.delete(backend.write_position)
        finally:
            await client.aclose()
        return kept

    kept = asyncio.run(record([0x1_00000000, 0xFFFFFFFF, 0x1_0000000F, 0x1_00000001]))
    assert kept == [b"0000000100000000", b"0000000100000000", b"000000010000000F", b"000000010000000F"]


def test_a_replicas_pool_leaves_room_for_the_pollers() -> None:
    assert fit_replica_pool(replace(Settings(), db_pool_min=2, db_pool_max=50), 2, 20) == PoolSize(2, 7)


@dataclass(frozen=True)
class Cluster:
    primary: PrivatePostgres
    replica: PrivatePostgres
    sql: Sql  # on the primary, as its administrator
    catalog: Catalog

    def app_url(self, cluster: PrivatePostgres) -> str:
        return cluster.url("catalog_app", APP_PASSWORD, "catalog")

    def on_replica(self, query: str) -> list:
        return fetch(self.replica.url("postgres", ADMIN_PASSWORD, "catalog"), query)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with ExitStack() as stack:
        roots = [Path(tempfile.mkdtemp(prefix=f"catalog_{role}_")) for role in ("primary", "replica")]
        for root in roots:  # pytest's tmp dirs are closed to the servers' user
            stack.callback(shutil.rmtree, root)
        primary = PrivatePostgres(roots[0], ADMIN_PASSWORD)
        primary.allow_replication()
        primary.start()
        stack.callback(lambda: primary.running and primary.stop("immediate"))
        with Sql(primary.url("postgres", ADMIN_PASSWORD, "postgres")) as admin:
            admin.execute(f"CREATE ROLE catalog_app LOGIN PASSWORD '{APP_PASSWORD}'")  # not a superuser
            admin.execute("CREATE DATABASE catalog OWNER catalog_app")
        migrate(primary.url("catalog_app", APP_PASSWORD, "catalog"))
        sql = stack.enter_context(Sql(primary.url("postgres", ADMIN_PASSWORD, "catalog")))
        catalog = seed_catalog(sql)
        replica = PrivatePostgres(roots[1], ADMIN_PASSWORD, primary=primary, apply_delay_ms=APPLY_DELAY_MS)
        replica.start()
        stack.callback(lambda: replica.running and replica.stop("immediate"))
        yield Cluster(primary, replica, sql, catalog)


@dataclass(frozen=True)
class Pair:
    writer: Server
    reader: Server


@dataclass(frozen=True)
class Services:
    pairs: dict[str, Pair]  # by CACHE_RESPONSES; "false" on the module's own Redis
    redis: RedisServer
    in_process: Server  # no REDIS_URL, two workers


@contextmanager
def instances(envs: list[tuple[dict[str, str], int]], logs: Path) -> Iterator[list[Server]]:
    """A service per environment with its number of workers, started side by side; stopped on leaving."""
    ports = [free_port() for _ in envs]
    with ThreadPoolExecutor(len(envs)) as pool:
        starting = [pool.submit(start_sanic, env, port, logs / f"instance{n}.log", workers)
                    for n, ((env, workers), port) in enumerate(zip(envs, ports, strict=True))]
        processes = [future.result() for future in starting]
    servers = [Server(f"http://127.0.0.1:{port}", logs / f"instance{n}.log") for n, port in enumerate(ports)]
    try:
        yield servers
        for server in servers:
            assert "Traceback" not in server.log.read_text(), server.log.read_text()[-4000:]
    finally:
        for server in servers:
            server.close()
        for process in processes:
            stop(process)


@pytest.fixture(scope="module")
def services(cluster: Cluster, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Pairs of a writer and a reader sharing PostgreSQL, the replica, a Redis and a cache prefix, and an instance
    without Redis."""
    own_redis = RedisServer(tmp_path_factory.mktemp("replicas_redis"))
    own_redis.start()
    prefix = f"catalog_replicas_{uuid.uuid4().hex[:8]}"
    urls = {"true": redis_url, "false": own_redis.url}

    def env(redis: str | None, **settings: str) -> dict[str, str]:
        return server_env(cluster.app_url(cluster.primary), redis, CACHE_PREFIX=prefix, PAGE_ANCHOR_EVERY="5",
                          DATABASE_REPLICA_URLS=cluster.app_url(cluster.replica), **settings)

    envs = [(env(urls[mode], CACHE_RESPONSES=mode), 1) for mode in ("true", "false") for _ in range(2)]
    envs.append((env(None, CACHE_RESPONSES="false"), 2))
    try:
        with instances(envs, tmp_path_factory.mktemp("replicas")) as servers:
            yield Services({"true": Pair(*servers[:2]), "false": Pair(*servers[2:4])}, own_redis, servers[4])
    finally:
        own_redis.kill()
        with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)


def replica_statements(response: httpx.Response) -> int:
    """How many of a response's SQL statements a replica ran (Server-Timing)."""
    found = re.search(r'replica;desc="(\d+) statements"', response.headers["server-timing"])
    assert found, response.headers["server-timing"]
    return int(found.group(1))


def until_a_replica_reads(server: Server, deadline_s: float) -> tuple[float, httpx.Response]:
    """Uncached list pages (a page size never asked before) until a replica ran one: how long that took."""
    started = time.monotonic()
    page_sizes = itertools.cycle(range(30, 101))  # only the deadline ends the wait
    while True:
        response = server.get(f"/products?page_size={next(page_sizes)}")
        assert response.status_code == 200, response.text
        if replica_statements(response):
            return time.monotonic() - started, response
        ready = server.get("/health/ready").text
        assert time.monotonic() - started < deadline_s, f"no read went to the replica within {deadline_s} s: {ready}"
        time.sleep(0.2)


def test_reads_go_to_the_replica_once_it_has_the_writes(cluster: Cluster, services: Services) -> None:
    reader = services.pairs["false"].reader
    waited, response = until_a_replica_reads(reader, REPLICA_USE_S)
    statements, _ = server_timing(response)
    assert replica_statements(response) == statements
    # The replica's own view: the app's sessions there, and the statements they last ran.
    sessions = cluster.on_replica(
        "SELECT query FROM pg_stat_activity WHERE application_name = 'catalog' AND datname = 'catalog'"
    )
    reads = [row["query"] for row in sessions if row["query"]]
    assert reads and all(re.match(r'SELECT .* FROM "(products|reviews|inventory|categories)"', read) for read in reads), reads
    print(f"\nreplica took reads {waited:.1f} s after start: {statements} of {statements} statements of a page;"
          f" {len(sessions)} app sessions on the replica, {len(reads)} have run the catalog's SELECTs there")
    ready = reader.get("/health/ready").json()
    assert ready["status"] == "ready"
    assert ready["replicas"] == {f"127.0.0.1:{cluster.replica.port}/catalog": "ok"}


def expected_list(cluster: Cluster, where: str, *args: object) -> tuple[int, list[int]]:
    rows = cluster.sql.fetch(f"SELECT id FROM products WHERE {where} ORDER BY id", *args)
    return len(rows), [row["id"] for row in rows]


@dataclass
class Rounds:
    """Write-then-read rounds: an update, a creation, a deletion, in turn; each followed at once by reads of the
    product, its category's page and a deep page (from a page anchor), all checked against the primary."""

    cluster: Cluster
    created: list[int] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    replica_statements: int = 0  # run for the reads right after a write
    count: int = 0

    def run(self, writer: Server, reader: Server, rounds: int) -> None:
        for _ in range(rounds):
            self.round(writer, reader)

    def round(self, writer: Server, reader: Server) -> None:
        number, kitchen = self.count, self.cluster.catalog.kitchen
        self.count += 1
        kind = ("update", "create", "delete")[number % 3]
        sql = self.cluster.sql
        if kind == "update":
            target = sql.fetchval("SELECT min(id) FROM products WHERE category_id = $1 AND is_active", kitchen)
            price = 1000.0 + number
            assert writer.write("PUT", f"/products/{target}", {"price": price}).status_code == 200
        elif kind == "create":
            response = writer.write("POST", "/products", {"name": f"Round {number}", "price": 1.5, "category_id": kitchen})
            assert response.status_code == 201
            target = response.json()["id"]
            self.created.append(target)
        else:
            target = self.created.pop(0)
            assert writer.write("DELETE", f"/products/{target}").status_code == 204
        # At once, on the other instance.
        product = reader.get(f"/products/{target}")
        listed = reader.get(f"/products?category_id={kitchen}&page_size=100")
        deep = reader.get(DEEP_PAGE)
        self.replica_statements += sum(replica_statements(response) for response in (product, listed, deep))

        total, ids = expected_list(self.cluster, "category_id = $1 AND is_active", kitchen)
        active_total, active_ids = expected_list(self.cluster, "is_active")
        items = {item["id"]: item for item in listed.json()["items"]}
        if kind == "delete":
            fresh = product.status_code == 404 and target not in items
        elif kind == "create":
            fresh = product.status_code == 200 and product.json()["name"] == f"Round {number}"
        else:
            fresh = product.json()["price"] == price and items[target]["price"] == price
        fresh = fresh and listed.json()["total"] == total and list(items) == ids
        fresh = fresh and deep.json()["total"] == active_total
        fresh = fresh and [item["id"] for item in deep.json()["items"]] == active_ids[15:20]
        if not fresh:
            self.stale.append(f"round {number} ({kind} {target}): {product.status_code} {listed.text[:200]}")


@pytest.mark.parametrize("cache_responses", ["true", "false"])
def test_a_write_on_one_instance_shows_at_once_on_the_other_however_far_the_replica_lags(
    cluster: Cluster, services: Services, cache_responses: str
) -> None:
    pair, rounds = services.pairs[cache_responses], Rounds(cluster)
    rounds.run(pair.writer, pair.reader, ROUNDS)
    print(f"\nCACHE_RESPONSES={cache_responses}: stale reads {len(rounds.stale)}/{ROUNDS};"
          f" statements the replica ran for the reads right after a write: {rounds.replica_statements}")
    assert not rounds.stale, rounds.stale


def test_a_write_after_reads_on_one_connection_reads_back_from_the_primary(cluster: Cluster, services: Services) -> None:
    """A keep-alive connection serves its requests in one task: a write must not inherit the floor of a read."""
    server = services.pairs["true"].writer
    until_a_replica_reads(server, REPLICA_USE_S)
    with httpx.Client(base_url=str(server.http.base_url), timeout=5) as client:
        read = client.get("/products?page_size=41&is_active=false")
        assert replica_statements(read) > 0
        created = client.post("/products", json={"name": "Kept alive", "price": 2.0})
        assert created.status_code == 201 and created.json()["name"] == "Kept alive"
        changed = client.put(f"/products/{created.json()['id']}", json={"price": 3.0})
        assert changed.status_code == 200 and changed.json()["price"] == 3.0
        assert client.delete(f"/products/{created.json()['id']}").status_code == 204


def test_without_redis_the_workers_of_an_instance_share_the_write_position(cluster: Cluster, services: Services) -> None:
    """The in-process cache keeps the write position where both workers see it (requests spread over both)."""
    instance, rounds = services.in_process, Rounds(cluster)
    rounds.run(instance, instance, 9)
    assert not rounds.stale, rounds.stale
    assert len(set(re.findall(r"^\S+ \S+ (\d+) INFO catalog\.access: ", instance.log.read_text(), re.MULTILINE))) == 2
    waited, _ = until_a_replica_reads(instance, REPLICA_USE_S)
    print(f"\nwithout Redis: stale reads {len(rounds.stale)}/9; the replica took reads again {waited:.1f} s later")


def test_instances_share_one_computation_of_a_missing_entry(cluster: Cluster, services: Services) -> None:
    """Single-flight across instances: of concurrent requests for an entry no one has, one runs SQL. They name one
    host, as behind a platform's router (an entry is kept per host: its Link URLs name it)."""
    pair = services.pairs["true"]
    url = f"/products?category_id={cluster.catalog.garden}&page_size=7"
    bases = [str(server.http.base_url).rstrip("/") for server in (pair.writer, pair.reader)]

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10, headers={"connection": "close", "host": "catalog.example"}) as client:
            return await asyncio.gather(*(client.get(f"{base}{url}") for base in bases * 4))

    responses = asyncio.run(together())
    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    computing = [response for response in responses if server_timing(response)[0]]
    assert len(computing) == 1, "; ".join(response.headers["server-timing"] for response in responses)


def test_a_replica_that_stops_is_skipped_and_used_again_when_back(cluster: Cluster, services: Services) -> None:
    reader = services.pairs["false"].reader
    until_a_replica_reads(reader, REPLICA_USE_S)
    results: list[tuple[float, int, float, int]] = []  # when, status, seconds, replica statements
    stopping = threading.Event()

    def read_all_along() -> None:
        page = 0
        while not stopping.is_set():
            page = page % 6 + 1
            started = time.monotonic()
            response = reader.get(f"/products?page={page}&page_size=5")
            elapsed = time.monotonic() - started
            results.append((started, response.status_code, elapsed, replica_statements(response)))

    reading = threading.Thread(target=read_all_along)
    reading.start()
    try:
        time.sleep(0.5)
        stopped = time.monotonic()
        cluster.replica.stop()
        time.sleep(2)
        ready = reader.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        state = ready.json()["replicas"][f"127.0.0.1:{cluster.replica.port}/catalog"]
        assert state.startswith("unavailable"), state
        cluster.replica.start()
        restarted = time.monotonic()
        back, _ = until_a_replica_reads(reader, REPLICA_USE_S)
    finally:
        stopping.set()
        reading.join()
    during = [result for result in results if stopped <= result[0] < restarted]
    assert during and all(status == 200 for _, status, _, _ in during), during
    assert max(seconds for _, _, seconds, _ in during) < OUTAGE_GET_S
    after_stop = [replicated for when, _, _, replicated in during if when > stopped + 0.5]
    assert after_stop and not any(after_stop), "reads went to a replica that was stopped"
    print(f"\nreplica stopped: {len(during)} GETs all 200 from the primary, slowest {max(r[2] for r in during):.3f} s;"
          f" restarted: took reads again {back:.1f} s later")
    assert reader.get("/health/ready").json()["replicas"] == {f"127.0.0.1:{cluster.replica.port}/catalog": "ok"}


def test_while_redis_is_down_reads_go_to_the_primary_and_see_every_write(cluster: Cluster, services: Services) -> None:
    """Without Redis no instance can learn the write position: reads go to the primary. Once Redis is back (empty),
    the position is taken from the primary again and the replica takes reads."""
    pair, rounds = services.pairs["false"], Rounds(cluster)
    services.redis.kill()
    try:
        rounds.run(pair.writer, pair.reader, 9)
    finally:
        services.redis.start()
    assert not rounds.stale, rounds.stale
    assert rounds.replica_statements == 0
    waited, _ = until_a_replica_reads(pair.reader, REPLICA_USE_S)
    print(f"\nRedis down: stale reads 0/9, none on the replica; Redis back: the replica took reads {waited:.1f} s later")
