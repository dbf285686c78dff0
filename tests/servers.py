"""Real server processes for tests that need more than one worker or a whole deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from config.settings import PROJECT_ROOT

START_TIMEOUT_S = 90


def wait_until_serving(process: subprocess.Popen, port: int, log: Path, workers: int = 2) -> None:
    """Until /health answers and every worker has acknowledged its start-up.

    A SIGTERM that reaches Sanic 25.12's manager before all workers acked leaves it spinning for ever
    in WorkerManager.wait_for_ack, so the tests stop a server only once it is fully up.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}: {log.read_text()[-2000:]}"
        try:
            healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            healthy = False
        if healthy and log.read_text().count("Worker ready") >= workers:
            return
        time.sleep(0.3)
    raise AssertionError(f"nothing served on port {port} within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("the server did not stop within 30 s of SIGTERM") from None


def start_sanic(env: dict[str, str], port: int, log: Path, workers: int = 2) -> subprocess.Popen:
    """``sanic catalog.app:create_app`` on 127.0.0.1:``port``, output to ``log``, returned once fully serving.

    It runs in a session of its own so that a start-up that fails can be killed with its workers.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sanic", "catalog.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_serving(process, port, log, workers)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        raise
    return process
