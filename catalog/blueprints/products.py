from __future__ import annotations

from urllib.parse import urlencode

import orjson
from sanic import Blueprint, HTTPResponse, Request
from sanic.exceptions import NotFound
from sanic.response import empty, json
from sanic_ext import openapi
from sanic_ext.extensions.openapi.definitions import Parameter, RequestBody, Response

from catalog import cursor, queries, schemas
from catalog.queries import ProductFilter
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
    if cursor_text:
        position = cursor.decode(secret, cursor_text, filters)
        page = position.page
        products, has_next = await queries.products_page(filters, page_size, after_id=position.after_id)
    else:
        products, has_next = await queries.products_page(filters, page_size, skip=(page - 1) * page_size)
    total = await queries.count_products(filters)

    headers: dict[str, str] = {}
    if has_next:
        next_cursor = cursor.encode(secret, cursor.Position(after_id=products[-1].id, page=page + 1), filters)
        headers["X-Next-Cursor"] = next_cursor
        headers["Link"] = f'<{_next_link(request, filters, page_size, next_cursor)}>; rel="next"'
    return json(product_page(products, total=total, page=page, page_size=page_size), headers=headers)


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
    return json(product_list(await queries.products_by_ids(ids)))


@bp.get("/<product_id:str>")
@openapi.definition(
    summary="One product, active or not",
    tag="products",
    parameter=PRODUCT_ID,
    response=[Response({"application/json": schemas.Product}, status="200"), NOT_FOUND, UNPROCESSABLE],
)
async def get_product(request: Request, product_id: str) -> HTTPResponse:
    product = await queries.get_product(path_int("product_id", product_id))
    if product is None:
        raise NotFound(PRODUCT_NOT_FOUND)
    return json(product_dict(product))


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
        product = await queries.update_product(identifier, changes)
    except queries.UnknownCategory:
        raise unknown_category_error(changes.get("category_id")) from None
    if product is None:
        raise NotFound(PRODUCT_NOT_FOUND)
    return json(product_dict(product))


@bp.delete("/<product_id:str>")
@openapi.definition(
    summary="Delete a product with its reviews and inventory",
    tag="products",
    parameter=PRODUCT_ID,
    response=[Response(None, status="204"), NOT_FOUND, UNPROCESSABLE],
)
async def delete_product(request: Request, product_id: str) -> HTTPResponse:
    if not await queries.delete_product(path_int("product_id", product_id)):
        raise NotFound(PRODUCT_NOT_FOUND)
    return empty(status=204)
