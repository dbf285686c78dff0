"""How Sanic's processes take connections and stop: the workers' event loop, listening sockets and backlog,
and how the main process stops on SIGTERM (a platform's stop) or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
from types import FrameType

from sanic import Sanic

logger = logging.getLogger("sanic.root")


def accept_promptly(app: Sanic) -> None:
    """Workers run asyncio's own event loop, not uvloop, which Sanic picks by default.

    libuv accepts one connection per turn of its loop (libuv/libuv#3696). A worker busy with hundreds of
    connections turns its loop every few tens of milliseconds, so new connections wait in the listen queue for
    seconds. Measured here at 500 connections: uvloop took 2.7 s to accept them all, and some never within a
    3 s run; asyncio took 40 ms. The rest cost the same with either loop (worker CPU a request, cached or missed).
    """
    app.config.USE_UVLOOP = False


def deepen_listen_backlog(app: Sanic, backlog: int) -> None:
    """The backlog each worker's server listens with, set before the workers start (they take their server
    settings from the main process)."""

    @app.main_process_start
    async def listen_deeper(app: Sanic) -> None:
        for server_info in app.state.server_info:
            server_info.settings["backlog"] = backlog


def listen_per_worker(app: Sanic, backlog: int) -> None:
    """Each worker accepts from a listening socket of its own, all bound to the service's address with
    SO_REUSEPORT, so that the kernel spreads new connections evenly over the workers.

    Sanic's workers otherwise share one socket, and asyncio's loop accepts every queued connection at once:
    seen here, one worker took all 500 connections of a benchmark and served them alone at half the
    service's throughput. Sanic hands its workers the socket the main process made; the main process here
    binds it without listening, and each worker, before serving, puts a listening socket of its own under
    the same file descriptor (so Sanic's server serves that one). Where SO_REUSEPORT is missing, or Sanic
    runs without a main process (the tests' in-process server), the shared socket is kept.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        return

    @app.main_process_start
    async def bind_without_listening(app: Sanic) -> None:
        for server_info in app.state.server_info:
            settings = server_info.settings
            if settings.get("sock") is None and not settings.get("unix") and settings.get("host"):
                settings["sock"] = _reusable_socket(settings["host"], settings["port"], first=True)
                settings["sock"].set_inheritable(True)

    @app.before_server_start
    async def listen_on_a_socket_of_its_own(app: Sanic) -> None:
        for server_info in app.state.server_info:
            shared = server_info.settings.get("sock")
            if shared is None or shared.type != socket.SOCK_STREAM or shared.family == socket.AF_UNIX:
                continue
            if not shared.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
                continue
            own = _reusable_socket(*shared.getsockname()[:2])
            own.listen(backlog)
            os.dup2(own.fileno(), shared.fileno())
            own.close()


def _reusable_socket(host: str, port: int, *, first: bool = False) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT. The ``first`` of them (the main process's) makes
    sure no one else holds the address: SO_REUSEPORT would otherwise let a second service on the same port
    share its connections silently, where plain binding fails with "Address already in use"."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    if first:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]  # port 0: the one the kernel chose, kept by the socket below
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def stop_cleanly(app: Sanic) -> None:
    """On the first signal: stop listening at once, and stop the workers from the manager's own loop.

    Sanic's manager stops the workers inside its signal handler, which writes their state to the shared
    worker-state dict; a signal that lands while the manager's loop is itself talking to that dict garbles
    the exchange (seen here: a TypeError and exit code 1, or a manager that never exits). Here the handler
    only closes the listening sockets and wakes the loop, which then stops the workers and joins them. A
    second signal goes to Sanic's handler, which kills once the workers are being stopped.
    """

    @app.main_process_ready
    async def handle_stop_signals(app: Sanic) -> None:
        manager = app.manager
        asked = False

        def on_signal(number: int, frame: FrameType | None) -> None:
            nonlocal asked
            if asked:
                manager.shutdown_signal(number, frame)
                return
            asked = True
            # The main process's socket: where the workers share it (no SO_REUSEPORT), closing it here refuses
            # new connections at once rather than leaving them unanswered while the workers drain; each worker
            # closes its own.
            for server_info in app.state.server_info:
                listening = server_info.settings.get("sock")
                if listening is not None:
                    listening.close()
            logger.info("Received signal %s. Shutting down.", signal.Signals(number).name)
            manager.monitor_publisher.send(None)  # the monitor loop ends at its next poll

        join = manager.join

        def stop_then_join() -> None:
            if asked and not manager._shutting_down:
                manager.shutdown()
            join()

        manager.join = stop_then_join
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
