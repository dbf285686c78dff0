"""Models loaded by ``catalog.queries`` to the contract's JSON shapes (plain dicts, encoded by orjson).

The keys come from the shapes declared in ``catalog.contract``, in their order (ETags and cached bytes
depend on it); what a shape declares ``computed`` is worked out here and added in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from catalog.contract import CATEGORY, INVENTORY, PRODUCT, REVIEW, Shape
from catalog.domain import PARTS, ReviewStats, Row
from catalog.models import Inventory, Product

NO_REVIEWS = ReviewStats(0, None)


def _builder(shape: Shape, *, rows: bool = False) -> Callable[[Any], dict[str, Any]]:
    """``lambda source: {"id": source.id, ...}`` over the shape's stored fields (``source["id"]`` for
    ``rows``), compiled once.

    A dict display is what a hand-written serialiser would be; ``dict(zip(names, attrgetter(*names)(source)))``
    made the same dicts, but a page of products (some 160 dicts with their reviews) 1.8 times slower.
    """
    if not all(name.isidentifier() for name in shape.stored):
        raise ValueError(f"{shape.name}: not attribute names: {shape.stored}")
    read = "source[{!r}]" if rows else "source.{}"
    display = ", ".join(f"{name!r}: {read.format(name)}" for name in shape.stored)
    # The names are checked above, so the text is ours; a traceback through it names the shape.
    return eval(compile(f"lambda source: {{{display}}}", f"<{__name__}: {shape.name}>", "eval"))


category_dict: Callable[[Row], dict[str, Any]] = _builder(CATEGORY, rows=True)
review_dict: Callable[[Row], dict[str, Any]] = _builder(REVIEW, rows=True)
_category = _builder(CATEGORY)
_review = _builder(REVIEW)
_inventory = _builder(INVENTORY)
_product = _builder(PRODUCT)


def _inventory_dict(inventory: Inventory) -> dict[str, Any]:
    body = _inventory(inventory)
    available = inventory.quantity - inventory.reserved
    body["available"] = available
    body["in_stock"] = available > 0
    return body


def product_dict(product: Product, parts: frozenset[str] = PARTS, stats: ReviewStats | None = None) -> dict[str, Any]:
    """A product loaded by ``queries``; ``parts`` leaves out what the client did not ask to embed.

    Without its reviews loaded, a product's review count and average come from ``stats`` (SQL).
    """
    body = _product(product)
    if "category" in parts:
        category = product.category
        body["category"] = None if category is None else _category(category)
    if "reviews" in parts:
        reviews = product.reviews.related_objects
        ratings = [review.rating for review in reviews]
        body["reviews"] = [_review(review) for review in reviews]
        stats = ReviewStats(len(ratings), sum(ratings) / len(ratings) if ratings else None)
    if "inventory" in parts:
        inventory = product.inventory
        body["inventory"] = None if inventory is None else _inventory_dict(inventory)
    stats = stats or NO_REVIEWS
    body["average_rating"] = stats.average
    body["review_count"] = stats.count
    return body


def product_list(products: list[Product]) -> list[dict[str, Any]]:
    return [product_dict(product) for product in products]


def product_page(items: list[Any], *, total: int, page_number: int, page_size: int) -> dict[str, Any]:
    """A ProductList around ``items`` (product dicts, or their JSON as ``orjson.Fragment``)."""
    return {
        "items": items,
        "total": total,
        "page": page_number,
        "page_size": page_size,
        "total_pages": math.ceil(total / page_size),
    }


def review_page(reviews: list[Row], *, total: int, page_number: int, page_size: int) -> dict[str, Any]:
    return {
        "items": [review_dict(review) for review in reviews],
        "total": total,
        "page": page_number,
        "page_size": page_size,
        "total_pages": math.ceil(total / page_size),
    }
