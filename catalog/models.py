"""Tortoise models mirroring the contract's schema (table and column names and types)."""

from __future__ import annotations

from tortoise import fields
from tortoise.fields.data import DatetimeField
from tortoise.indexes import Index
from tortoise.models import Model


class UTCDateTimeField(DatetimeField):
    """`timestamp without time zone` holding UTC, as the schema has it (Tortoise would use TIMESTAMPTZ)."""

    # asyncpg already returns `timestamp` columns as naive datetimes, what to_python_value would make of
    # them with use_tz=False: reads skip that call per row and column.
    skip_to_python_if_native = True

    class _db_postgres:
        SQL_TYPE = "TIMESTAMP"


class Category(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    description = fields.TextField(null=True)
    parent: fields.ForeignKeyNullableRelation[Category] = fields.ForeignKeyField(
        "models.Category", related_name="children", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "categories"


class Product(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    description = fields.TextField(null=True)
    price = fields.FloatField()
    category: fields.ForeignKeyNullableRelation[Category] = fields.ForeignKeyField(
        "models.Category", related_name="products", null=True, on_delete=fields.SET_NULL, db_index=True
    )
    is_active = fields.BooleanField(default=True, db_index=True)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    reviews: fields.ReverseRelation[Review]
    inventory: fields.BackwardOneToOneRelation[Inventory]

    class Meta:
        table = "products"
        # Keyset pages of every sort under each filter are index range scans, counts index-only scans.
        # The full-text index on name is an expression index, created by hand in migration 2.
        indexes = (
            Index(fields=("is_active", "id"), name="ix_products_active_id"),
            Index(fields=("category_id", "is_active", "id"), name="ix_products_category_active_id"),
            Index(fields=("is_active", "price", "id"), name="ix_products_active_price"),
            Index(fields=("category_id", "is_active", "price", "id"), name="ix_products_category_active_price"),
            Index(fields=("is_active", "created_at", "id"), name="ix_products_active_created"),
            Index(fields=("category_id", "is_active", "created_at", "id"), name="ix_products_category_active_created"),
            Index(fields=("is_active", "name", "id"), name="ix_products_active_name"),
            Index(fields=("category_id", "is_active", "name", "id"), name="ix_products_category_active_name"),
        )


class Review(Model):
    id = fields.IntField(primary_key=True)
    product: fields.ForeignKeyRelation[Product] = fields.ForeignKeyField(
        "models.Product", related_name="reviews", on_delete=fields.CASCADE, db_index=True
    )
    user_id = fields.IntField()
    rating = fields.IntField()
    comment = fields.TextField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table = "reviews"
        # A product's reviews newest first, keyset-paged: a backward range scan.
        indexes = (Index(fields=("product_id", "created_at", "id"), name="ix_reviews_product_created"),)


class Inventory(Model):
    id = fields.IntField(primary_key=True)
    product: fields.OneToOneRelation[Product] = fields.OneToOneField(
        "models.Product", related_name="inventory", on_delete=fields.CASCADE
    )
    quantity = fields.IntField(default=0)
    reserved = fields.IntField(default=0)
    warehouse_location = fields.CharField(max_length=50, null=True)
    last_restocked = UTCDateTimeField(null=True)

    class Meta:
        table = "inventory"
