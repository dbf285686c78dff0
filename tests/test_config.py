"""Settings that decide how the service reaches its servers: DATABASE_URL's TLS, pool sizes, refusals."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace

import pytest

from catalog.db import RESERVED_FOR_OTHERS, PoolSize, fit_pool, read_usable_connections
from config.database import DatabaseURLError, connect_arguments
from config.settings import DEFAULT_SECRET_KEY, Settings
from tests.helpers import Sql


@pytest.mark.parametrize(
    ("url", "pgsslmode", "expected"),
    [
        # Heroku's own form: a remote host and no sslmode must not fall back to plaintext.
        ("postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d8x", "", "require"),
        ("postgres://u:p@db.example.com/x?sslmode=require", "", "require"),
        ("postgres://u:p@db.example.com/x?sslmode=disable", "", "disable"),
        ("postgres://u:p@db.example.com/x?sslmode=verify-full", "", "verify-full"),
        ("postgres://u:p@db.example.com/x", "verify-ca", "verify-ca"),
        ("postgres://u:p@db.example.com/x?sslmode=allow", "require", "allow"),  # the URL wins
        # This machine: asyncpg's own default.
        ("postgres://postgres@127.0.0.1:5432/catalog", "", "prefer"),
        ("postgres://postgres@localhost/catalog", "", "prefer"),
        ("postgresql://postgres@/catalog?host=/var/run/postgresql", "", "prefer"),
        ("postgres://postgres@127.0.0.1/catalog", "require", "require"),
    ],
)
def test_sslmode_from_the_url_or_pgsslmode_becomes_asyncpgs_ssl(url: str, pgsslmode: str, expected: str) -> None:
    assert connect_arguments(url, pgsslmode or None)["ssl"] == expected


def test_the_url_gives_every_connection_keyword_and_nothing_asyncpg_would_refuse() -> None:
    arguments = connect_arguments("postgres://us%40er:p%3Ass@db.example.com:6543/shop?sslmode=require&minsize=50")
    assert arguments == {"host": "db.example.com", "port": 6543, "user": "us@er", "password": "p:ss",
                         "database": "shop", "ssl": "require"}


def test_a_root_certificate_makes_verify_modes_check_against_it(tmp_path) -> None:
    from benchmarks.postgres import self_signed_certificate

    certificate, _ = self_signed_certificate(tmp_path)
    full = connect_arguments(f"postgres://u@db.example.com/x?sslmode=verify-full&sslrootcert={certificate}")["ssl"]
    ca = connect_arguments(f"postgres://u@db.example.com/x?sslmode=verify-ca&sslrootcert={certificate}")["ssl"]
    assert isinstance(full, ssl.SSLContext) and full.check_hostname and full.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(ca, ssl.SSLContext) and not ca.check_hostname and ca.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("url", "pgsslmode", "variable"),
    [
        ("postgres://u@db.example.com/x?sslmode=requir", "", "DATABASE_URL"),
        ("postgres://u@db.example.com/x", "on", "PGSSLMODE"),
        ("mysql://u@db.example.com/x", "", "DATABASE_URL"),
        ("postgres://u@db.example.com:port/x", "", "DATABASE_URL"),
    ],
)
def test_a_setting_that_cannot_work_is_an_error_naming_its_variable(url: str, pgsslmode: str, variable: str) -> None:
    with pytest.raises(DatabaseURLError, match=variable):
        connect_arguments(url, pgsslmode or None)


def test_start_up_refuses_bad_settings_with_one_line_each() -> None:
    base = replace(Settings(), database_url="postgres://u@db.example.com/x", secret_key=DEFAULT_SECRET_KEY)
    assert replace(base, production=False).problems() == []
    problems = replace(base, production=True, redis_ssl_cert_reqs="maybe", exact_count_max_rows=-1,
                       database_url="postgres://u@db.example.com/x?sslmode=nope").problems()
    assert [problem.split(" ", 1)[0] for problem in problems] == [
        "SECRET_KEY", "REDIS_SSL_CERT_REQS", "EXACT_COUNT_MAX_ROWS", "DATABASE_URL's"
    ]
    assert all("\n" not in problem for problem in problems)
    assert replace(base, production=True, secret_key="s3cr3t").problems() == []


@pytest.mark.parametrize(
    ("pool_min", "pool_max", "workers", "usable", "expected"),
    [
        (2, 50, 2, 20, PoolSize(2, 8)),  # Heroku Essential-0: 2 x 8 + 3 for the release phase and a console
        (2, 50, 2, 97, PoolSize(2, 47)),  # PostgreSQL's default 100 less 3 for superusers
        (2, 50, 1, 500, PoolSize(2, 50)),  # a large plan: DB_POOL_MAX holds
        (2, 50, 8, 20, PoolSize(2, 2)),
        (2, 50, 40, 20, PoolSize(1, 1)),  # more workers than slots: one each, and the start-up log says so
        (20, 50, 2, 20, PoolSize(8, 8)),  # the minimum never exceeds the maximum
        (2, 50, 2, None, PoolSize(2, 50)),  # server not reachable at start-up: the settings as they are
    ],
)
def test_pools_shrink_until_every_worker_fits_beside_the_reserved_slots(
    pool_min: int, pool_max: int, workers: int, usable: int | None, expected: PoolSize
) -> None:
    settings = replace(Settings(), db_pool_min=pool_min, db_pool_max=pool_max)
    size = fit_pool(settings, workers, usable)
    assert size == expected
    if usable is not None and usable - RESERVED_FOR_OTHERS >= workers:
        assert workers * size.maximum + RESERVED_FOR_OTHERS <= usable


def test_the_servers_limit_for_the_app_is_read_from_its_settings(settings: Settings) -> None:
    with Sql(settings.database_url) as sql:
        maximum = int(sql.fetchval("SHOW max_connections"))
        superusers = int(sql.fetchval("SHOW superuser_reserved_connections"))
    assert asyncio.run(read_usable_connections(settings.database_url, settings)) == maximum - superusers
    from benchmarks.servers import free_port

    unreachable = f"postgres://postgres@127.0.0.1:{free_port()}/catalog"
    assert asyncio.run(read_usable_connections(unreachable, settings)) is None
