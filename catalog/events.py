"""Product writes as Sanic signals: a write route announces them, the cache reacts in its own handlers
(``catalog.cache.react_to_product_writes``), and the route knows nothing of the cache's bookkeeping.

Dispatched inline: every handler has finished before the write's response is sent, which is what makes
a write visible to the very next request on every worker. Signals stay inside one worker; other workers
and hosts learn of the write through what the handlers change in Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any

from sanic import HTTPResponse, Request, Sanic

from catalog.domain import ProductState

logger = logging.getLogger("catalog.events")
Route = Callable[..., Awaitable[HTTPResponse]]

# Around a product write, committed or not: counts computed meanwhile must not be kept.
PRODUCT_WRITE_STARTED = "catalog.product.writing"
PRODUCT_WRITE_ENDED = "catalog.product.written"
# Once a write has committed: which product, and its lists before and after (None: absent).
PRODUCT_CHANGED = "catalog.product.changed"


@asynccontextmanager
async def product_write(app: Sanic) -> AsyncIterator[None]:
    await app.dispatch(PRODUCT_WRITE_STARTED, inline=True)
    try:
        yield
    finally:
        await app.dispatch(PRODUCT_WRITE_ENDED, inline=True)


async def product_changed(
    request: Request, product_id: int, before: ProductState | None, after: ProductState | None
) -> None:
    """Inside ``product_write``, after the commit, before the response."""
    request.ctx.write_committed = True  # from here on the write goes to its end (to_the_end)
    context = {"product_id": product_id, "before": before, "after": after}
    await request.app.dispatch(PRODUCT_CHANGED, context=context, inline=True)


def to_the_end(route: Route) -> Route:
    """A write route that goes on to its end when its request is cancelled, unless it can still stop cleanly.

    Sanic cancels a request's task when its client closes the connection, and at RESPONSE_TIMEOUT (answering
    503). A write cancelled between its commit and its ``PRODUCT_CHANGED`` handlers would leave every worker
    serving what it changed until the cache's TTL. So the route runs in a task of its own, which the request
    waits for; when the request is cancelled, that task goes on, except on a response timeout before the
    commit: the write is rolled back then, as the 503 tells its client.
    """

    @wraps(route)
    async def shielded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        write = asyncio.ensure_future(route(request, *args, **kwargs))  # the request's context: stats, floor
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            if request.conn_info.lost or getattr(request.ctx, "write_committed", False):
                write.add_done_callback(_log_failure)  # nobody waits for its outcome now
            else:
                write.cancel()
            raise

    return shielded


def _log_failure(write: asyncio.Future) -> None:
    if write.cancelled() or (error := write.exception()) is None:
        return
    if getattr(error, "status_code", 500) >= 500:
        logger.error("a write whose request had ended failed", exc_info=error)
