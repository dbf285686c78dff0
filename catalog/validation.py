"""Request parsing and validation into the contract's 422 shape: every bad field named at once.

``detail`` items follow the shape the frontend already knows: ``{"loc": [...], "msg": str, "type": str}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from sanic import Request
from sanic.request import RequestParameters

from catalog.contract import MAX_SEARCH_LENGTH, MIN_PRICE, PRODUCT_CREATE, Field, Shape
from catalog.domain import MAX_BATCH_IDS, MAX_DB_ID, is_db_id

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
INTEGER = re.compile(r"[+-]?\d{1,30}")
MAX_SEARCH_WORDS = 10
# Letters and digits only: whatever else is in q (tsquery operators included) only separates words.
SEARCH_WORD = re.compile(r"[^\W_]+")


class RequestValidationError(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def field_error(loc: tuple[str | int, ...], msg: str, type_: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": type_}


def parse_int(raw: str) -> int | None:
    text = raw.strip()
    return int(text) if INTEGER.fullmatch(text) else None


def range_error(value: float, minimum: float | None, maximum: float | None) -> tuple[str, str] | None:
    """The message and type of ``value`` outside ``minimum`` .. ``maximum`` (either may be None), or None."""
    if minimum is not None and value < minimum:
        return f"Input should be greater than or equal to {minimum}", "greater_than_equal"
    if maximum is not None and value > maximum:
        return f"Input should be less than or equal to {maximum}", "less_than_equal"
    return None


class Collector:
    """Gathers field errors so a request reports all of them, then raises once."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: tuple[str | int, ...], msg: str, type_: str) -> None:
        self.errors.append(field_error(loc, msg, type_))

    def bounded_int(self, loc: tuple[str | int, ...], raw: str, *, ge: int, le: int) -> int | None:
        value = parse_int(raw)
        if value is None:
            self.add(loc, "Input should be a valid integer, unable to parse string as an integer", "int_parsing")
        elif error := range_error(value, ge, le):
            self.add(loc, *error)
        else:
            return value
        return None

    def raise_if_any(self) -> None:
        if self.errors:
            raise RequestValidationError(self.errors)


