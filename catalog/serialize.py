"""Rows read by ``catalog.queries`` to the contract's JSON shapes (plain dicts, encoded by orjson)."""

from __future__ import annotations

import math
from typing import Any

from catalog.domain import PARTS, Page, ReviewStats, Row

NO_REVIEWS = ReviewStats(0, None)


def category_dict(category: Row) -> dict[str, Any]:
    return {"id": category["id"], "name": category["name"], "description": category["description"]}


def review_dict(review: Row) -> dict[str, Any]:
    return {
        "id": review["id"],
        "user_id": review["user_id"],
        "rating": review["rating"],
        "comment": review["comment"],
        "created_at": review["created_at"],
    }


def _joined_category(product: Row) -> dict[str, Any] | None:
    if product["category__id"] is None:
        return None
    return {"id": product["category__id"], "name": product["category__name"], "description": product["category__description"]}


def _joined_inventory(product: Row) -> dict[str, Any] | None:
    if product["inventory__id"] is None:
        return None
    quantity, reserved = product["inventory__quantity"], product["inventory__reserved"]
    available = quantity - reserved
    return {"quantity": quantity, "reserved": reserved, "available": available, "in_stock": available > 0}


def product_dict(product: Row, parts: frozenset[str] = PARTS, stats: ReviewStats | None = None) -> dict[str, Any]:
    """A product read by ``queries``; ``parts`` leaves out what the client did not ask to embed.

    Without its reviews loaded, a product's review count and average come from ``stats`` (SQL).
    """
    body: dict[str, Any] = {
        "id": product["id"],
        "name": product["name"],
        "description": product["description"],
        "price": product["price"],
        "category_id": product["category_id"],
        "is_active": product["is_active"],
        "created_at": product["created_at"],
    }
    if "category" in parts:
        body["category"] = _joined_category(product)
    if "reviews" in parts:
        reviews = product["reviews"]
        ratings = [review["rating"] for review in reviews]
        body["reviews"] = [review_dict(review) for review in reviews]
        stats = ReviewStats(len(ratings), sum(ratings) / len(ratings) if ratings else None)
    if "inventory" in parts:
        body["inventory"] = _joined_inventory(product)
    stats = stats or NO_REVIEWS
    body["average_rating"] = stats.average
    body["review_count"] = stats.count
    return body


def product_list(products: list[Row]) -> list[dict[str, Any]]:
    return [product_dict(product) for product in products]


def product_page(page: Page, *, total: int, page_number: int, page_size: int, parts: frozenset[str] = PARTS) -> dict:
    stats = page.review_stats or {}
    return {
        "items": [product_dict(product, parts, stats.get(product["id"])) for product in page.products],
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
