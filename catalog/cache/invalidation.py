"""What a product write makes stale: the generations cached entries depend on, and the counts it moves.

Every cached response names the generations it depends on: ``all`` (bumped by any product write),
``c<id>`` (a category's products), ``p<id>`` (one product), ``categories`` (never bumped through the API).
``m<count name>`` is bumped only when a write moves a product in or out of a counted list (is_active,
category), ``o:<column>`` when it changes a column that lists are sorted by. A page of a counted list
depends on its membership, on its order when sorted by a column writes change, and on the products it
shows (checked when the page is read: ``ResponseCache``): so a price change makes stale the product, the
pages that show it and the lists sorted by price, and no other page. Lists under a price range or a name
search depend on ``all``: any write may move products in or out of them.
"""

from __future__ import annotations

from collections import Counter

from catalog.cache.counts import count_name
from catalog.domain import Ordering, ProductFilter, ProductState

ALL_PRODUCTS = "all"
CATEGORIES = "categories"
# The sort columns a write can change (created_at cannot be).
WRITABLE_ORDER = ("price", "name")


def product_generation(product_id: int) -> str:
    return f"p{product_id}"


def category_generation(category_id: int) -> str:
    return f"c{category_id}"


def membership_generation(filters: ProductFilter) -> str:
    return f"m{count_name(filters)}"


def order_generation(column: str) -> str:
    return f"o:{column}"


def list_dependencies(filters: ProductFilter, ordering: Ordering) -> list[str]:
    """What a page of products depends on beyond the products it shows."""
    if filters.narrowed:
        return [ALL_PRODUCTS]
    dependencies = [membership_generation(filters)]
    if ordering.column in WRITABLE_ORDER:
        dependencies.append(order_generation(ordering.column))
    return dependencies


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
    if before is not None and after is not None:  # a creation or a deletion changes membership instead
        generations += [
            order_generation(column) for column in WRITABLE_ORDER if getattr(before, column) != getattr(after, column)
        ]
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
