"""Every database query of the service, built so that no request runs a query per row.

A product is always loaded the same way: category and inventory joined in the same SELECT
(``select_related``), its reviews in one ``IN`` query for the whole page (``prefetch_related``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import asyncpg
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


async def update_product(product_id: int, changes: dict[str, Any]) -> Product | None:
    """Apply ``changes`` (possibly none) and return the product as it now is; None when absent."""
    if changes and is_db_id(product_id):
        try:
            await Product.filter(id=product_id).update(**changes, updated_at=utcnow())
        except IntegrityError as error:
            _raise_unknown_category(error)
    return await get_product(product_id)


async def delete_product(product_id: int) -> bool:
    """Delete the product with its reviews and inventory in one transaction; False when absent."""
    if not is_db_id(product_id):
        return False
    async with in_transaction() as connection:
        await Review.filter(product_id=product_id).using_db(connection).delete()
        await Inventory.filter(product_id=product_id).using_db(connection).delete()
        deleted = await Product.filter(id=product_id).using_db(connection).delete()
    return deleted > 0
