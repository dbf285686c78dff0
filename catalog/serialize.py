"""Models loaded by ``catalog.queries`` to the contract's JSON shapes (plain dicts, encoded by orjson)."""

from __future__ import annotations

import math
from typing import Any

from catalog.domain import PARTS, ReviewStats, Row
from catalog.models import Category, Inventory, Product, Review

NO_REVIEWS = ReviewStats(0, None)


def category_dict(category: Row) -> dict[str, Any]:
    return {"id": category["id"], "name": category["name"], "description": category["description"]}


def _category(category: Category | None) -> dict[str, Any] | None:
    if category is None:
        return None
    return {"id": category.id, "name": category.name, "description": category.description}


def review_dict(review: Row) -> dict[str, Any]:
    return {
        "id": review["id"],
        "user_id": review["user_id"],
        "rating": review["rating"],
        "comment": review["comment"],
        "created_at": review["created_at"],
    }


def _review(review: Review) -> dict[str, Any]:
    return {
        "id": review.id,
        "user_id": review.user_id,
        "rating": review.rating,
        "comment": review.comment,
        "created_at": review.created_at,
    }


def _inventory(inventory: Inventory | None) -> dict[str, Any] | None:
    if inventory is None:
        return None
    available = inventory.quantity - inventory.reserved
    return {"quantity": inventory.quantity, "reserved": inventory.reserved, "available": available, "in_stock": available > 0}


def product_dict(product: Product, parts: frozenset[str] = PARTS, stats: ReviewStats | None = None) -> dict[str, Any]:
    """A product loaded by ``queries``; ``parts`` leaves out what the client did not ask to embed.

    Without its reviews loaded, a product's review count and average come from ``stats`` (SQL).
    """
    body: dict[str, Any] = {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "price": product.price,
        "category_id": product.category_id,
        "is_active": product.is_active,
        "created_at": product.created_at,
    }
    if "category" in parts:
        body["category"] = _category(product.category)
    if "reviews" in parts:
        reviews = product.reviews.related_objects
        ratings = [review.rating for review in reviews]
        body["reviews"] = [_review(review) for review in reviews]
        stats = ReviewStats(len(ratings), sum(ratings) / len(ratings) if ratings else None)
    if "inventory" in parts:
        body["inventory"] = _inventory(product.inventory)
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
