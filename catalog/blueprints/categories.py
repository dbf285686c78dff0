from __future__ import annotations

from sanic import Blueprint, Request
from sanic_ext import openapi
from sanic_ext.extensions.openapi.types import Array

from catalog import queries, schemas
from catalog.blueprints.cached import Entry, cached
from catalog.cache.invalidation import CATEGORIES, category_generation
from catalog.cache.responses import Produced
from catalog.serialize import category_dict, product_list
from catalog.validation import path_int

bp = Blueprint("categories", url_prefix="/categories")


@bp.get("")
@openapi.definition(summary="All categories, by id", tag="categories", response=schemas.ok(Array(schemas.ref("Category"))))
@cached(lambda request: Entry(None, "/categories", [CATEGORIES]))
async def list_categories(request: Request, _: None) -> Produced:
    return Produced([category_dict(category) for category in await queries.categories()])


@bp.get("/<category_id:str>/products")
@openapi.definition(
    summary="Every product of a category (active and inactive), by id; [] for an unknown category",
    tag="categories",
    parameter=schemas.path_id("category_id"),
    response=[schemas.ok(Array(schemas.ref("Product"))), schemas.UNPROCESSABLE],
)
@cached(lambda request, category_id: category_entry(path_int("category_id", category_id)))
async def category_products(request: Request, category_id: int) -> Produced:
    return Produced(product_list(await queries.category_products(category_id)))


def category_entry(category_id: int) -> Entry[int]:
    return Entry(category_id, f"/categories/{category_id}/products", [category_generation(category_id)])
