from __future__ import annotations

from sanic import Blueprint, Request
from sanic_ext import openapi
from sanic_ext.extensions.openapi.types import Array, Integer

from catalog import queries, schemas
from catalog.blueprints.cached import Entry, cached
from catalog.cache.invalidation import ALL_PRODUCTS
from catalog.cache.responses import Produced
from catalog.serialize import product_list
from catalog.validation import QueryReader

bp = Blueprint("inventory", url_prefix="/inventory")


@bp.get("/low-stock")
@openapi.definition(
    summary="Products whose available stock (quantity - reserved) is below the threshold, by id",
    tag="inventory",
    parameter=schemas.query("threshold", Integer(minimum=1), "default 10"),
    response=[schemas.ok(Array(schemas.ref("Product"))), schemas.UNPROCESSABLE],
)
@cached(lambda request: low_stock_entry(request))
async def low_stock(request: Request, threshold: int) -> Produced:
    return Produced(product_list(await queries.low_stock_products(threshold)))


def low_stock_entry(request: Request) -> Entry[int]:
    query = QueryReader(request)
    threshold = query.int("threshold", default=10)
    query.raise_if_any()
    return Entry(threshold, f"/inventory/low-stock?threshold={threshold}", [ALL_PRODUCTS])
