from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi
from sanic_ext.extensions.openapi.types import Array, Integer

from catalog import queries, schemas
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
async def low_stock(request: Request) -> HTTPResponse:
    query = QueryReader(request)
    threshold = query.int("threshold", default=10)
    query.raise_if_any()

    async def produce() -> Produced:
        return Produced(product_list(await queries.low_stock_products(threshold)))

    key = f"/inventory/low-stock?threshold={threshold}"
    return await request.app.ctx.caches.responses.serve(request, key, [ALL_PRODUCTS], produce)
