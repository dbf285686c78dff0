"""Load-test ceilings for ``benchmarks/run.py``: what this Sanic set-up serves when the service does nothing.

Registered by ``create_app`` only when ``BENCHMARK_ENDPOINTS=true`` (default false; never in production).
Both go through the same app, middleware (timing, ETag, gzip, CORS) and worker set-up as the real routes:

- ``GET /_ceiling/static``: a JSON body the size and shape of a 20-product page, built once, served from memory.
- ``GET /_ceiling/pk``: one primary-key SELECT of a random product through the same Tortoise pool.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import orjson
from sanic import Blueprint, HTTPResponse, Request
from sanic.response import raw
from tortoise import Tortoise

bp = Blueprint("ceiling", url_prefix="/_ceiling")

PAGE_SIZE = 20
_max_id: int | None = None


def _page_body() -> bytes:
    """A deterministic ProductList of 20 products with a few reviews each, like the seeded catalog's pages."""
    rng = random.Random(7)
    start = datetime(2025, 1, 1)
    items = []
    for product_id in range(1, PAGE_SIZE + 1):
        created = start + timedelta(seconds=rng.randrange(10**8))
        reviews = [
            {"id": product_id * 100 + k, "user_id": rng.randrange(1, 250_000), "rating": rng.randint(1, 5),
             "comment": rng.choice([None, "Excellent!", "Very good.", "Fine for the price.", "Perfect."]),
             "created_at": (created + timedelta(seconds=rng.randrange(10**7))).isoformat()}
            for k in range(rng.choice([0, 1, 2, 3, 4, 5, 6, 8]))
        ]
        quantity, reserved = rng.randrange(10, 500), rng.randrange(0, 40)
        items.append({
            "id": product_id, "name": f"Portable Kettle {product_id}",
            "description": "Portable kettle made of steel. Built to last.", "price": round(rng.uniform(1, 300), 2),
            "category_id": 42, "is_active": True, "created_at": created.isoformat(),
            "category": {"id": 42, "name": "Kitchen 42", "description": "Everyday essentials."},
            "reviews": reviews,
            "inventory": {"quantity": quantity, "reserved": reserved, "available": quantity - reserved,
                          "in_stock": quantity > reserved},
            "average_rating": (sum(r["rating"] for r in reviews) / len(reviews)) if reviews else None,
            "review_count": len(reviews),
        })
    return orjson.dumps({"items": items, "total": 90_000, "page": 1, "page_size": PAGE_SIZE, "total_pages": 4_500})


STATIC_BODY = _page_body()


@bp.get("/static")
async def static(request: Request) -> HTTPResponse:
    return raw(STATIC_BODY, content_type="application/json")


@bp.get("/pk")
async def primary_key(request: Request) -> HTTPResponse:
    global _max_id
    connection = Tortoise.get_connection("default")
    if _max_id is None:
        _, rows = await connection.execute_query("SELECT coalesce(max(id), 1) AS m FROM products")
        _max_id = int(rows[0]["m"])
    _, rows = await connection.execute_query(
        "SELECT id, name, price FROM products WHERE id = $1", [random.randint(1, _max_id)]
    )
    body = orjson.dumps(dict(rows[0]) if rows else None)
    return raw(body, content_type="application/json")
