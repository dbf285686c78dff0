"""The contract's JSON shapes (``/work/shared/api-contract.md``), each declared once as data.

A ``Shape`` is its fields in the order the API sends them; a ``Field`` is a name, a JSON type, whether it
may be null or left out, and its bounds. From these declarations come the OpenAPI component schemas
(``COMPONENTS``), the checks of request bodies (``catalog.validation.body_fields``) and the keys of
responses (``catalog.serialize``), so a bound or a field changed here changes all three.

Timestamps are declared as the API sends them (ISO 8601 without a UTC offset), which is not JSON Schema's
``date-time``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from catalog.domain import MAX_DB_ID, MAX_PAGE_SIZE

# Limits of the contract that a query parameter shares with a body field or the OpenAPI document.
NAME_MAX_LENGTH = 200
MIN_PRICE = 0
MAX_SEARCH_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regular expression a string must match (the document's ``pattern``) and what breaking it means."""

    regex: str
    message: str


# PostgreSQL text cannot hold NUL characters: refused as invalid input rather than failing in the database.
NO_NUL = Pattern(r"^[^\u0000]*$", "String should not contain NUL characters")
TIMESTAMP = Pattern(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$", "String should be an ISO 8601 timestamp")


def component(name: str) -> str:
    return f"#/components/schemas/{name}"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    # A JSON Schema type; "object" is the component named by ``of``, "array" holds items of ``of``.
    type: str
    nullable: bool = False
    required: bool = True
    minimum: int | None = None
    maximum: int | None = None
    length: tuple[int, int] | None = None  # (fewest, most) characters
    pattern: Pattern | None = None
    enum: tuple[str, ...] = ()
    # A component's name, an inline object, or an item schema the fields above cannot say.
    of: str | Shape | Mapping[str, Any] | None = None
    # The id of a row of that component: an integer that cannot be one names none ("foreign_key").
    references: str | None = None
    description: str | None = None
    example: str | None = None
    # Not an attribute of the model of the same name: catalog.serialize works it out.
    computed: bool = False

    def schema(self) -> dict[str, Any]:
        """This field's OpenAPI 3.0 schema."""
        if self.type == "object" and isinstance(self.of, str):
            reference = {"$ref": component(self.of)}
            # A $ref admits no siblings in OpenAPI 3.0: a nullable one is wrapped in allOf.
            return {"allOf": [reference], "nullable": True} if self.nullable else reference
        schema: dict[str, Any] = {"type": self.type}
        if self.nullable:
            schema["nullable"] = True
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.length is not None:
            schema["minLength"], schema["maxLength"] = self.length
        if self.pattern is not None:
            schema["pattern"] = self.pattern.regex
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.of is not None and self.type == "array":
            schema["items"] = _items(self.of)
        elif self.of is not None:  # an inline object
            schema.update(_items(self.of))
        description = self.description or (self.references and f"an existing {self.references.lower()}")
        if description:
            schema["description"] = description
        if self.example is not None:
            schema["example"] = self.example
        return schema


def _items(of: str | Shape | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(of, str):
        return {"$ref": component(of)}
    if isinstance(of, Shape):
        return of.schema()
    return dict(of)


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    fields: tuple[Field, ...]

    def __getitem__(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    @property
    def stored(self) -> tuple[str, ...]:
        """The fields read from the model's attributes of the same names, in the shape's order."""
        return tuple(field.name for field in self.fields if not field.computed)

    def partial(self, name: str, *more: Field) -> Shape:
        """This shape with every field optional, and ``more`` fields (optional too) after them."""
        return Shape(name, tuple(replace(field, required=False) for field in (*self.fields, *more)))

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {field.name: field.schema() for field in self.fields},
            "required": [field.name for field in self.fields if field.required],
        }


ID = Field("id", "integer", minimum=1, maximum=MAX_DB_ID)
CREATED_AT = Field(
    "created_at", "string", pattern=TIMESTAMP, description="ISO 8601, UTC, without an offset",
    example="2024-05-01T12:30:00.123456",
)


def page_of(name: str, item: str) -> Shape:
    return Shape(name, (
        Field("items", "array", of=item),
        Field("total", "integer", minimum=0),
        Field("page", "integer", minimum=1),
        Field("page_size", "integer", minimum=1, maximum=MAX_PAGE_SIZE),
        Field("total_pages", "integer", minimum=0),
    ))


CATEGORY = Shape("Category", (
    ID,
    Field("name", "string"),
    Field("description", "string", nullable=True),
))
REVIEW = Shape("Review", (
    ID,
    Field("user_id", "integer"),
    Field("rating", "integer"),
    Field("comment", "string", nullable=True),
    CREATED_AT,
))
INVENTORY = Shape("Inventory", (
    Field("quantity", "integer"),
    Field("reserved", "integer"),
    Field("available", "integer", computed=True),  # quantity - reserved
    Field("in_stock", "boolean", computed=True),  # available > 0
))
PRODUCT = Shape("Product", (
    ID,
    Field("name", "string"),
    Field("description", "string", nullable=True),
    Field("price", "number"),
    Field("category_id", "integer", nullable=True),
    Field("is_active", "boolean"),
    CREATED_AT,
    # The embedded parts: left out when GET /products's include does not name them.
    Field("category", "object", of=CATEGORY.name, nullable=True, required=False, computed=True),
    Field("reviews", "array", of=REVIEW.name, required=False, computed=True),
    Field("inventory", "object", of=INVENTORY.name, nullable=True, required=False, computed=True),
    Field("average_rating", "number", nullable=True, computed=True),
    Field("review_count", "integer", minimum=0, computed=True),
))
PRODUCT_LIST = page_of("ProductList", PRODUCT.name)
REVIEW_LIST = page_of("ReviewList", REVIEW.name)

# Request bodies: unknown fields are ignored, as they always were.
PRODUCT_CREATE = Shape("ProductCreate", (
    Field("name", "string", length=(1, NAME_MAX_LENGTH), pattern=NO_NUL),
    Field("description", "string", nullable=True, required=False, pattern=NO_NUL),
    Field("price", "number", minimum=MIN_PRICE),
    Field("category_id", "integer", nullable=True, required=False, references=CATEGORY.name),
))
# A PUT changes any subset of the fields a POST sets, and is_active.
PRODUCT_UPDATE = PRODUCT_CREATE.partial("ProductUpdate", Field("is_active", "boolean"))

VALIDATION_ERROR = Shape("ValidationError", (
    Field("detail", "array", of=Shape("", (
        Field("loc", "array", of={"oneOf": [{"type": "string"}, {"type": "integer"}]}),
        Field("msg", "string"),
        Field("type", "string"),
    ))),
))
ERROR = Shape("Error", (Field("detail", "string"),))
HEALTH = Shape("Health", (Field("status", "string", enum=("healthy",)),))
READINESS = Shape("Readiness", (
    Field("status", "string", enum=("ready", "degraded", "unavailable")),
    Field("postgres", "string"),
    Field("cache", "string"),
    Field("cache_backend", "string"),
    Field("replicas", "object", required=False, of={"additionalProperties": {"type": "string"}},
          description="with DATABASE_REPLICA_URLS: each replica (host:port/database): ok, lagging or unavailable"),
))

COMPONENTS: dict[str, dict[str, Any]] = {
    shape.name: shape.schema()
    for shape in (
        CATEGORY, REVIEW, INVENTORY, PRODUCT, PRODUCT_LIST, REVIEW_LIST, PRODUCT_CREATE, PRODUCT_UPDATE,
        VALIDATION_ERROR, ERROR, HEALTH, READINESS,
    )
}
