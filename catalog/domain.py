"""The catalog's plain data types and limits, shared by validation, cursors, queries, serialisation and
the cache, so that none of them imports another for its vocabulary.

What a list asks for (``ProductFilter``, ``Ordering``), where a page starts (``Keyset``), and what of a
product decides the lists it is in (``ProductState``). Filters and orderings build Tortoise querysets but run none: every statement is sent from ``catalog.queries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from catalog.models import Product

# serial columns are int4: an id outside this range cannot exist, and asyncpg would refuse to send it.
MAX_DB_ID = 2**31 - 1
# A page of products or of reviews.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Ids in one GET /products/batch.
MAX_BATCH_IDS = 100


def is_db_id(value: int) -> bool:
    return 1 <= value <= MAX_DB_ID


class UnknownCategory(Exception):
    """The category_id of a write names no category."""


@dataclass(frozen=True, slots=True)
class ProductState:
    """What of a product decides which lists and counts it belongs to, and where it stands in them."""

    is_active: bool
    category_id: int | None
    price: float
    name: str

    @classmethod
    def of(cls, product: Any) -> ProductState:
        return cls(product.is_active, product.category_id, product.price, product.name)


@dataclass(frozen=True, slots=True)
class ProductFilter:
    is_active: bool = True
    category_id: int | None = None
    min_price: float | None = None
    max_price: float | None = None
    # A tsquery over product names in the 'simple' configuration, e.g. "stainless:* & kett:*".
    search: str | None = None

    @property
    def narrowed(self) -> bool:
        """Whether it filters beyond the contract's is_active / category_id (price range, name search)."""
        return self.min_price is not None or self.max_price is not None or self.search is not None

    def apply(self, queryset: QuerySet[Product]) -> QuerySet[Product]:
        conditions: dict[str, Any] = {"is_active": self.is_active}
        if self.category_id is not None:
            conditions["category_id"] = self.category_id
        if self.min_price is not None:
            conditions["price__gte"] = self.min_price
        if self.max_price is not None:
            conditions["price__lte"] = self.max_price
        if self.search is not None:
            conditions["name__search"] = self.search
        return queryset.filter(**conditions)  # one filter(): each call copies the query


SORTS = ("id", "price", "-price", "created_at", "-created_at", "name")
PARTS = frozenset({"category", "inventory", "reviews"})

# A row read with .values(): a page's keys, a category, a review.
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Keyset:
    """A row's place in an order: its sort value (None when sorting by id) and its id, the tiebreaker."""

    value: Any
    id: int


@dataclass(frozen=True, slots=True)
class Ordering:
    sort: str = "id"

    @property
    def column(self) -> str:
        return self.sort.removeprefix("-")

    def key(self, row: Row) -> Keyset:
        return Keyset(None if self.column == "id" else row[self.column], row["id"])

    def _descending(self, backwards: bool) -> bool:
        return self.sort.startswith("-") != backwards

    def order_by(self, backwards: bool = False) -> list[str]:
        """(sort column, id), both in the same direction, so one index serves both ways."""
        sign = "-" if self._descending(backwards) else ""
        columns = ["id"] if self.column == "id" else [self.column, "id"]
        return [f"{sign}{column}" for column in columns]

    def beyond(self, queryset: QuerySet[Product], key: Keyset, backwards: bool = False) -> QuerySet[Product]:
        """The rows strictly past ``key`` in this order (or before it, ``backwards``).

        ``value >= v AND NOT (value = v AND id <= i)``: the range bound starts the index scan where the
        last page ended; the exclusion only drops the few rows that share that sort value.
        """
        descending = self._descending(backwards)
        if self.column == "id":
            return queryset.filter(id__lt=key.id) if descending else queryset.filter(id__gt=key.id)
        bound, passed = ("lte", "gte") if descending else ("gte", "lte")
        # ~Q(a, b) is NOT (a AND b); Tortoise's exclude(a=, b=) would negate each on its own.
        return queryset.filter(
            Q(**{f"{self.column}__{bound}": key.value}), ~Q(**{self.column: key.value, f"id__{passed}": key.id})
        )


REVIEW_ORDER = Ordering("-created_at")  # newest first


@dataclass(frozen=True, slots=True)
class ReviewStats:
    count: int
    average: float | None
