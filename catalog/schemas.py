"""The API's JSON shapes for the OpenAPI document (documentation; serialize.py builds the bodies).

Written as OpenAPI 3.0 schemas rather than derived from classes, so that the document states what the
contract does: which fields are required, which nullable, the bounds, and timestamps as the API sends
them (ISO 8601 without a UTC offset, which is not JSON Schema's ``date-time``).
"""

from __future__ import annotations

from typing import Any

from sanic_ext.extensions.openapi.definitions import (
    Parameter,
    Reference,
    RequestBody,
    Response,
)
from sanic_ext.extensions.openapi.types import Integer, Schema

from catalog.domain import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

TIMESTAMP = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$",
    "description": "ISO 8601, UTC, without an offset",
    "example": "2024-05-01T12:30:00.123456",
}
INTEGER_ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}
NO_NUL = r"^[^\u0000]*$"


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _page_of(item: str) -> dict[str, Any]:
    return _object({
        "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
        "total": {"type": "integer", "minimum": 0},
        "page": {"type": "integer", "minimum": 1},
        "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        "total_pages": {"type": "integer", "minimum": 0},
    })


COMPONENTS: dict[str, dict[str, Any]] = {
    "Category": _object({
        "id": INTEGER_ID,
        "name": {"type": "string"},
        "description": {"type": "string", "nullable": True},
    }),
    "Review": _object({
        "id": INTEGER_ID,
        "user_id": {"type": "integer"},
        "rating": {"type": "integer"},
        "comment": {"type": "string", "nullable": True},
        "created_at": TIMESTAMP,
    }),
    "Inventory": _object({
        "quantity": {"type": "integer"},
        "reserved": {"type": "integer"},
        "available": {"type": "integer"},
        "in_stock": {"type": "boolean"},
    }),
    "Product": _object(
        {
            "id": INTEGER_ID,
            "name": {"type": "string"},
            "description": {"type": "string", "nullable": True},
            "price": {"type": "number"},
            "category_id": {"type": "integer", "nullable": True},
            "is_active": {"type": "boolean"},
            "created_at": TIMESTAMP,
            "category": {"allOf": [{"$ref": "#/components/schemas/Category"}], "nullable": True},
            "reviews": {"type": "array", "items": {"$ref": "#/components/schemas/Review"}},
            "inventory": {"allOf": [{"$ref": "#/components/schemas/Inventory"}], "nullable": True},
            "average_rating": {"type": "number", "nullable": True},
            "review_count": {"type": "integer", "minimum": 0},
        },
        # category, reviews and inventory are left out when GET /products's include does not name them.
        required=["id", "name", "description", "price", "category_id", "is_active", "created_at",
                  "average_rating", "review_count"],
    ),
    "ProductList": _page_of("Product"),
    "ReviewList": _page_of("Review"),
    "ProductCreate": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL},
            "description": {"type": "string", "nullable": True, "pattern": NO_NUL},
            "price": {"type": "number", "minimum": 0},
            "category_id": {"type": "integer", "nullable": True, "description": "an existing category"},
        },
        required=["name", "price"],
    ),
    "ProductUpdate": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL},
            "description": {"type": "string", "nullable": True, "pattern": NO_NUL},
            "price": {"type": "number", "minimum": 0},
            "category_id": {"type": "integer", "nullable": True, "description": "an existing category"},
            "is_active": {"type": "boolean"},
        },
        required=[],
    ),
    "ValidationError": _object({
        "detail": {
            "type": "array",
            "items": _object({
                "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            }),
        },
    }),
    "Error": _object({"detail": {"type": "string"}}),
    "Health": _object({"status": {"type": "string", "enum": ["healthy"]}}),
    "Readiness": _object(
        {
            "status": {"type": "string", "enum": ["ready", "degraded", "unavailable"]},
            "postgres": {"type": "string"},
            "cache": {"type": "string"},
            "cache_backend": {"type": "string"},
            "replicas": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "with DATABASE_REPLICA_URLS: each replica (host:port/database): ok, lagging or unavailable",
            },
        },
        required=["status", "postgres", "cache", "cache_backend"],
    ),
}


def ref(name: str) -> Reference:
    return Reference(f"#/components/schemas/{name}")


def ok(schema: Schema, status: int = 200) -> Response:
    return Response({JSON: schema}, status=str(status), description="Success")


def error(status: int, description: str) -> Response:
    return Response({JSON: ref("Error")}, status=str(status), description=description)


def query(name: str, schema: Schema, description: str = "", required: bool = False) -> Parameter:
    return Parameter(name, schema, "query", description=description, required=required)


def path_id(name: str) -> Parameter:
    # Any integer: one that cannot be an id is simply not found; anything else is answered 422.
    return Parameter(name, Schema(type="integer"), "path", required=True)


def body(name: str) -> RequestBody:
    return RequestBody({JSON: ref(name)}, required=True)


JSON = "application/json"
UNPROCESSABLE = Response({JSON: ref("ValidationError")}, status="422", description="Invalid parameter or body")
NOT_FOUND = error(404, "Not found")
PAGE_SIZE = query("page_size", Integer(minimum=1, maximum=MAX_PAGE_SIZE), f"default {DEFAULT_PAGE_SIZE}")
