"""The promises of the README and the Procfile, run as a newcomer or Heroku would run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from benchmarks.servers import free_port, start_sanic, stop, wait_until_serving
from config.settings import PROJECT_ROOT
from tests.conftest import create_empty_database, drop_database
from tests.servers import procfile


@pytest.fixture
def embedded_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "pgdata"
    yield data_dir
    import pgserver

    pgserver.get_server(data_dir, cleanup_mode="delete").cleanup()


def test_run_command_serves_a_demo_catalog_on_the_embedded_default(embedded_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(EMBEDDED_PG_DIR=str(embedded_dir), PORT=str(port), WEB_CONCURRENCY="2")
    with log.open("w") as output:
        process = subprocess.Popen([str(Path(sys.executable).parent / "catalog"), "run"], cwd=PROJECT_ROOT,
                                   env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(process, port, log)
        listing = httpx.get(f"http://127.0.0.1:{port}/products").json()
        assert listing["total"] > 1000 and len(listing["items"]) == 20
        assert httpx.get(f"http://127.0.0.1:{port}/categories").json()
    finally:
        assert stop(process) == 0
    assert not (embedded_dir / "postmaster.pid").exists(), "the embedded PostgreSQL outlived `catalog run`"


def test_procfile_release_then_web_on_a_fresh_database(postgres_server_url: str, tmp_path: Path) -> None:
    url = create_empty_database(postgres_server_url, "catalog_release")
    log = tmp_path / "web.log"
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "WEB_CONCURRENCY": "2",
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    lines = procfile()
    try:
        release = subprocess.run(["bash", "-c", lines["release"]], cwd=PROJECT_ROOT, env=env, capture_output=True,
                                 text=True, timeout=120)
        assert release.returncode == 0, release.stderr
        with log.open("w") as output:
            web = subprocess.Popen(["bash", "-c", f"exec {lines['web']}"], cwd=PROJECT_ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(web, port, log)
            created = httpx.post(f"http://127.0.0.1:{port}/products", json={"name": "First", "price": 1.5})
            assert created.status_code == 201
            fetched = httpx.get(f"http://127.0.0.1:{port}/products/{created.json()['id']}")
            assert fetched.json()["name"] == "First"
        finally:
            assert stop(web) == 0
    finally:
        drop_database(postgres_server_url, url)


def test_unreachable_database_is_a_503_not_a_crash(tmp_path: Path) -> None:
    port, dead_port = free_port(), free_port()
    log = tmp_path / "web.log"
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{dead_port}/catalog"}
    web = start_sanic(env, port, log)
    try:
        for path in ("/products", "/products/1", "/categories"):
            response = httpx.get(f"http://127.0.0.1:{port}{path}")
            assert response.status_code == 503
            assert response.json() == {"detail": "Database unavailable, try again shortly"}
            assert int(response.headers["retry-after"]) > 0
        assert "Traceback" not in log.read_text()
    finally:
        assert stop(web) == 0


def listening_sockets(port: int) -> int:
    """How many TCP sockets the kernel has listening on ``port`` (IPv4: /proc/net/tcp, state 0A)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def test_each_worker_listens_on_a_socket_of_its_own(tmp_path: Path) -> None:
    """SO_REUSEPORT: the kernel spreads new connections over the workers' sockets, so that no worker takes
    every connection of a burst (asyncio's loop accepts all it can at once from a shared socket)."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/catalog"}
    web = start_sanic(env, port, tmp_path / "web.log", workers=2)
    try:
        assert listening_sockets(port) == 2
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        # SO_REUSEPORT would let a second service share the port silently; it is refused as before.
        second = subprocess.Popen(
            [sys.executable, "-m", "sanic", "catalog.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "2"],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        try:
            output, _ = second.communicate(timeout=60)
        finally:
            if second.poll() is None:  # it serves: stop it and its workers
                os.killpg(second.pid, signal.SIGKILL)
                second.wait()
        assert second.returncode != 0 and "Address already in use" in output
        assert listening_sockets(port) == 2
    finally:
        assert stop(web) == 0
    assert listening_sockets(port) == 0


def test_on_a_dyno_the_built_in_secret_key_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}
    env.update(DYNO="web.1", DATABASE_URL="postgres://u:p@db.example.com:5432/d", PORT=str(free_port()),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    web = subprocess.run(["bash", "-c", procfile()["web"]], cwd=PROJECT_ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert web.returncode != 0
    assert web.stderr.strip().splitlines()[-1].startswith("catalog: SECRET_KEY is the built-in default")
    assert "Traceback" not in web.stderr and "p@db" not in web.stderr


def test_the_python_buildpack_finds_pinned_production_dependencies_and_a_python_with_wheels_for_them() -> None:
    """requirements.txt is what Heroku installs: every dependency of pyproject.toml pinned to a version it
    allows, and none of the extras (the embedded PostgreSQL, the test tools)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            (pinned,) = requirement.specifier
            assert pinned.operator == "==", line
            pins[canonicalize_name(requirement.name)] = pinned.version
    for dependency in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency} is missing from requirements.txt: run `make requirements`"
        assert dependency.specifier.contains(pins[name]), f"requirements.txt pins {name}=={pins[name]}: {dependency}"
    for extra in project["optional-dependencies"].values():
        for requirement in map(Requirement, extra):
            assert canonicalize_name(requirement.name) not in pins, requirement
    python = (PROJECT_ROOT / ".python-version").read_text().strip()
    assert SpecifierSet(project["requires-python"]).contains(f"{python}.0")
    assert python in ("3.10", "3.11", "3.12")  # the Pythons pgserver (make run's embedded default) has wheels for


def test_app_json_provisions_what_the_service_reads() -> None:
    app = json.loads((PROJECT_ROOT / "app.json").read_text())
    plans = {addon["plan"].split(":")[0]: addon.get("as") for addon in app["addons"]}
    assert plans == {"heroku-postgresql": "DATABASE", "heroku-redis": "REDIS"}  # DATABASE_URL, REDIS_URL
    assert app["env"]["SECRET_KEY"] == {"description": app["env"]["SECRET_KEY"]["description"], "generator": "secret"}
    assert "web" in app["formation"] and set(procfile()) == {"release", "web"}
