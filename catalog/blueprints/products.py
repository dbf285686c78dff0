from __future__ import annotations

from urllib.parse import urlencode

import orjson
from sanic import Blueprint, HTTPResponse, Request
from sanic.exceptions import NotFound
from sanic.response import empty, json
from sanic_ext import openapi
from sanic_ext.extensions.openapi.definitions import Parameter, RequestBody, Response

from catalog import cursor, queries, schemas
from catalog.cache import ALL_PRODUCTS, Caches, Produced, category_generation, product_generation
from catalog.queries import ProductFilter, ProductState
from catalog.serialize import product_dict, product_list, product_page
from catalog.validation import (
    QueryReader,
    RequestValidationError,
    field_error,
    path_int,
    product_fields,
    unknown_category_error,
)

bp = Blueprint("products", url_prefix="/products")

PRODUCT_NOT_FOUND = "Product not found"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

UNPROCESSABLE = Response({"application/json": schemas.ValidationErrorBody}, status="422")
NOT_FOUND = Response({"application/json": schemas.ErrorBody}, status="404")
PRODUCT_ID = Parameter("product_id", int, "path", required=True)


def _next_link(request: Request, filters: ProductFilter, page_size: int, next_cursor: str) -> str:
    params: dict[str, str | int] = {"page_size": page_size, "is_active": str(filters.is_active).lower()}
    if filters.category_id is not None:
        params["category_id"] = filters.category_id
    params["cursor"] = next_cursor
    return f"{request.scheme}://{request.host}{request.path}?{urlencode(params)}"


@bp.get("")
@openapi.definition(
    summary="A page of products by id, keyset-paginated",
    tag="products",
    parameter=[
        Parameter("page_size", int, "query", description="1..100, default 20"),
        Parameter("category_id", int, "query"),
        Parameter("is_active", bool, "query", description="default true; true/false/1/0/yes/no/on/off"),
        Parameter("cursor", str, "query", description="X-Next-Cursor of the previous page; wins over page"),
        Parameter("page", int, "query", description=">= 1, default 1"),
    ],
    response=[Response({"application/json": schemas.ProductList}, status="200"), UNPROCESSABLE],
)
async def list_products(request: Request) -> HTTPResponse:
    query = QueryReader(request.args)
    page_size = query.int("page_size", default=DEFAULT_PAGE_SIZE, le=MAX_PAGE_SIZE)
    filters = ProductFilter(
        is_active=query.bool("is_active", default=True), category_id=query.optional_int("category_id")
    )
    page = query.int("page", default=1)
    cursor_text = query.raw("cursor")
    query.raise_if_any()

    secret: bytes = request.app.ctx.cursor_secret
    position = cursor.decode(secret, cursor_text, filters) if cursor_text else None
    if position is not None:
        page = position.page
    caches: Caches = request.app.ctx.caches

    async def produce() -> Produced:
        if position is not None:
            products, has_next = await queries.products_page(filters, page_size, after_id=position.after_id)
        else:
            products, has_next = await queries.products_page(filters, page_size, skip=(page - 1) * page_size)
        total, exact = await caches.totals.total(filters)
        headers: dict[str, str] = {}
        if has_next:
            next_position = cursor.Position(after_id=products[-1].id, page=page + 1)
            next_cursor = cursor.encode(secret, next_position, filters)
            headers["X-Next-Cursor"] = next_cursor
            headers["Link"] = f'<{_next_link(request, filters, page_size, next_cursor)}>; rel="next"'
        # A page whose total is only an estimate is not kept: the exact count is on its way.
        return Produced(product_page(products, total=total, page=page, page_size=page_size), headers, exact)

    start = f"after={position.after_id}" if position is not None else "from=start"
    key = f"/products?c={filters.category_id}&a={int(filters.is_active)}&n={page_size}&p={page}&{start}"
    return await caches.responses.serve(request, key, [_list_generation(filters)], produce)


def _list_generation(filters: ProductFilter) -> str:
    if filters.category_id is None:
        return ALL_PRODUCTS
    return category_generation(filters.category_id)


