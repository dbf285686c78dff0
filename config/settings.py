"""Typed settings read from environment variables (12-factor), with defaults that work locally."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

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


@dataclass(frozen=True)
class Settings:
    # No DATABASE_URL means "use the embedded PostgreSQL" (see catalog.embedded).
    database_url: str | None = field(default_factory=lambda: os.environ.get("DATABASE_URL") or None)
    redis_url: str | None = field(default_factory=lambda: os.environ.get("REDIS_URL") or None)
    port: int = field(default_factory=lambda: _int("PORT", 8000))
    host: str = field(default_factory=lambda: os.environ.get("HOST", "0.0.0.0"))
    workers: int = field(default_factory=lambda: _int("WEB_CONCURRENCY", 2))
    # asyncpg pool per worker: 20 kept open, up to 50 under load (pool_size=20, max_overflow=30).
    db_pool_min: int = field(default_factory=lambda: _int("DB_POOL_MIN", 20))
    db_pool_max: int = field(default_factory=lambda: _int("DB_POOL_MAX", 50))
    db_acquire_timeout: float = field(default_factory=lambda: _float("DB_ACQUIRE_TIMEOUT", 30.0))
    db_idle_lifetime: float = field(default_factory=lambda: _float("DB_IDLE_LIFETIME", 300.0))
    db_connect_timeout: float = field(default_factory=lambda: _float("DB_CONNECT_TIMEOUT", 5.0))
    db_command_timeout: float = field(default_factory=lambda: _float("DB_COMMAND_TIMEOUT", 30.0))
    # The catalog's working set lives in RAM or on SSD, where a random page costs about what a sequential one
    # does; PostgreSQL's default of 4 (spinning disks) makes it hash-join whole tables instead of probing indexes.
    db_random_page_cost: float = field(default_factory=lambda: _float("DB_RANDOM_PAGE_COST", 1.1))
    cors_origins: tuple[str, ...] = field(default_factory=lambda: _list("CORS_ORIGINS", "http://localhost:3000"))
    # Signs pagination cursors; set it in production so every dyno agrees on it.
    secret_key: str = field(default_factory=lambda: os.environ.get("SECRET_KEY", "catalog-local-secret"))
    max_body_bytes: int = field(default_factory=lambda: _int("MAX_BODY_BYTES", 1_048_576))
    slow_request_ms: float = field(default_factory=lambda: _float("SLOW_REQUEST_MS", 200.0))
    gzip_min_bytes: int = field(default_factory=lambda: _int("GZIP_MIN_BYTES", 1024))
    # 3: a 20-product page 75% smaller in 73 us; 6 makes it 78% smaller in 185 us, on every uncached response.
    gzip_level: int = field(default_factory=lambda: _int("GZIP_LEVEL", 3))
    # Cached responses and counts live this long; changes made directly in the tables show within it.
    cache_ttl: float = field(default_factory=lambda: _float("CACHE_TTL", 60.0))
    cache_responses: bool = field(default_factory=lambda: _bool("CACHE_RESPONSES", True))
    cache_prefix: str = field(default_factory=lambda: os.environ.get("CACHE_PREFIX", "catalog"))
    # A dead or slow Redis costs at most this per call, and then nothing while the breaker is open. Not
    # shorter: at 500 connections a worker's event loop lags past 50 ms, and late replies opened the breaker.
    redis_timeout: float = field(default_factory=lambda: _float("REDIS_TIMEOUT_MS", 200.0) / 1000)
    redis_max_connections: int = field(default_factory=lambda: _int("REDIS_MAX_CONNECTIONS", 64))
    redis_retry_after: float = field(default_factory=lambda: _float("REDIS_RETRY_AFTER_S", 2.0))
    # A list of up to this many products has its missing count computed at once; a larger one gets the planner's
    # estimate, then its count in the background. Counting 200,001 rows takes about 12 ms (benchmarks/counts.py).
    exact_count_max_rows: int = field(default_factory=lambda: _int("EXACT_COUNT_MAX_ROWS", 200_000))
    # page=N in the default order starts from the nearest of every this-many-th product (catalog.cache.PageAnchors).
    page_anchor_every: int = field(default_factory=lambda: _int("PAGE_ANCHOR_EVERY", 1000))
    # Registers the /_ceiling/* load-test endpoints (benchmarks/run.py); never on in production.
    benchmark_endpoints: bool = field(default_factory=lambda: _bool("BENCHMARK_ENDPOINTS", False))
    embedded_data_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("EMBEDDED_PG_DIR", PROJECT_ROOT / "var" / "pgdata"))
    )


def database_credentials(url: str) -> dict[str, object]:
    """Turn a postgres:// URL (Heroku's form, or a unix-socket one with ?host=/dir) into Tortoise credentials.

    Query parameters other than ``host`` are passed on (for example ``sslmode``); pool sizes are not
    taken from the URL: the DB_POOL_* variables own them.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, not {parts.scheme or 'empty'}://")
    query = dict(parse_qsl(parts.query))
    credentials: dict[str, object] = {
        "host": query.pop("host", None) or parts.hostname or "127.0.0.1",
        "port": parts.port or int(query.pop("port", 5432)),
        "user": unquote(parts.username or "") or "postgres",
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or "postgres",
    }
    credentials.update(query)
    return credentials


def masked_url(url: str) -> str:
    """The URL with its password replaced, fit for logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
