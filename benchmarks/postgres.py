"""Private PostgreSQL clusters (pgserver's binaries, or the machine's where TLS is needed) that a test or a
benchmark may stop, start again, put behind TLS, or follow with a streaming standby.

They live here, beside ``benchmarks.servers``, because the benchmarks must run without the test package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

from benchmarks.servers import free_port


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

    With ``primary``, a streaming standby of that (running) cluster, made by ``pg_basebackup -R`` and applying
    each commit ``apply_delay_ms`` after the primary made it (``recovery_min_apply_delay``), so that it lags.
    """

    def __init__(self, root: Path, admin_password: str, bin_dir: Path | None = None, *,
                 primary: PrivatePostgres | None = None, apply_delay_ms: int = 0) -> None:
        self.root = root
        self.data = root / "data"
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.port = free_port()
        self.admin_password = admin_password
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            ensure_user_exists("pgserver")
            self.user = "pgserver"
            account = pwd.getpwnam(self.user)
            os.chown(root, account.pw_uid, account.pw_gid)
        if primary is not None:
            # The connection it streams from, password included, goes into postgresql.auto.conf (-R).
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                      "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast",
                      password=primary.admin_password)
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(f"hot_standby = on\nrecovery_min_apply_delay = '{apply_delay_ms}ms'\n")
            return
        (root / "pwfile").write_text(admin_password)
        os.chmod(root / "pwfile", 0o644)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(root / "pwfile"),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=utf8")

    def _run(self, program: str, *args: str, password: str | None = None) -> None:
        env = {**os.environ, "PGPASSWORD": password} if password else None
        result = subprocess.run([str(self.bin_dir / program), *args], user=self.user, check=False,
                                capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, f"{program} {' '.join(args)}: {result.stdout}{result.stderr}"

    def allow_replication(self) -> None:
        """Before ``start``: WAL a standby can replay, and the standby's replication connection let in."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("wal_level = replica\nmax_wal_senders = 5\n")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 scram-sha-256\n")

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
