"""Every database query of the service, built so that no request runs a query per row.

A product is always loaded the same way: category and inventory joined in the same SELECT
(``select_related``), its reviews in one ``IN`` query for the whole page (``prefetch_related``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Subquery
from tortoise.query_utils import Prefetch
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from catalog.models import Category, Inventory, Product, Review

# Rows loaded per statement pair when an endpoint returns a whole set (category products, low stock).
CHUNK_SIZE = 1000
# serial columns are int4: an id outside this range cannot exist, and asyncpg would refuse to send it.
MAX_DB_ID = 2**31 - 1
CATEGORY_FK = "products_category_id_fkey"


class UnknownCategory(Exception):
    """The category_id of a write names no category."""


@dataclass(frozen=True, slots=True)
class ProductState:
    """What of a product decides which lists and counts it belongs to."""

    is_active: bool
    category_id: int | None


@dataclass(frozen=True, slots=True)
class ProductFilter:
    is_active: bool = True
    category_id: int | None = None

    def apply(self, queryset: QuerySet[Product]) -> QuerySet[Product]:
        queryset = queryset.filter(is_active=self.is_active)
        if self.category_id is not None:
            queryset = queryset.filter(category_id=self.category_id)
        return queryset


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def is_db_id(value: int) -> bool:
    return 1 <= value <= MAX_DB_ID


def _with_relations(queryset: QuerySet[Product]) -> QuerySet[Product]:
    return queryset.select_related("category", "inventory").prefetch_related(
        Prefetch("reviews", queryset=Review.all().order_by("id"))
    )


async def products_page(
    filters: ProductFilter, page_size: int, *, after_id: int | None = None, skip: int = 0
) -> tuple[list[Product], bool]:
    """One keyset page ordered by id, and whether another page follows.

    ``after_id`` continues from a cursor. ``skip`` serves ``page=N``: the page's first id is found by an
    index-only scan in a subquery, then the page itself is a keyset range scan like any other.
    """
    queryset = filters.apply(Product.all())
    if after_id is not None:
        queryset = queryset.filter(id__gt=after_id)
    elif skip:
        first_id = filters.apply(Product.all()).order_by("id").offset(skip).limit(1).values("id")
        queryset = queryset.filter(id__gte=Subquery(first_id))
    rows = await _with_relations(queryset.order_by("id").limit(page_size + 1))
    return rows[:page_size], len(rows) > page_size


async def count_products(filters: ProductFilter) -> int:
    """The exact number of products matching ``filters`` (an index-only scan)."""
    return await filters.apply(Product.all()).count()


async def estimate_products(filters: ProductFilter) -> int:
    """The planner's estimate of ``count_products`` (planning only: no rows are read)."""
    plan = await filters.apply(Product.all()).explain()
    return int(json.loads(plan[0][0])[0]["Plan"]["Plan Rows"])


async def products_table_rows() -> float:
    """PostgreSQL's statistics of the products table's size (-1 before its first ANALYZE)."""
    _, rows = await Tortoise.get_connection("default").execute_query(
        "SELECT reltuples FROM pg_class WHERE oid = 'products'::regclass"
    )
    return float(rows[0][0])


async def get_product(product_id: int) -> Product | None:
    if not is_db_id(product_id):
        return None
    return await _with_relations(Product.filter(id=product_id)).first()


async def products_by_ids(ids: Iterable[int]) -> list[Product]:
    """Products in the order of ``ids`` (repeats kept), absent ids left out: one IN query however many."""
    ids = list(ids)
    wanted = {product_id for product_id in ids if is_db_id(product_id)}
    if not wanted:
        return []
    found = {product.id: product for product in await _with_relations(Product.filter(id__in=wanted))}
    return [found[product_id] for product_id in ids if product_id in found]


async def _all_in_chunks(queryset: QuerySet[Product]) -> list[Product]:
    """Every product of ``queryset`` by id, CHUNK_SIZE at a time by keyset (two statements a chunk)."""
    products: list[Product] = []
    last_id = 0
    while True:
        rows = await _with_relations(queryset.filter(id__gt=last_id).order_by("id").limit(CHUNK_SIZE + 1))
        products.extend(rows[:CHUNK_SIZE])
        if len(rows) <= CHUNK_SIZE:
            return products
        last_id = rows[CHUNK_SIZE - 1].id


async def category_products(category_id: int) -> list[Product]:
    if not is_db_id(category_id):
        return []
    return await _all_in_chunks(Product.filter(category_id=category_id))


async def low_stock_products(threshold: int) -> list[Product]:
    low = Inventory.annotate(available=F("quantity") - F("reserved")).filter(available__lt=threshold)
    return await _all_in_chunks(Product.filter(id__in=Subquery(low.values("product_id"))))


async def categories() -> list[Category]:
    return await Category.all().order_by("id")


def _raise_unknown_category(error: IntegrityError) -> NoReturn:
    """The foreign key, not a prior SELECT, decides: no race with a category deleted meanwhile."""
    cause = error.__cause__
    if isinstance(cause, asyncpg.ForeignKeyViolationError) and cause.constraint_name == CATEGORY_FK:
        raise UnknownCategory from error
    raise error


async def create_product(fields: dict[str, Any]) -> Product | None:
    """Insert and read back the new product (None only if a concurrent delete won the race)."""
    now = utcnow()
    try:
        product = await Product.create(**fields, is_active=True, created_at=now, updated_at=now)
    except IntegrityError as error:
        _raise_unknown_category(error)
    return await get_product(product.id)


async def update_product(product_id: int, changes: dict[str, Any]) -> tuple[ProductState, Product] | None:
    """Apply ``changes`` (possibly none): the product's state before, and the product as it now is.

    None when the product does not exist.
    """
    if not is_db_id(product_id):
        return None
    async with in_transaction() as connection:
        before = await _lock_state(product_id, connection)
        if before is None:
            return None
        if changes:
            try:
                await Product.filter(id=product_id).using_db(connection).update(**changes, updated_at=utcnow())
            except IntegrityError as error:
                _raise_unknown_category(error)
    product = await get_product(product_id)
    return None if product is None else (before, product)


async def delete_product(product_id: int) -> ProductState | None:
    """Delete the product with its reviews and inventory in one transaction: its state, None when absent."""
    if not is_db_id(product_id):
        return None
    async with in_transaction() as connection:
        before = await _lock_state(product_id, connection)
        if before is None:
            return None
        await Review.filter(product_id=product_id).using_db(connection).delete()
        await Inventory.filter(product_id=product_id).using_db(connection).delete()
        await Product.filter(id=product_id).using_db(connection).delete()
    return before


async def _lock_state(product_id: int, connection: BaseDBAsyncClient) -> ProductState | None:
    """The product's state, its row locked until the transaction ends (writers to it go one at a time)."""
    rows = await (
        Product.filter(id=product_id).using_db(connection).select_for_update().values("is_active", "category_id")
    )
    return ProductState(rows[0]["is_active"], rows[0]["category_id"]) if rows else None
