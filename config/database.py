"""``DATABASE_URL`` to asyncpg's connection keywords, TLS included: the one place every connection comes from
(web workers, the release phase, ``catalog seed``, the tests, the benchmarks).

asyncpg reads ``sslmode`` only when it parses a DSN itself; given keywords it wants ``ssl=``, and its default
``prefer`` falls back to plaintext without a word. So the URL's ``sslmode`` (or ``PGSSLMODE``) becomes ``ssl``
here, and a server that is not on this machine gets ``require`` when neither names a mode: Heroku Postgres
refuses plaintext, and nothing else would enforce TLS.
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import parse_qsl, unquote, urlsplit

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class DatabaseURLError(ValueError):
    """A database setting that cannot work; its message names the variable."""


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("/")  # a Unix-socket directory


def ssl_argument(mode: str, root_cert: str | None) -> str | ssl.SSLContext:
    """asyncpg's ``ssl``: the libpq mode name, or a context when a CA file must verify the server."""
    if root_cert and mode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context(cafile=root_cert)
        context.check_hostname = mode == "verify-full"
        return context
    return mode


def connect_arguments(url: str, pgsslmode: str | None = None, variable: str = "DATABASE_URL") -> dict[str, object]:
    """``asyncpg.connect()`` keywords for a ``postgres://`` URL (Heroku's form, or a Unix-socket one with
    ``?host=/dir``): host, port, user, password, database and ssl.

    ``pgsslmode`` defaults to the ``PGSSLMODE`` variable; the URL's ``sslmode`` wins over it. Other query
    parameters (pool sizes and the like) are not taken: the DB_* variables own them. ``variable`` is the
    setting the URL came from, named in errors (a replica's is DATABASE_REPLICA_URLS).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise DatabaseURLError(f"{variable} must be a postgres:// URL, not {parts.scheme or 'empty'}://")
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "127.0.0.1"
    if pgsslmode is None:
        pgsslmode = os.environ.get("PGSSLMODE") or None
    mode, source = (query["sslmode"], f"{variable}'s sslmode") if "sslmode" in query else (pgsslmode, "PGSSLMODE")
    if mode is None:
        mode = "prefer" if is_local(host) else "require"
    elif mode not in SSL_MODES:
        raise DatabaseURLError(f"{source} is {mode!r}: use one of {', '.join(SSL_MODES)}")
    try:
        port = parts.port or int(query.get("port", 5432))
    except ValueError as error:
        raise DatabaseURLError(f"{variable} has an invalid port: {error}") from None
    return {
        "host": host,
        "port": port,
        "user": unquote(parts.username or "") or "postgres",
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "ssl": ssl_argument(mode, query.get("sslrootcert")),
    }


def masked_url(url: str) -> str:
    """The URL with its password replaced, fit for logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
