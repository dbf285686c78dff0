"""The promises of the README and the Procfile, run as a newcomer or Heroku would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import PROJECT_ROOT
from tests.conftest import create_empty_database, drop_database, free_port
from tests.servers import start_sanic, stop, wait_until_serving


def procfile() -> dict[str, str]:
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


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
