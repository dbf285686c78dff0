"""Deterministic bulk loader behind ``catalog seed --products N``.

Rows are generated in batches and streamed with COPY (``copy_records_to_table``) on one asyncpg
connection, inside one transaction: a failed run leaves the tables as they were. Ids are assigned
here, after the current maximum of each table, so the seed appends to existing data; the serial
sequences are moved past them afterwards so inserts through the API do not collide.
"""

from __future__ import annotations

import asyncio
import sys
import time
from bisect import bisect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from random import Random

import asyncpg

from config.database import connect_arguments

# A fixed "now": timestamps relative to the wall clock would make two runs differ.
TIME_END = datetime(2026, 11, 1)
TIME_SPAN_SECONDS = 3 * 365 * 24 * 3600
CATEGORY_COUNT = 200

TABLES = ("categories", "products", "reviews", "inventory")
CATEGORY_COLUMNS = ("id", "name", "description", "parent_id")
PRODUCT_COLUMNS = ("id", "name", "description", "price", "category_id", "is_active", "created_at", "updated_at")
REVIEW_COLUMNS = ("id", "product_id", "user_id", "rating", "comment", "created_at")
INVENTORY_COLUMNS = ("id", "product_id", "quantity", "reserved", "warehouse_location", "last_restocked")

DEPARTMENTS = (
    "Kitchen", "Garden", "Office", "Toys", "Sports", "Outdoor", "Audio", "Computers", "Phones", "Cameras",
    "Books", "Music", "Beauty", "Health", "Baby", "Pets", "Automotive", "Tools", "Lighting", "Furniture",
    "Bedding", "Bath", "Grocery", "Fashion", "Shoes", "Jewelry", "Crafts", "Travel",
)  # fmt: skip
ADJECTIVES = (
    "Stainless", "Wireless", "Compact", "Deluxe", "Ergonomic", "Portable", "Classic", "Premium", "Organic",
    "Vintage", "Smart", "Heavy-Duty", "Foldable", "Waterproof", "Handmade", "Rechargeable", "Bamboo",
    "Ceramic", "Cotton", "Leather", "Magnetic", "Adjustable", "Insulated", "Mini", "Professional",
)  # fmt: skip
NOUNS = (
    "Kettle", "Headphones", "Lamp", "Backpack", "Blender", "Chair", "Notebook", "Speaker", "Toaster", "Mug",
    "Jacket", "Sneakers", "Drill", "Tent", "Pillow", "Watch", "Keyboard", "Mouse", "Charger", "Bottle",
    "Frying Pan", "Desk", "Blanket", "Camera Bag", "Puzzle", "Yoga Mat", "Scissors", "Candle", "Towel", "Router",
)  # fmt: skip
MATERIALS = ("steel", "aluminium", "recycled plastic", "oak", "bamboo", "cotton", "glass", "silicone", "wool")
SELLING_POINTS = (
    "Built to last.",
    "Easy to clean.",
    "Backed by a two-year warranty.",
    "A customer favourite.",
    "Ships in recyclable packaging.",
    "Ideal as a gift.",
    "",
)
CATEGORY_BLURBS = (
    "Everyday essentials.",
    "Hand-picked items for enthusiasts.",
    "Best sellers and new arrivals.",
    "Quality gear at fair prices.",
)
# Indexed by rating, so the text agrees with the stars.
COMMENTS: dict[int, tuple[str, ...]] = {
    1: ("Broke after a week.", "Not as described.", "Would not buy again."),
    2: ("Disappointing quality.", "Arrived damaged.", "Works, barely."),
    3: ("It's okay.", "Average, does the job.", "Fine for the price."),
    4: ("Very good.", "Happy with it.", "Good value, fast delivery."),
    5: ("Excellent!", "Exactly what I needed.", "Love it, highly recommended.", "Perfect."),
}
# Cumulative weights for rating 1..5: reviews skew high, as on real shops.
RATING_CUM_WEIGHTS = tuple(accumulate((4, 6, 12, 30, 48)))
# Reviews per product, 0..20, geometric: most products have a few, a long tail has many (mean ~4.5).
REVIEW_COUNT_CUM_WEIGHTS = tuple(accumulate(0.83**k for k in range(21)))
WAREHOUSE_AISLES = "ABCDEF"


