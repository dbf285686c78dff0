"""Model instances to the contract's JSON shapes (plain dicts, encoded by orjson)."""

from __future__ import annotations

import math
from typing import Any

from catalog.models import Category, Inventory, Product, Review


def category_dict(category: Category | None) -> dict[str, Any] | None:
    if category is None:
        return None
    return {"id": category.id, "name": category.name, "description": category.description}


def review_dict(review: Review) -> dict[str, Any]:
    return {
        "id": review.id,
        "user_id": review.user_id,
        "rating": review.rating,
        "comment": review.comment,
        "created_at": review.created_at,
    }


def inventory_dict(inventory: Inventory | None) -> dict[str, Any] | None:
    if inventory is None:
        return None
    available = inventory.quantity - inventory.reserved
    return {
        "quantity": inventory.quantity,
        "reserved": inventory.reserved,
        "available": available,
        "in_stock": available > 0,
    }


def product_dict(product: Product) -> dict[str, Any]:
    """A product loaded by ``queries`` (category and inventory joined, reviews prefetched in id order)."""
    reviews = product.reviews.related_objects
    ratings = [review.rating for review in reviews]
    return {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "price": product.price,
        "category_id": product.category_id,
        "is_active": product.is_active,
        "created_at": product.created_at,
        "category": category_dict(product.category),
        "reviews": [review_dict(review) for review in reviews],
        "inventory": inventory_dict(product.inventory),
        "average_rating": sum(ratings) / len(ratings) if ratings else None,
        "review_count": len(ratings),
    }


def product_list(products: list[Product]) -> list[dict[str, Any]]:
    return [product_dict(product) for product in products]


def product_page(products: list[Product], *, total: int, page: int, page_size: int) -> dict[str, Any]:
    return {
        "items": product_list(products),
        "total": total,
        "page": page,
        "page_size": page_size,
        "total_pages": math.ceil(total / page_size),
    }
