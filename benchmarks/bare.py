"""The bare Sanic ceiling: what this machine serves with nothing of the service in the way.

    python -m sanic benchmarks.bare:create_app --factory --workers 2 --port 8001

``benchmarks.targets`` measures the service's cached GETs against it.

The same Sanic, event loop, worker count and listening sockets as the Procfile's service, but no middleware, no signals, no logging and no
pools: one route answering a fixed body the size and shape of a 20-product page (the body of
``/_ceiling/static``, which goes through the service's app). Issue 13 measures cached GETs against it.
"""

from __future__ import annotations

from sanic import HTTPResponse, Request, Sanic
from sanic.response import raw

from catalog.blueprints.ceiling import STATIC_BODY
from catalog.process import accept_promptly, deepen_listen_backlog, listen_per_worker
from config.settings import Settings


def create_app() -> Sanic:
    app = Sanic("bare")
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    backlog = Settings().listen_backlog
    accept_promptly(app)  # the service's event loop and listening sockets, for a fair ceiling
    deepen_listen_backlog(app, backlog)
    listen_per_worker(app, backlog)

    @app.get("/")
    async def page(request: Request) -> HTTPResponse:
        return raw(STATIC_BODY, content_type="application/json")

    @app.get("/health")  # what the benchmarks' starter waits for
    async def health(request: Request) -> HTTPResponse:
        return raw(b"{}", content_type="application/json")

    return app
