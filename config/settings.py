"""Typed settings read from environment variables (12-factor), with defaults that work locally."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from config.database import DatabaseURLError, connect_arguments

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, default).split(",") if item.strip())


DEFAULT_SECRET_KEY = "catalog-local-secret"
REDIS_CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True)
class Settings:
    # No DATABASE_URL means "use the embedded PostgreSQL" (see catalog.embedded).
    database_url: str | None = field(default_factory=lambda: os.environ.get("DATABASE_URL") or None)
    redis_url: str | None = field(default_factory=lambda: os.environ.get("REDIS_URL") or None)
    # Streaming replicas (Heroku followers) that take reads a replica can serve without showing data older than
    # a write that has returned (catalog.replicas); none: every statement goes to DATABASE_URL, as before.
    database_replica_urls: tuple[str, ...] = field(default_factory=lambda: _list("DATABASE_REPLICA_URLS", ""))
    # A replica further behind than this is skipped until it catches up. Cached entries then live CACHE_TTL less
    # this bound, so that a change made directly in the tables still shows within CACHE_TTL.
    replica_max_lag: float = field(default_factory=lambda: _float("REPLICA_MAX_LAG_MS", 5000.0) / 1000)
    # How often each worker reads each replica's replay position: a read right after a write waits for none of
    # it, it goes to the primary until a poll shows the replica has the write.
    replica_poll: float = field(default_factory=lambda: _float("REPLICA_POLL_MS", 10.0) / 1000)
    port: int = field(default_factory=lambda: _int("PORT", 8000))
    # Connections the kernel queues before a worker accepts them. Sanic's 100 (its CLI has no option for it)
    # drops connections when 500 arrive at once, and each dropped one costs its client a 1 s SYN retry.
    listen_backlog: int = field(default_factory=lambda: _int("LISTEN_BACKLOG", 1024))
    host: str = field(default_factory=lambda: os.environ.get("HOST", "0.0.0.0"))
    workers: int = field(default_factory=lambda: _int("WEB_CONCURRENCY", 2))
    # asyncpg pool per worker: opens DB_POOL_MIN, grows on demand to DB_POOL_MAX (the seed's 20 + 30 overflow),
    # which start-up lowers until every worker fits in the server's max_connections (catalog.db.fit_pool).
    db_pool_min: int = field(default_factory=lambda: _int("DB_POOL_MIN", 2))
    db_pool_max: int = field(default_factory=lambda: _int("DB_POOL_MAX", 50))
    # Heroku's router cuts a request at 30 s: waits and statements are bounded well below it, and the
    # whole response by request_timeout, so a client always gets the contract's JSON 503 instead.
    db_acquire_timeout: float = field(default_factory=lambda: _float("DB_ACQUIRE_TIMEOUT", 10.0))
    db_idle_lifetime: float = field(default_factory=lambda: _float("DB_IDLE_LIFETIME", 300.0))
    db_connect_timeout: float = field(default_factory=lambda: _float("DB_CONNECT_TIMEOUT", 5.0))
    db_command_timeout: float | None = field(default_factory=lambda: _float("DB_COMMAND_TIMEOUT", 15.0))
    request_timeout: float = field(default_factory=lambda: _float("REQUEST_TIMEOUT", 25.0))
    # The catalog's working set lives in RAM or on SSD, where a random page costs about what a sequential one
    # does; PostgreSQL's default of 4 (spinning disks) makes it hash-join whole tables instead of probing indexes.
    db_random_page_cost: float = field(default_factory=lambda: _float("DB_RANDOM_PAGE_COST", 1.1))
    cors_origins: tuple[str, ...] = field(default_factory=lambda: _list("CORS_ORIGINS", "http://localhost:3000"))
    # Signs pagination cursors; set it in production so every dyno agrees on it.
    secret_key: str = field(default_factory=lambda: os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY))
    # On Heroku (DYNO is set on every dyno) or when said so: the built-in secret is refused.
    production: bool = field(
        default_factory=lambda: bool(os.environ.get("DYNO")) or os.environ.get("CATALOG_ENV") == "production"
    )
    max_body_bytes: int = field(default_factory=lambda: _int("MAX_BODY_BYTES", 1_048_576))
    slow_request_ms: float = field(default_factory=lambda: _float("SLOW_REQUEST_MS", 200.0))
    gzip_min_bytes: int = field(default_factory=lambda: _int("GZIP_MIN_BYTES", 1024))
    # 3: a 20-product page 75% smaller in 73 us; 6 makes it 78% smaller in 185 us, on every uncached response.
    gzip_level: int = field(default_factory=lambda: _int("GZIP_LEVEL", 3))
    # Cached responses and counts live this long; changes made directly in the tables show within it.
    cache_ttl: float = field(default_factory=lambda: _float("CACHE_TTL", 60.0))
    cache_responses: bool = field(default_factory=lambda: _bool("CACHE_RESPONSES", True))
    cache_prefix: str = field(default_factory=lambda: os.environ.get("CACHE_PREFIX", "catalog"))
    # Each worker keeps the responses it served last in memory (catalog.cache.local), up to this size (0: off).
    cache_local_mb: float = field(default_factory=lambda: _float("CACHE_LOCAL_MB", 32.0))
    # A dead or slow Redis costs at most this per call, and then nothing while the breaker is open. Not
    # shorter: at 500 connections a worker's event loop lags past 50 ms, and late replies opened the breaker.
    redis_timeout: float = field(default_factory=lambda: _float("REDIS_TIMEOUT_MS", 200.0) / 1000)
    # Opening a connection costs more than a call, most of all a TLS handshake on a busy worker (a burst of
    # 60 requests on a cold pool met the 200 ms call bound): a separate, longer bound, paid once per connection.
    redis_connect_timeout: float = field(default_factory=lambda: _float("REDIS_CONNECT_TIMEOUT_MS", 1000.0) / 1000)
    redis_max_connections: int = field(default_factory=lambda: _int("REDIS_MAX_CONNECTIONS", 64))
    # rediss:// only. Heroku's Key-Value Store presents a self-signed certificate, so by default it is not
    # verified (Heroku's own advice for redis-py); with a CA file it is, unless REDIS_SSL_CERT_REQS says otherwise.
    redis_ssl_ca_certs: str | None = field(default_factory=lambda: os.environ.get("REDIS_SSL_CA_CERTS") or None)
    redis_ssl_cert_reqs: str = field(
        default_factory=lambda: os.environ.get(
            "REDIS_SSL_CERT_REQS", "required" if os.environ.get("REDIS_SSL_CA_CERTS") else "none"
        ).strip().lower()
    )
    redis_retry_after: float = field(default_factory=lambda: _float("REDIS_RETRY_AFTER_S", 2.0))
    # A list of up to this many products has its missing count computed at once; a larger one gets the planner's
    # estimate, then its count in the background. Counting 200,001 rows takes about 12 ms (benchmarks/counts.py).
    exact_count_max_rows: int = field(default_factory=lambda: _int("EXACT_COUNT_MAX_ROWS", 200_000))
    # page=N in the default order starts from the nearest of every this-many-th product (catalog.cache.anchors).
    page_anchor_every: int = field(default_factory=lambda: _int("PAGE_ANCHOR_EVERY", 1000))
    # Registers the /_ceiling/* load-test endpoints (benchmarks/run.py); never on in production.
    benchmark_endpoints: bool = field(default_factory=lambda: _bool("BENCHMARK_ENDPOINTS", False))
    embedded_data_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("EMBEDDED_PG_DIR", PROJECT_ROOT / "var" / "pgdata"))
    )

    @property
    def entry_ttl(self) -> float:
        """How long a cached entry lives: CACHE_TTL, less REPLICA_MAX_LAG_MS when it may be filled from a replica
        that far behind."""
        return self.cache_ttl - (self.replica_max_lag if self.database_replica_urls else 0.0)

    def problems(self) -> list[str]:
        """Settings the service must not start with, one line each, naming the variable."""
        found = []
        if self.production and self.secret_key == DEFAULT_SECRET_KEY:
            found.append("SECRET_KEY is the built-in default: set a secret of your own (heroku config:set SECRET_KEY=...)")
        if self.redis_ssl_cert_reqs not in REDIS_CERT_REQS:
            found.append(f"REDIS_SSL_CERT_REQS is {self.redis_ssl_cert_reqs!r}: use one of {', '.join(REDIS_CERT_REQS)}")
        if self.exact_count_max_rows < 0:
            found.append(f"EXACT_COUNT_MAX_ROWS is {self.exact_count_max_rows}: a count of rows is 0 or more")
        if self.database_url:
            try:
                connect_arguments(self.database_url)
            except DatabaseURLError as error:
                found.append(str(error))
        for url in self.database_replica_urls:
            try:
                connect_arguments(url, variable="DATABASE_REPLICA_URLS")
            except DatabaseURLError as error:
                found.append(str(error))
        if self.database_replica_urls and not 0 < self.replica_max_lag < self.cache_ttl:
            found.append(f"REPLICA_MAX_LAG_MS is {self.replica_max_lag * 1000:g}: more than 0, less than CACHE_TTL")
        if self.cache_local_mb < 0:
            found.append(f"CACHE_LOCAL_MB is {self.cache_local_mb:g}: 0 (off) or more")
        return found
