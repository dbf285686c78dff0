from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from sanic import Blueprint, HTTPResponse, Request
from sanic.exceptions import NotFound, SanicException
from sanic.response import empty, json
from sanic_ext import openapi
from sanic_ext.extensions.openapi.definitions import Response
from sanic_ext.extensions.openapi.types import Array, Float, Integer, String

from catalog import cursor, events, queries, reads, schemas
from catalog.blueprints.cached import Entry, cached
from catalog.cache import Caches
from catalog.cache.invalidation import list_dependencies, product_generation
from catalog.cache.responses import Produced
from catalog.contract import (
    MAX_SEARCH_LENGTH,
    MIN_PRICE,
    PRODUCT_CREATE,
    PRODUCT_UPDATE,
)
from catalog.domain import (
    DEFAULT_PAGE_SIZE,
    MAX_BATCH_IDS,
    MAX_PAGE_SIZE,
    PARTS,
    REVIEW_ORDER,
    SORTS,
    Keyset,
    Ordering,
    ProductFilter,
    ProductState,
    UnknownCategory,
)
from catalog.serialize import product_dict, product_page, review_page
from catalog.validation import (
    QueryReader,
    RequestValidationError,
    body_fields,
    field_error,
    path_int,
    unknown_category_error,
)

bp = Blueprint("products", url_prefix="/products")


class UnsupportedMediaType(SanicException):
    status_code = 415
    quiet = True


UNSUPPORTED = schemas.error(415, "The body is not application/json")

PRODUCT_NOT_FOUND = "Product not found"

PRODUCT_ID = schemas.path_id("product_id")
# On a list whose total is the planner's estimate of a large count (catalog.cache.counts.ProductTotals), not the count.
TOTAL_ESTIMATED = "X-Total-Count-Estimated"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """GET /products's parameters, read and validated."""

    filters: ProductFilter
    ordering: Ordering
    page_size: int
    parts: frozenset[str]
    page: int
    position: cursor.Position | None

    @classmethod
    def read(cls, request: Request) -> ListQuery:
        query = QueryReader(request)
        page_size = query.int("page_size", default=DEFAULT_PAGE_SIZE, le=MAX_PAGE_SIZE)
        filters = ProductFilter(
            is_active=query.bool("is_active", default=True),
            category_id=query.optional_int("category_id"),
            min_price=query.optional_price("min_price"),
            max_price=query.optional_price("max_price"),
            search=query.search("q"),
        )
        if filters.min_price is not None and filters.max_price is not None and filters.min_price > filters.max_price:
            query.add(("query", "min_price"), "min_price should not exceed max_price", "value_error")
        ordering = Ordering(query.choice("sort", SORTS, default="id"))
        parts = query.parts("include", PARTS)
        page = query.int("page", default=1)
        cursor_text = query.raw("cursor")
        query.raise_if_any()
        position = None
        if cursor_text:
            position = cursor.decode_products(request.app.ctx.cursor_secret, cursor_text, ordering, filters)
            page = position.page
        return cls(filters, ordering, page_size, parts, page, position)

    def cache_key(self) -> str:
        """The same for every spelling of the same query (parameter order, booleans, defaults)."""
        f, position = self.filters, self.position
        at = "start" if position is None else f"{'before' if position.backwards else 'after'}:{position.key}"
        return (
            f"/products?a={int(f.is_active)}&c={f.category_id}&min={f.min_price}&max={f.max_price}&q={f.search}"
            f"&sort={self.ordering.sort}&n={self.page_size}&inc={','.join(sorted(self.parts))}&p={self.page}&{at}"
        )

    def entry(self) -> Entry[ListQuery]:
        return Entry(self, self.cache_key(), list_dependencies(self.filters, self.ordering))

    def link(self, request: Request, cursor_text: str) -> str:
        params: dict[str, str | int | float] = {"page_size": self.page_size, "is_active": str(self.filters.is_active).lower()}
        for name in ("category_id", "min_price", "max_price"):
            if getattr(self.filters, name) is not None:
                params[name] = getattr(self.filters, name)
        given = request.get_args(keep_blank_values=True)
        for name in ("q", "sort", "include"):
            if name in given:
                params[name] = given.get(name)
        params["cursor"] = cursor_text
        return f"{request.scheme}://{request.host}{request.path}?{urlencode(params)}"


