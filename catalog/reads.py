"""Products as the contract's JSON, serialised once per change: the read path of every endpoint that shows
products by id (a list page's keys, a batch, one product).

Each product's JSON is a fragment kept by ``catalog.cache.fragments`` under the product's generation; the
missing ones are loaded as Tortoise models (``queries.load_products``: ``select_related`` and
``prefetch_related``, two statements however many), serialised and kept. A fragment carries the product's
placement (the columns every filter and sort reads) so that a page can tell a product that moved between
its keys query and its fragment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from catalog import queries
from catalog.cache import Caches
from catalog.domain import Row
from catalog.serialize import product_dict

# What decides a product's place in lists: the columns every filter and sort reads (a page's keys hold them).
PLACEMENT = tuple(column for column in queries.KEY_FIELDS if column != "id")


def _placement(values: Iterable[Any]) -> bytes:
    return orjson.dumps(list(values))


async def _build(ids: list[int], parts: frozenset[str]) -> dict[int, bytes]:
    """Fragments of the products of ``ids`` as they are now (two statements): placement, newline, JSON."""
    loaded = await queries.load_products(ids, parts)
    stats = loaded.review_stats or {}
    return {
        product_id: _placement(getattr(product, column) for column in PLACEMENT)
        + b"\n"
        + orjson.dumps(product_dict(product, parts, stats.get(product_id)))
        for product_id, product in loaded.products.items()
    }


@dataclass(frozen=True, slots=True)
class ProductsJSON:
    """The placement and JSON of products by id, and the generations they were read under
    (``catalog.cache.fragments.Fragments``)."""

    found: dict[int, tuple[bytes, bytes]]
    generations: dict[str, str] | None


async def product_fragments(caches: Caches, ids: list[int], parts: frozenset[str]) -> ProductsJSON:
    """The placement and JSON of each existing product of ``ids``: cached fragments, the missing ones loaded
    and serialised once, then kept for the next page, batch or product that shows them."""
    fragments = await caches.fragments.get(ids, parts, _build)
    found = {product_id: fragment.partition(b"\n")[::2] for product_id, fragment in fragments.found.items()}
    return ProductsJSON(found, fragments.generations)


@dataclass(frozen=True, slots=True)
class PageItems:
    items: list[orjson.Fragment]
    shown: dict[str, str] | None  # the generations of the products shown, as read before their JSON


async def page_items(caches: Caches, keys: list[Row], parts: frozenset[str]) -> PageItems:
    """The products of a page's keys, each where its key placed it.

    A product written between the keys query and its fragment (or changed behind the cache) is read again;
    one that has moved meanwhile is left out, as a page read a moment later would not hold it there.
    """
    products = await product_fragments(caches, [key["id"] for key in keys], parts)
    found = products.found
    placements = {key["id"]: _placement(key[column] for column in PLACEMENT) for key in keys}
    moved = [i for i, placement in placements.items() if i in found and found[i][0] != placement]
    if moved:
        found.update((i, fragment.partition(b"\n")[::2]) for i, fragment in (await _build(moved, parts)).items())
    items = [
        orjson.Fragment(found[i][1]) for i, placement in placements.items() if i in found and found[i][0] == placement
    ]
    return PageItems(items, products.generations)
