"""Totals of product lists, kept apart from responses because a write adjusts them rather than drops them.

A write that moves a product in or out of a filter adds or subtracts one, so price or name changes keep
the counts, and a count is never recomputed after a write. A counted value is kept only if no product
write began or was in flight while it was counted (a version number and a count of writes in flight),
so a count can never include a write that is then added to it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from catalog import queries
from catalog.cache.resilient import ResilientCache
from catalog.domain import ProductFilter
from catalog.stats import detach_request_stats
from config.settings import Settings

logger = logging.getLogger("catalog.cache")


def count_name(filters: ProductFilter) -> str:
    return f"{int(filters.is_active)}:{filters.category_id if filters.category_id is not None else '*'}"


class ProductTotals:
    """``total`` of a product list: from the count cache, else counted, else estimated (large lists).

    A list of up to ``exact_count_max_rows`` products is counted at once: one statement, a count that
    stops just past that many rows, says whether the list is that small and, if so, how many it holds;
    if not, the same statement gives the planner's estimate, which the larger list answers (marked as one)
    while it is counted in the background for the next request. Only exact counts are kept, so a write's +1/-1 never adjusts an estimate. The rule
    does not depend on the cache, so Redis down, back or flushed does not change a small list's total.
    A request never waits on a count that is cached: one close to expiry is refreshed in the background.
    """

    def __init__(self, cache: ResilientCache, settings: Settings) -> None:
        self.cache = cache
        self.ttl = settings.entry_ttl
        self.exact_max = settings.exact_count_max_rows
        self.tasks: dict[str, asyncio.Task] = {}

    async def total(self, filters: ProductFilter) -> tuple[int, bool]:
        """The total, and whether it is exact.

        Counts under a price range or a name search are not kept: writes could move products in or out
        of them without the count being told. Their pages are cached whole, total included.
        """
        if filters.narrowed:
            return await queries.count_products(filters), True
        name = count_name(filters)
        read = await self.cache.read_count(name)
        if read is not None and read.value is not None:
            if read.ttl_s < self.ttl / 3:
                self._in_background(name, self._recount(filters, name))
            return read.value, True
        capped = await queries.count_products_up_to(filters, self.exact_max + 1)
        if capped.estimate is None:
            if read is not None:
                await self.cache.write_count(name, capped.counted, read.version)
            return capped.counted, True
        if read is not None:  # else there is nowhere to keep the count
            self._in_background(name, self._recount(filters, name))
        # The planner may guess fewer than were just counted.
        return max(capped.estimate, capped.counted), False

    async def _recount(self, filters: ProductFilter, name: str) -> None:
        detach_request_stats()  # a task of its own: its statements are not the request's that started it
        read = await self.cache.read_count(name)
        if read is None:
            return
        await self.cache.write_count(name, await queries.count_products(filters), read.version)

    def _in_background(self, name: str, work: Awaitable[None]) -> None:
        """One task per name at a time; failures are logged, never raised into a request."""
        running = self.tasks.get(name)
        if running is not None and not running.done():
            work.close()  # type: ignore[attr-defined]
            return
        task = asyncio.create_task(work)  # type: ignore[arg-type]
        task.add_done_callback(_log_failure)
        self.tasks[name] = task

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background count failed: %r", task.exception())