@bp.get("")
@openapi.definition(
    summary="A page of products, keyset-paginated in the chosen order",
    tag="products",
    parameter=[
        schemas.PAGE_SIZE,
        schemas.query("category_id", Integer(minimum=1)),
        schemas.query("is_active", String(enum=["true", "false", "1", "0", "yes", "no", "on", "off"]), "default true"),
        schemas.query("cursor", String(), "X-Next-Cursor or X-Prev-Cursor of a page; wins over page"),
        schemas.query("page", Integer(minimum=1), "default 1"),
        schemas.query("sort", String(enum=list(SORTS)), "default id"),
        schemas.query("min_price", Float(minimum=MIN_PRICE), "inclusive"),
        schemas.query("max_price", Float(minimum=MIN_PRICE), "inclusive; not below min_price"),
        schemas.query("q", String(maxLength=MAX_SEARCH_LENGTH), "name search: every word matches the start of a word"),
        schemas.query("include", String(), "parts to embed, comma-separated: category, inventory, reviews (default all)"),
    ],
    response=[schemas.ok(schemas.ref("ProductList")), schemas.UNPROCESSABLE],
)
@cached(lambda request: ListQuery.read(request).entry())
async def list_products(request: Request, listing: ListQuery) -> Produced:
    caches: Caches = request.app.ctx.caches
    after, before, skip = await _page_start(caches, listing)
    key_page = await queries.page_keys(
        listing.filters, listing.ordering, listing.page_size, after=after, before=before, skip=skip
    )
    page = await reads.page_items(caches, key_page.keys, listing.parts)
    total, exact = await caches.totals.total(listing.filters)
    headers = _paging_headers(request, listing, key_page)
    if not exact:
        headers[TOTAL_ESTIMATED] = "true"
    body = product_page(page.items, total=total, page_number=listing.page, page_size=listing.page_size)
    # A page whose total is only an estimate is not kept: the exact count is on its way.
    return Produced(body, headers, exact, checks=page.shown)


async def _page_start(caches: Caches, listing: ListQuery) -> tuple[Keyset | None, Keyset | None, int]:
    """Where the page starts: after or before a cursor's row, or ``page=N`` rows in (from a cached anchor
    in the default order)."""
    position = listing.position
    if position is not None:
        return (None, position.key, 0) if position.backwards else (position.key, None, 0)
    skip = (listing.page - 1) * listing.page_size
    if listing.ordering.column == "id":
        after, skip = await caches.anchors.start(listing.filters, skip)
        return after, None, skip
    return None, None, skip


def _paging_headers(request: Request, listing: ListQuery, key_page: queries.KeyPage) -> dict[str, str]:
    """X-Next-Cursor / X-Prev-Cursor and their Link URLs."""
    secret: bytes = request.app.ctx.cursor_secret
    keys, page = key_page.keys, listing.page
    backwards = listing.position is not None and listing.position.backwards
    has_next = bool(keys) if backwards else key_page.has_more
    has_prev = bool(keys) and (key_page.has_more if backwards else page > 1)
    headers: dict[str, str] = {}
    links = []
    if has_next:
        following = cursor.Position(listing.ordering.key(keys[-1]), page + 1)
        next_cursor = cursor.encode_products(secret, following, listing.ordering, listing.filters)
        headers["X-Next-Cursor"] = next_cursor
        links.append(f'<{listing.link(request, next_cursor)}>; rel="next"')
    if has_prev:
        previous = cursor.Position(listing.ordering.key(keys[0]), page - 1, backwards=True)
        prev_cursor = cursor.encode_products(secret, previous, listing.ordering, listing.filters)
        headers["X-Prev-Cursor"] = prev_cursor
        links.append(f'<{listing.link(request, prev_cursor)}>; rel="prev"')
    # The contract has no Link on the last page (clients test for it), so rel="prev" rides along only
    # with rel="next"; X-Prev-Cursor is on every page but the first.
    if has_next:
        headers["Link"] = ", ".join(links)
    return headers