class QueryReader(Collector):
    """Typed access to query parameters; a parameter given twice counts by its first value.

    An empty typed parameter (``?page_size=``) is invalid, as it always was for this API's clients;
    empty ``cursor`` and ``q`` mean none, and an empty ``include`` means no optional parts.
    """

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.args: RequestParameters = request.get_args(keep_blank_values=True)

    def raw(self, name: str) -> str | None:
        return self.args.get(name)

    def optional_int(self, name: str, *, ge: int = 1, le: int = MAX_DB_ID) -> int | None:
        raw = self.raw(name)
        if raw is None:
            return None
        return self.bounded_int(("query", name), raw, ge=ge, le=le)

    def int(self, name: str, *, default: int, ge: int = 1, le: int = MAX_DB_ID) -> int:
        """The parameter's value, or ``default`` when absent (or invalid: then an error is recorded)."""
        value = self.optional_int(name, ge=ge, le=le)
        return default if value is None else value

    def bool(self, name: str, *, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        self.add(("query", name), "Input should be a valid boolean, unable to interpret input", "bool_parsing")
        return default

    def choice(self, name: str, choices: tuple[str, ...], *, default: str) -> str:
        raw = self.raw(name)
        if raw is None:
            return default
        if raw not in choices:
            self.add(("query", name), f"Input should be one of: {', '.join(choices)}", "enum")
            return default
        return raw

    def optional_price(self, name: str) -> float | None:
        raw = self.raw(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            self.add(("query", name), "Input should be a valid number", "float_parsing")
            return None
        if not math.isfinite(value):
            self.add(("query", name), "Input should be a finite number", "finite_number")
        elif error := range_error(value, MIN_PRICE, None):
            self.add(("query", name), *error)
        else:
            return value
        return None

    def search(self, name: str) -> str | None:
        """A name search as a tsquery: every word must match the start of a word of the name."""
        raw = self.raw(name)
        if raw is None or raw.strip() == "":
            return None
        if len(raw) > MAX_SEARCH_LENGTH:
            self.add(("query", name), f"String should have at most {MAX_SEARCH_LENGTH} characters", "string_too_long")
            return None
        words = SEARCH_WORD.findall(raw.lower())[:MAX_SEARCH_WORDS]
        if not words:
            self.add(("query", name), "Search should contain a letter or a digit", "value_error")
            return None
        return " & ".join(f"{word}:*" for word in words)

    def parts(self, name: str, allowed: frozenset[str]) -> frozenset[str]:
        """A comma-separated subset of ``allowed``; all of them when the parameter is absent."""
        raw = self.raw(name)
        if raw is None:
            return allowed
        chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
        unknown = chosen - allowed
        if unknown:
            self.add(("query", name), f"Unknown parts {sorted(unknown)}; choose from {sorted(allowed)}", "enum")
            return allowed
        return chosen

    def id_list(self, name: str) -> list[int]:
        raw = self.raw(name)
        loc = ("query", name)
        if raw is None or raw.strip() == "":
            self.add(loc, "Field required", "missing")
            return []
        parts = raw.split(",")
        if len(parts) > MAX_BATCH_IDS:
            self.add(loc, f"List should have at most {MAX_BATCH_IDS} items after validation, not {len(parts)}", "too_long")
            return []
        ids = [parse_int(part) for part in parts]
        for position, value in enumerate(ids):
            if value is None:
                self.add((*loc, position), "Input should be a valid integer", "int_parsing")
        return [value for value in ids if value is not None]


def path_int(name: str, raw: str) -> int:
    value = parse_int(raw)
    if value is None:
        raise RequestValidationError(
            [field_error(("path", name), "Input should be a valid integer, unable to parse string as an integer",
                         "int_parsing")]
        )
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What passes for each JSON type a body field may have, and the error for a value that does not.
TYPE_CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "string": (lambda value: isinstance(value, str), "Input should be a valid string", "string_type"),
    "number": (_is_number, "Input should be a valid number", "float_type"),
    "integer": (_is_integer, "Input should be a valid integer", "int_type"),
    "boolean": (lambda value: isinstance(value, bool), "Input should be a valid boolean", "bool_type"),
}


def body_fields(shape: Shape, body: Any) -> dict[str, Any]:
    """The fields of ``shape`` in a JSON body, checked as the shape declares them; unknown fields are ignored.

    Every bad field is reported, in the shape's order; a missing required field where it would have been.
    """
    errors = Collector()
    if not isinstance(body, dict):
        errors.add(("body",), "Input should be a valid dictionary or object", "dict_type")
        errors.raise_if_any()
    fields: dict[str, Any] = {}
    for field in shape.fields:
        if field.name not in body:
            if field.required:
                errors.add(("body", field.name), "Field required", "missing")
            continue
        value = body[field.name]
        if error := _field_error(field, value):
            errors.add(("body", field.name), *error)
        else:
            # JSON has one number type: a price sent as 5 is a float like any other.
            fields[field.name] = float(value) if field.type == "number" and value is not None else value
    errors.raise_if_any()
    return fields


def _field_error(field: Field, value: Any) -> tuple[str, str] | None:
    """The message and type of what is wrong with ``value`` for ``field``, or None: the type first, then
    the bounds, so each field reports one error."""
    if value is None and field.nullable:
        return None
    accepts, message, kind = TYPE_CHECKS[field.type]
    if not accepts(value):
        return message, kind
    if field.type == "string":
        return _string_error(field, value)
    if field.type == "number" and not math.isfinite(value):
        return "Input should be a finite number", "finite_number"
    if field.references is not None and not is_db_id(value):  # no row can have it
        return _unknown_reference(field, value)
    return range_error(value, field.minimum, field.maximum)


def _string_error(field: Field, value: str) -> tuple[str, str] | None:
    if field.length is not None:
        fewest, most = field.length
        if not fewest <= len(value) <= most:
            kind = "string_too_short" if len(value) < fewest else "string_too_long"
            return f"String should have {fewest} to {most} characters", kind
    if field.pattern is not None and not re.search(field.pattern.regex, value):
        return field.pattern.message, "string_pattern_mismatch"
    return None


def _unknown_reference(field: Field, value: Any) -> tuple[str, str]:
    return f"{field.references} {value} does not exist", "foreign_key"


def unknown_category_error(category_id: Any) -> RequestValidationError:
    """A product body's category_id that names no category (found when the write tried it)."""
    field = PRODUCT_CREATE["category_id"]
    return RequestValidationError([field_error(("body", field.name), *_unknown_reference(field, category_id))])
