"""Product writes as Sanic signals: a write route announces them, the cache reacts in its own handlers
(``catalog.cache.react_to_product_writes``), and the route knows nothing of the cache's bookkeeping.

Dispatched inline: every handler has finished before the write's response is sent, which is what makes
a write visible to the very next request on every worker. Signals stay inside one worker; other workers
and hosts learn of the write through what the handlers change in Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sanic import Sanic

from catalog.domain import ProductState

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


async def product_changed(app: Sanic, product_id: int, before: ProductState | None, after: ProductState | None) -> None:
    """Inside ``product_write``, after the commit, before the response."""
    context = {"product_id": product_id, "before": before, "after": after}
    await app.dispatch(PRODUCT_CHANGED, context=context, inline=True)