@bp.get("/batch")
@openapi.definition(
    summary="Products by id, in the order given; absent ids left out",
    tag="products",
    parameter=schemas.query(
        "ids",
        String(pattern=rf"^\s*\d+\s*(,\s*\d+\s*){{0,{MAX_BATCH_IDS - 1}}}$"),
        f"1..{MAX_BATCH_IDS} comma-separated ids",
        True,
    ),
    response=[schemas.ok(Array(schemas.ref("Product"))), schemas.UNPROCESSABLE],
)
@cached(lambda request: batch_entry(request))
async def batch(request: Request, ids: list[int]) -> Produced:
    found = (await reads.product_fragments(request.app.ctx.caches, ids, PARTS)).found
    return Produced([orjson.Fragment(found[product_id][1]) for product_id in ids if product_id in found])


def batch_entry(request: Request) -> Entry[list[int]]:
    query = QueryReader(request)
    ids = query.id_list("ids")
    query.raise_if_any()
    key = "/products/batch?ids=" + ",".join(map(str, ids))
    return Entry(ids, key, [product_generation(product_id) for product_id in dict.fromkeys(ids)])


@bp.get("/<product_id:str>")
@openapi.definition(
    summary="One product, active or not",
    tag="products",
    parameter=PRODUCT_ID,
    response=[schemas.ok(schemas.ref("Product")), schemas.NOT_FOUND, schemas.UNPROCESSABLE],
)
@cached(lambda request, product_id: product_entry(path_int("product_id", product_id)))
async def get_product(request: Request, product_id: int) -> Produced:
    fragment = (await reads.product_fragments(request.app.ctx.caches, [product_id], PARTS)).found.get(product_id)
    if fragment is None:  # kept too: creating this id bumps its generation
        return Produced({"detail": PRODUCT_NOT_FOUND}, status=404)
    return Produced(orjson.Fragment(fragment[1]))


def product_entry(product_id: int) -> Entry[int]:
    return Entry(product_id, f"/products/{product_id}", [product_generation(product_id)])


@bp.get("/<product_id:str>/reviews")
@openapi.definition(
    summary="One product's reviews, newest first, keyset-paginated",
    tag="products",
    parameter=[PRODUCT_ID, schemas.PAGE_SIZE, schemas.query("cursor", String(), "X-Next-Cursor of the previous page")],
    response=[schemas.ok(schemas.ref("ReviewList")), schemas.NOT_FOUND, schemas.UNPROCESSABLE],
)
@cached(lambda request, product_id: ReviewsQuery.read(request, product_id).entry())
async def product_reviews(request: Request, listing: ReviewsQuery) -> Produced:
    identifier, page_size, position = listing.product_id, listing.page_size, listing.position
    if not await queries.product_exists(identifier):
        return Produced({"detail": PRODUCT_NOT_FOUND}, status=404)
    reviews, has_next = await queries.reviews_page(identifier, page_size, after=position.key if position else None)
    total = await queries.count_reviews(identifier)
    headers: dict[str, str] = {}
    if has_next:
        next_key = REVIEW_ORDER.key(reviews[-1])
        secret: bytes = request.app.ctx.cursor_secret
        next_cursor = cursor.encode_reviews(secret, identifier, cursor.Position(next_key, listing.page + 1))
        headers["X-Next-Cursor"] = next_cursor
        url = f"{request.scheme}://{request.host}{request.path}?{urlencode({'page_size': page_size, 'cursor': next_cursor})}"
        headers["Link"] = f'<{url}>; rel="next"'
    return Produced(review_page(reviews, total=total, page_number=listing.page, page_size=page_size), headers)