@dataclass(frozen=True, slots=True)
class SeedSummary:
    categories: int
    products: int
    reviews: int
    inventory: int


@dataclass(frozen=True, slots=True)
class _Batch:
    products: list[tuple]
    reviews: list[tuple]
    inventory: list[tuple]


class _ProgressBar:
    """One self-overwriting line on stderr; no third-party dependency."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        fraction = done / self.total if self.total else 1.0
        filled = round(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(f"\r[{bar}] {fraction:4.0%} {done}/{self.total} products  {elapsed:.1f} s")
        sys.stderr.flush()

    def __enter__(self) -> _ProgressBar:
        self.update(0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Ends the line on failure too, so a traceback does not start in the middle of the bar.
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Generator:
    """All rows come from one Random, drawn product by product, so the data does not depend on batch_size."""

    def __init__(self, seed: int, first_ids: dict[str, int]) -> None:
        self.rng = Random(seed)
        self.next_review_id = first_ids["reviews"]
        self.next_inventory_id = first_ids["inventory"]
        self.category_ids: list[int] = []
        self.category_cum_weights: list[float] = []

    def categories(self, first_id: int) -> list[tuple]:
        rng = self.rng
        rows = []
        for index in range(CATEGORY_COUNT):
            category_id = first_id + index
            # The first fifth are top-level; later ones often nest under an earlier one of this run.
            nested = index >= CATEGORY_COUNT // 5 and rng.random() < 0.7
            parent_id = rng.randrange(first_id, category_id) if nested else None
            description = None if rng.random() < 0.25 else rng.choice(CATEGORY_BLURBS)
            rows.append((category_id, f"{rng.choice(DEPARTMENTS)} {category_id}", description, parent_id))
        self.category_ids = [row[0] for row in rows]
        # Zipf-like popularity over a shuffled order: a few categories hold most products.
        ranks = list(range(1, CATEGORY_COUNT + 1))
        rng.shuffle(ranks)
        self.category_cum_weights = list(accumulate(1.0 / rank for rank in ranks))
        return rows

    def batch(self, first_product_id: int, count: int) -> _Batch:
        # Locals instead of attribute look-ups: this loop runs once per product.
        rand = self.rng.random
        lognormal = self.rng.lognormvariate
        category_ids = self.category_ids
        category_cum = self.category_cum_weights
        category_total = category_cum[-1]
        review_total = REVIEW_COUNT_CUM_WEIGHTS[-1]
        rating_total = RATING_CUM_WEIGHTS[-1]
        products: list[tuple] = []
        reviews: list[tuple] = []
        inventory: list[tuple] = []
        for product_id in range(first_product_id, first_product_id + count):
            adjective = ADJECTIVES[int(rand() * len(ADJECTIVES))]
            noun = NOUNS[int(rand() * len(NOUNS))]
            description = (
                None
                if rand() < 0.15
                else f"{adjective} {noun.lower()} made of {MATERIALS[int(rand() * len(MATERIALS))]}. "
                f"{SELLING_POINTS[int(rand() * len(SELLING_POINTS))]}".rstrip()
            )
            # Log-normal: median ~27, a long tail of expensive items, clipped to the catalogue's range.
            price = round(min(2000.0, max(0.5, lognormal(3.3, 1.2))), 2)
            category_id = None if rand() < 0.03 else category_ids[bisect(category_cum, rand() * category_total)]
            age = int(rand() * TIME_SPAN_SECONDS)
            created_at = TIME_END - timedelta(seconds=age)
            updated_at = created_at if rand() < 0.4 else created_at + timedelta(seconds=int(rand() * age))
            products.append(
                (product_id, f"{adjective} {noun} {product_id}", description, price, category_id,
                 rand() >= 0.1, created_at, updated_at)
            )  # fmt: skip

            for _ in range(bisect(REVIEW_COUNT_CUM_WEIGHTS, rand() * review_total)):
                rating = bisect(RATING_CUM_WEIGHTS, rand() * rating_total) + 1
                texts = COMMENTS[rating]
                comment = None if rand() < 0.3 else texts[int(rand() * len(texts))]
                reviewed_at = created_at + timedelta(seconds=1 + int(rand() * age))
                reviews.append(
                    (self.next_review_id, product_id, 1 + int(rand() * 250_000), rating, comment, reviewed_at)
                )
                self.next_review_id += 1

            if rand() < 0.95:
                # A small share is nearly sold out, so the low-stock listing has something to show.
                quantity = int(rand() * 13) if rand() < 0.05 else 10 + int(rand() * 491)
                reserved = min(quantity, 50, int(rand() * rand() * 40))
                location = (
                    None
                    if rand() < 0.1
                    else f"WH-{1 + int(rand() * 5)}-{WAREHOUSE_AISLES[int(rand() * 6)]}{1 + int(rand() * 40)}"
                )
                restocked = None if rand() < 0.15 else created_at + timedelta(seconds=int(rand() * age))
                inventory.append((self.next_inventory_id, product_id, quantity, reserved, location, restocked))
                self.next_inventory_id += 1
        return _Batch(products, reviews, inventory)


async def _batches(generator: _Generator, first_id: int, products: int, batch_size: int) -> AsyncIterator[_Batch]:
    """Batch i is handed out while batch i+1 is generated in a thread, so PostgreSQL ingests as Python generates.

    One batch is generated at a time, in order, which keeps the shared Random deterministic.
    """
    end = first_id + products
    pending: asyncio.Future[_Batch] | None = None
    for start in range(first_id, end, batch_size):
        ready = await pending if pending is not None else None
        pending = asyncio.ensure_future(asyncio.to_thread(generator.batch, start, min(batch_size, end - start)))
        if ready is not None:
            yield ready
    if pending is not None:
        yield await pending


async def _next_ids(connection: asyncpg.Connection) -> dict[str, int]:
    return {table: await connection.fetchval(f"SELECT coalesce(max(id), 0) + 1 FROM {table}") for table in TABLES}


async def _copy(connection: asyncpg.Connection, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    if rows:
        await connection.copy_records_to_table(table, records=rows, columns=list(columns))


async def seed(
    database_url: str,
    products: int,
    *,
    seed: int = 42,
    progress: bool = True,
    batch_size: int = 50_000,
) -> SeedSummary:
    """Append ``products`` products (with categories, reviews and inventory) and return the row counts."""
    if products < 0:
        raise ValueError("products must be >= 0")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    connection = await asyncpg.connect(**connect_arguments(database_url))
    try:
        with _ProgressBar(products, progress) as bar:
            async with connection.transaction():
                # Blocks writes (not reads) until commit, so max(id) stays ours and no API insert takes one of our ids.
                await connection.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
                first_ids = await _next_ids(connection)
                generator = _Generator(seed, first_ids)
                categories = generator.categories(first_ids["categories"])
                await _copy(connection, "categories", CATEGORY_COLUMNS, categories)

                done = reviews = inventory = 0
                async for batch in _batches(generator, first_ids["products"], products, batch_size):
                    await _copy(connection, "products", PRODUCT_COLUMNS, batch.products)
                    await _copy(connection, "reviews", REVIEW_COLUMNS, batch.reviews)
                    await _copy(connection, "inventory", INVENTORY_COLUMNS, batch.inventory)
                    done += len(batch.products)
                    reviews += len(batch.reviews)
                    inventory += len(batch.inventory)
                    bar.update(done)

                for table in TABLES:
                    await connection.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false)"
                        f" FROM {table}"
                    )
        # Fresh statistics for the planner and a set visibility map for index-only scans; not allowed in a transaction.
        await connection.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
    finally:
        await connection.close()
    return SeedSummary(categories=len(categories), products=done, reviews=reviews, inventory=inventory)
