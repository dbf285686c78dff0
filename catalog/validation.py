"""Request parsing and validation into the contract's 422 shape: every bad field named at once.

``detail`` items follow the shape the frontend already knows: ``{"loc": [...], "msg": str, "type": str}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from sanic import Request
from sanic.request import RequestParameters

from catalog.domain import MAX_BATCH_IDS, MAX_DB_ID

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
INTEGER = re.compile(r"[+-]?\d{1,30}")
NAME_MAX_LENGTH = 200
# PostgreSQL text cannot hold NUL characters: refused here rather than failing in the database.
NUL_MESSAGE = "String should not contain NUL characters"
MAX_SEARCH_LENGTH = 200
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
        elif value < ge:
            self.add(loc, f"Input should be greater than or equal to {ge}", "greater_than_equal")
        elif value > le:
            self.add(loc, f"Input should be less than or equal to {le}", "less_than_equal")
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
        elif value < 0:
            self.add(("query", name), "Input should be greater than or equal to 0", "greater_than_equal")
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


def product_fields(body: Any, *, partial: bool) -> dict[str, Any]:
    """The product fields of a POST (``partial=False``) or PUT body; unknown fields are ignored."""
    errors = Collector()
    if not isinstance(body, dict):
        errors.add(("body",), "Input should be a valid dictionary or object", "dict_type")
        errors.raise_if_any()
    fields: dict[str, Any] = {}

    if "name" in body:
        name = body["name"]
        if not isinstance(name, str):
            errors.add(("body", "name"), "Input should be a valid string", "string_type")
        elif not 1 <= len(name) <= NAME_MAX_LENGTH:
            kind = "string_too_short" if not name else "string_too_long"
            errors.add(("body", "name"), f"String should have 1 to {NAME_MAX_LENGTH} characters", kind)
        elif "\x00" in name:
            errors.add(("body", "name"), NUL_MESSAGE, "string_pattern_mismatch")
        else:
            fields["name"] = name
    elif not partial:
        errors.add(("body", "name"), "Field required", "missing")

    if "description" in body:
        description = body["description"]
        if description is not None and not isinstance(description, str):
            errors.add(("body", "description"), "Input should be a valid string", "string_type")
        elif description is not None and "\x00" in description:
            errors.add(("body", "description"), NUL_MESSAGE, "string_pattern_mismatch")
        else:
            fields["description"] = description

    if "price" in body:
        price = body["price"]
        if not _is_number(price):
            errors.add(("body", "price"), "Input should be a valid number", "float_type")
        elif not math.isfinite(price):
            errors.add(("body", "price"), "Input should be a finite number", "finite_number")
        elif price < 0:
            errors.add(("body", "price"), "Input should be greater than or equal to 0", "greater_than_equal")
        else:
            fields["price"] = float(price)
    elif not partial:
        errors.add(("body", "price"), "Field required", "missing")

    if "category_id" in body:
        category_id = body["category_id"]
        if category_id is not None and (not isinstance(category_id, int) or isinstance(category_id, bool)):
            errors.add(("body", "category_id"), "Input should be a valid integer", "int_type")
        elif category_id is not None and not 1 <= category_id <= MAX_DB_ID:
            errors.errors.append(_unknown_category(category_id))
        else:
            fields["category_id"] = category_id

    if partial and "is_active" in body:
        is_active = body["is_active"]
        if not isinstance(is_active, bool):
            errors.add(("body", "is_active"), "Input should be a valid boolean", "bool_type")
        else:
            fields["is_active"] = is_active

    errors.raise_if_any()
    return fields


def _unknown_category(category_id: Any) -> dict[str, Any]:
    return field_error(("body", "category_id"), f"Category {category_id} does not exist", "foreign_key")


def unknown_category_error(category_id: Any) -> RequestValidationError:
    return RequestValidationError([_unknown_category(category_id)])
