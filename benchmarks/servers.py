"""The service as a process, started the way the Procfile starts it and stopped the way a platform does.

The tests and the benchmarks both start servers with ``start_sanic``, so they wait for the same signs of a
server that is fully up. It lives here because the benchmarks must run without the test package, and needs
nothing but the standard library and the service's settings. The load benchmark's own server (the ceilings'
endpoints on, a pool sized for the run) is at the end.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import log
from config.settings import PROJECT_ROOT

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
LOG_DIR = Path(tempfile.gettempdir()) / "catalog-bench"
WORKERS = 2  # as the Procfile starts them (WEB_CONCURRENCY's default)
DEFAULT_POOL_MAX = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
             body: bytes | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own: status, headers (lower-case names), body as sent (not decompressed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def wait_until_serving(process: subprocess.Popen, port: int, log: Path, workers: int = 2) -> None:
    """Until /health answers and every worker has acknowledged its start-up.

    A SIGTERM that reaches Sanic 25.12's manager before all workers acked leaves it spinning for ever
    in WorkerManager.wait_for_ack, so a server is stopped only once it is fully up.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            healthy = http_get(port, "/health", timeout=1)[0] == 200
        except (OSError, http.client.HTTPException):
            healthy = False
        if healthy and log.read_text().count("Worker ready") >= workers:
            return
        time.sleep(0.3)
    raise RuntimeError(f"nothing served on port {port} within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")


def start_sanic(env: dict[str, str], port: int, log: Path, workers: int = 2, tree: Path = PROJECT_ROOT,
                app: str = "catalog.app:create_app") -> subprocess.Popen:
    """``sanic <app>`` (the service's factory unless told) of the source ``tree`` on 127.0.0.1:``port``,
    output to ``log``, returned once fully serving.

    It runs in a session of its own so that a start-up that fails can be killed with its workers.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sanic", app, "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            cwd=tree, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_serving(process, port, log, workers)
    except BaseException:
        kill(process)
        raise
    return process


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, as a platform stops a process; its exit code. Killed, and an error, if still running after
    STOP_TIMEOUT_S."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(process)
        raise RuntimeError(f"the server did not stop within {STOP_TIMEOUT_S} s of SIGTERM") from None


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to the process group ``process`` leads (start_sanic's: its workers too), or to ``process`` alone
    when it leads none (no group has its id then)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        process.kill()
    process.wait(timeout=STOP_TIMEOUT_S)


# The load benchmark's server ------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    prefix: str = ""  # the service's CACHE_PREFIX, where its caches count their hits


def start_server(database_url: str, redis_url: str, prefix: str, cache: bool, pool_max: int, workers: int = WORKERS,
                 tree: Path = PROJECT_ROOT, overrides: dict[str, str] | None = None) -> Server:
    """The Procfile's web process with the ceilings' endpoints (``/_ceiling/static``, ``/_ceiling/pk``), once
    /health answers and every worker acked.

    ``tree`` is the source tree it runs (another revision's for ``--profile-baseline``). It logs at INFO, as
    shipped (a line per request), unless ``overrides`` (more variables, or other values) says otherwise."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{prefix}.log"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
           "WEB_CONCURRENCY": str(workers), "CACHE_RESPONSES": "true" if cache else "false",
           "BENCHMARK_ENDPOINTS": "true", "PORT": str(port), "PYTHONPATH": str(tree), "DB_POOL_MAX": str(pool_max),
           "LOG_LEVEL": "INFO", **(overrides or {})}
    return Server(start_sanic(env, port, log_path, workers, tree), port, log_path, prefix)


def start_bare(workers: int = WORKERS) -> Server:
    """``benchmarks.bare``: the same Sanic and workers with nothing of the service, the ceiling of cached GETs."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"bare-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return Server(start_sanic(env, port, log_path, workers, app="benchmarks.bare:create_app"), port, log_path)


def stop_server(server: Server) -> None:
    """Stopped, or killed with its workers when SIGTERM was not enough: the run goes on either way."""
    try:
        stop(server.process)
    except RuntimeError as error:
        log(str(error))


def forget_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    finally:
        client.close()