@bp.get("/batch")
@openapi.definition(
    summary="Products by id, in the order given; absent ids left out",
    tag="products",
    parameter=Parameter("ids", str, "query", required=True, description="1..100 comma-separated ids"),
    response=[Response({"application/json": list[schemas.Product]}, status="200"), UNPROCESSABLE],
)
async def batch(request: Request) -> HTTPResponse:
    query = QueryReader(request.args)
    ids = query.id_list("ids")
    query.raise_if_any()

    async def produce() -> Produced:
        return Produced(product_list(await queries.products_by_ids(ids)))

    key = "/products/batch?ids=" + ",".join(map(str, ids))
    dependencies = [product_generation(product_id) for product_id in dict.fromkeys(ids)]
    return await request.app.ctx.caches.responses.serve(request, key, dependencies, produce)


@bp.get("/<product_id:str>")
@openapi.definition(
    summary="One product, active or not",
    tag="products",
    parameter=PRODUCT_ID,
    response=[Response({"application/json": schemas.Product}, status="200"), NOT_FOUND, UNPROCESSABLE],
)
async def get_product(request: Request, product_id: str) -> HTTPResponse:
    identifier = path_int("product_id", product_id)

    async def produce() -> Produced:
        product = await queries.get_product(identifier)
        if product is None:  # kept too: creating this id bumps its generation
            return Produced({"detail": PRODUCT_NOT_FOUND}, status=404)
        return Produced(product_dict(product))

    key = f"/products/{identifier}"
    return await request.app.ctx.caches.responses.serve(request, key, [product_generation(identifier)], produce)


def _json_body(request: Request) -> object:
    try:
        return orjson.loads(request.body or b"")
    except orjson.JSONDecodeError as error:
        raise RequestValidationError([field_error(("body",), f"Invalid JSON: {error}", "json_invalid")]) from None


@bp.post("")
@openapi.definition(
    summary="Create a product",
    tag="products",
    body=RequestBody({"application/json": schemas.ProductCreate}, required=True),
    response=[Response({"application/json": schemas.Product}, status="201"), UNPROCESSABLE],
)
async def create_product(request: Request) -> HTTPResponse:
    fields = product_fields(_json_body(request), partial=False)
    try:
        product = await queries.create_product(fields)
    except queries.UnknownCategory:
        raise unknown_category_error(fields.get("category_id")) from None
    if product is None:
        raise NotFound(PRODUCT_NOT_FOUND)
    after = ProductState(product.is_active, product.category_id)
    await request.app.ctx.caches.product_written(product.id, None, after)
    return json(product_dict(product), status=201)


@bp.put("/<product_id:str>")
@openapi.definition(
    summary="Change any subset of name, description, price, category_id, is_active",
    tag="products",
    parameter=PRODUCT_ID,
    body=RequestBody({"application/json": schemas.ProductUpdate}, required=True),
    response=[Response({"application/json": schemas.Product}, status="200"), NOT_FOUND, UNPROCESSABLE],
)
async def update_product(request: Request, product_id: str) -> HTTPResponse:
    identifier = path_int("product_id", product_id)
    changes = product_fields(_json_body(request), partial=True)
    try:
        updated = await queries.update_product(identifier, changes)
    except queries.UnknownCategory:
        raise unknown_category_error(changes.get("category_id")) from None
    if updated is None:
        raise NotFound(PRODUCT_NOT_FOUND)
    before, product = updated
    if changes:
        after = ProductState(product.is_active, product.category_id)
        await request.app.ctx.caches.product_written(identifier, before, after)
    return json(product_dict(product))


@bp.delete("/<product_id:str>")
@openapi.definition(
    summary="Delete a product with its reviews and inventory",
    tag="products",
    parameter=PRODUCT_ID,
    response=[Response(None, status="204"), NOT_FOUND, UNPROCESSABLE],
)
async def delete_product(request: Request, product_id: str) -> HTTPResponse:
    identifier = path_int("product_id", product_id)
    before = await queries.delete_product(identifier)
    if before is None:
        raise NotFound(PRODUCT_NOT_FOUND)
    await request.app.ctx.caches.product_written(identifier, before, None)
    return empty(status=204)
