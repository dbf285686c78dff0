from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi
from sanic_ext.extensions.openapi.types import Array

from catalog import queries, schemas
from catalog.cache.invalidation import CATEGORIES, category_generation
from catalog.cache.responses import Produced
from catalog.serialize import category_dict, product_list
from catalog.validation import path_int

bp = Blueprint("categories", url_prefix="/categories")


@bp.get("")
@openapi.definition(summary="All categories, by id", tag="categories", response=schemas.ok(Array(schemas.ref("Category"))))
async def list_categories(request: Request) -> HTTPResponse:
    async def produce() -> Produced:
        return Produced([category_dict(category) for category in await queries.categories()])

    return await request.app.ctx.caches.responses.serve(request, "/categories", [CATEGORIES], produce)


@bp.get("/<category_id:str>/products")
@openapi.definition(
    summary="Every product of a category (active and inactive), by id; [] for an unknown category",
    tag="categories",
    parameter=schemas.path_id("category_id"),
    response=[schemas.ok(Array(schemas.ref("Product"))), schemas.UNPROCESSABLE],
)
async def category_products(request: Request, category_id: str) -> HTTPResponse:
    identifier = path_int("category_id", category_id)

    async def produce() -> Produced:
        return Produced(product_list(await queries.category_products(identifier)))

    key = f"/categories/{identifier}/products"
    return await request.app.ctx.caches.responses.serve(request, key, [category_generation(identifier)], produce)
