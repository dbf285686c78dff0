"""Helpers for the routes' sanic-ext OpenAPI definitions: parameters, bodies and responses.

The component schemas they refer to by name are ``catalog.contract.COMPONENTS``.
"""

from __future__ import annotations

from sanic_ext.extensions.openapi.definitions import (
    Parameter,
    Reference,
    RequestBody,
    Response,
)
from sanic_ext.extensions.openapi.types import Integer, Schema

from catalog.contract import Shape, component
from catalog.domain import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


def ref(name: str) -> Reference:
    return Reference(component(name))


def ok(schema: Schema, status: int = 200) -> Response:
    return Response({JSON: schema}, status=str(status), description="Success")


def error(status: int, description: str) -> Response:
    return Response({JSON: ref("Error")}, status=str(status), description=description)


def query(name: str, schema: Schema, description: str = "", required: bool = False) -> Parameter:
    return Parameter(name, schema, "query", description=description, required=required)


def path_id(name: str) -> Parameter:
    # Any integer: one that cannot be an id is simply not found; anything else is answered 422.
    return Parameter(name, Schema(type="integer"), "path", required=True)


def body(shape: Shape) -> RequestBody:
    """The request body that ``catalog.validation.body_fields`` checks against ``shape``."""
    return RequestBody({JSON: ref(shape.name)}, required=True)


JSON = "application/json"
UNPROCESSABLE = Response({JSON: ref("ValidationError")}, status="422", description="Invalid parameter or body")
NOT_FOUND = error(404, "Not found")
PAGE_SIZE = query("page_size", Integer(minimum=1, maximum=MAX_PAGE_SIZE), f"default {DEFAULT_PAGE_SIZE}")
