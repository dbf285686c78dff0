"""Page anchors, so that ``page=N`` deep in a long list does not OFFSET over every row before it."""

from __future__ import annotations

import orjson

from catalog import queries
from catalog.cache.backends import Kept
from catalog.cache.counts import count_name
from catalog.cache.invalidation import membership_generation
from catalog.cache.resilient import ResilientCache
from catalog.domain import Keyset, ProductFilter
from config.settings import Settings


class PageAnchors:
    """Where ``page=N`` of a list in the default order starts, without an OFFSET over every row before it.

    The anchors of a counted list (is_active, category_id) are the ids of its rows ``every``, 2 *
    ``every``, ...; page=N then skips at most ``every`` rows past the nearest one. They are kept like a
    response, under the list's membership generation: only writes that move a product in or out of the
    list shift positions in id order (a price or name change does not). One request computes missing
    anchors while the others wait for them (a while: then, as while Redis is unavailable, plain OFFSET).
    """

    def __init__(self, cache: ResilientCache, settings: Settings) -> None:
        self.cache = cache
        self.every = settings.page_anchor_every

    async def start(self, filters: ProductFilter, skip: int) -> tuple[Keyset | None, int]:
        """The row to start after (None: the list's start) and how many rows to skip from there."""
        if skip < self.every or filters.narrowed:
            return None, skip
        anchors = await self._anchors(filters)
        block = min(skip // self.every, len(anchors or ()))
        if not block:
            return None, skip
        return Keyset(None, anchors[block - 1]), skip - block * self.every  # type: ignore[index]

    async def _anchors(self, filters: ProductFilter) -> list[int] | None:
        base, generation = f"anchors/{count_name(filters)}/{self.every}", membership_generation(filters)
        lookup = await self.cache.lookup(base, [generation], "a")
        if lookup.key is None:
            return None
        value = lookup.value if lookup.leader else await self.cache.wait_for_fill(lookup.key)
        if value is not None:
            return orjson.loads(value)
        if not lookup.leader:
            return None

        async def make() -> tuple[list[int], Kept]:
            anchors = await queries.page_anchors(filters, self.every)
            return anchors, Kept(orjson.dumps(anchors))

        return await self.cache.compute(lookup.key, make)
