"""What a product write makes stale: the generations cached entries depend on, and the counts it moves.

Every cached response names the generations it depends on: ``all`` (bumped by any product write),
``c<id>`` (a category's products), ``p<id>`` (one product), ``categories`` (never bumped through the API).
``m<count name>`` is bumped only when a write moves a product in or out of a counted list: the page
anchors of that list (``PageAnchors``) depend on it.
"""

from __future__ import annotations

from collections import Counter

from catalog.cache.counts import count_name
from catalog.domain import ProductFilter, ProductState

ALL_PRODUCTS = "all"
CATEGORIES = "categories"


def product_generation(product_id: int) -> str:
    return f"p{product_id}"


def category_generation(category_id: int) -> str:
    return f"c{category_id}"


def membership_generation(filters: ProductFilter) -> str:
    return f"m{count_name(filters)}"


def product_write_effects(
    product_id: int, before: ProductState | None, after: ProductState | None
) -> tuple[list[str], dict[str, int]]:
    """The generations a product write makes stale, and how it moves the counts.

    ``before`` is None for a creation, ``after`` None for a deletion.
    """
    generations = [ALL_PRODUCTS, product_generation(product_id)]
    for state in (before, after):
        if state is not None and state.category_id is not None:
            generations.append(category_generation(state.category_id))
    deltas: Counter[ProductFilter] = Counter()
    if before != after:
        for state, sign in ((before, -1), (after, +1)):
            if state is None:
                continue
            deltas[ProductFilter(state.is_active)] += sign
            if state.category_id is not None:
                deltas[ProductFilter(state.is_active, state.category_id)] += sign
    moved = [filters for filters, delta in deltas.items() if delta]
    generations += [membership_generation(filters) for filters in moved]
    return list(dict.fromkeys(generations)), {count_name(filters): deltas[filters] for filters in moved}