@dataclass(frozen=True, slots=True)
class ReviewsQuery:
    """GET /products/{id}/reviews's parameters, read and validated."""

    product_id: int
    page_size: int
    position: cursor.Position | None

    @property
    def page(self) -> int:
        return self.position.page if self.position is not None else 1

    @classmethod
    def read(cls, request: Request, product_id: str) -> ReviewsQuery:
        identifier = path_int("product_id", product_id)
        query = QueryReader(request)
        page_size = query.int("page_size", default=DEFAULT_PAGE_SIZE, le=MAX_PAGE_SIZE)
        cursor_text = query.raw("cursor")
        query.raise_if_any()
        secret: bytes = request.app.ctx.cursor_secret
        position = cursor.decode_reviews(secret, cursor_text, identifier) if cursor_text else None
        return cls(identifier, page_size, position)

    def entry(self) -> Entry[ReviewsQuery]:
        at = "start" if self.position is None else f"{self.position.key}"
        key = f"/products/{self.product_id}/reviews?n={self.page_size}&p={self.page}&{at}"
        return Entry(self, key, [product_generation(self.product_id)])


def _json_body(request: Request) -> object:
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("Request body must be application/json")
    try:
        return orjson.loads(request.body or b"")
    except orjson.JSONDecodeError as error:
        raise RequestValidationError([field_error(("body",), f"Invalid JSON: {error}", "json_invalid")]) from None


@bp.post("")
@openapi.definition(
    summary="Create a product",
    tag="products",
    body=schemas.body(PRODUCT_CREATE),
    response=[schemas.ok(schemas.ref("Product"), status=201), schemas.UNPROCESSABLE, UNSUPPORTED],
)
@events.to_the_end
async def create_product(request: Request) -> HTTPResponse:
    fields = body_fields(PRODUCT_CREATE, _json_body(request))
    async with events.product_write(request.app):
        try:
            product = await queries.create_product(fields)
        except UnknownCategory:
            raise unknown_category_error(fields.get("category_id")) from None
        if product is None:
            raise NotFound(PRODUCT_NOT_FOUND)
        await events.product_changed(request, product.id, None, ProductState.of(product))
    return json(product_dict(product), status=201)


@bp.put("/<product_id:str>")
@openapi.definition(
    summary="Change any subset of name, description, price, category_id, is_active",
    tag="products",
    parameter=PRODUCT_ID,
    body=schemas.body(PRODUCT_UPDATE),
    response=[schemas.ok(schemas.ref("Product")), schemas.NOT_FOUND, schemas.UNPROCESSABLE, UNSUPPORTED],
)
@events.to_the_end
async def update_product(request: Request, product_id: str) -> HTTPResponse:
    identifier = path_int("product_id", product_id)
    changes = body_fields(PRODUCT_UPDATE, _json_body(request))
    async with events.product_write(request.app):
        try:
            updated = await queries.update_product(identifier, changes)
        except UnknownCategory:
            raise unknown_category_error(changes.get("category_id")) from None
        if updated is None:
            raise NotFound(PRODUCT_NOT_FOUND)
        before, product = updated
        if changes:
            await events.product_changed(request, identifier, before, ProductState.of(product))
    return json(product_dict(product))


@bp.delete("/<product_id:str>")
@openapi.definition(
    summary="Delete a product with its reviews and inventory",
    tag="products",
    parameter=PRODUCT_ID,
    response=[Response({}, status="204", description="Deleted, with its reviews and inventory"), schemas.NOT_FOUND, schemas.UNPROCESSABLE],
)
@events.to_the_end
async def delete_product(request: Request, product_id: str) -> HTTPResponse:
    identifier = path_int("product_id", product_id)
    async with events.product_write(request.app):
        before = await queries.delete_product(identifier)
        if before is None:
            raise NotFound(PRODUCT_NOT_FOUND)
        await events.product_changed(request, identifier, before, None)
    return empty(status=204)
