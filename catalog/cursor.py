"""Opaque keyset cursors: versioned, signed, and bound to the query they were made for.

A cursor is ``base64url(payload) "." base64url(hmac)``. A product-list payload is
``[version, "p", sort, backwards, sort value, id, page, filters digest]``; a reviews payload is
``[version, "r", product id, created_at, id, page]``. ``page`` is the number of the page the cursor
leads to, so responses reached by cursor still say which page they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from catalog.domain import MAX_DB_ID, Keyset, Ordering, ProductFilter
from catalog.validation import RequestValidationError, field_error

VERSION = 2
MAX_LENGTH = 2048
SIGNATURE_BYTES = 12


@dataclass(frozen=True, slots=True)
class Position:
    key: Keyset
    page: int
    backwards: bool = False


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def _invalid(msg: str) -> RequestValidationError:
    return RequestValidationError([field_error(("query", "cursor"), msg, "value_error")])


def _seal(secret: bytes, payload: list[Any]) -> str:
    data = orjson.dumps(payload)
    return f"{_b64encode(data)}.{_b64encode(_sign(secret, data))}"


def _open(secret: bytes, cursor: str) -> list[Any]:
    if len(cursor) > MAX_LENGTH or cursor.count(".") != 1:
        raise _invalid("Invalid cursor")
    payload_text, signature_text = cursor.split(".")
    try:
        payload, signature = _b64decode(payload_text), _b64decode(signature_text)
    except (binascii.Error, ValueError):
        raise _invalid("Invalid cursor") from None
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise _invalid("Invalid cursor")
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise _invalid("Invalid cursor") from None
    if not isinstance(decoded, list) or not decoded or decoded[0] != VERSION:
        raise _invalid("Unsupported cursor version")
    return decoded


def _digest(filters: ProductFilter) -> str:
    bound = [filters.is_active, filters.category_id, filters.min_price, filters.max_price, filters.search]
    return hashlib.blake2b(orjson.dumps(bound), digest_size=8).hexdigest()


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _typed(column: str, value: Any) -> Any:
    """The sort value as the column's type; a cursor's value of the wrong type is invalid."""
    if column == "id":
        if value is not None:
            raise _invalid("Invalid cursor")
        return None
    if column == "price" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if column == "name" and isinstance(value, str):
        return value
    if column == "created_at" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise _invalid("Invalid cursor") from None
    raise _invalid("Invalid cursor")


def _checked_id_and_page(identifier: Any, page: Any) -> tuple[int, int]:
    if not isinstance(identifier, int) or not isinstance(page, int) or not 0 <= identifier <= MAX_DB_ID or page < 1:
        raise _invalid("Invalid cursor")
    return identifier, page


def encode_products(secret: bytes, position: Position, ordering: Ordering, filters: ProductFilter) -> str:
    key = position.key
    return _seal(
        secret,
        [VERSION, "p", ordering.sort, position.backwards, _plain(key.value), key.id, position.page, _digest(filters)],
    )


def decode_products(secret: bytes, cursor: str, ordering: Ordering, filters: ProductFilter) -> Position:
    """The position a cursor points at; 422 when malformed, tampered with, or made for another query."""
    payload = _open(secret, cursor)
    if len(payload) != 8 or payload[1] != "p":
        raise _invalid("Invalid cursor")
    _, _, sort, backwards, value, identifier, page, digest = payload
    if sort != ordering.sort:
        raise _invalid("Cursor was made for another sort")
    if digest != _digest(filters):
        raise _invalid("Cursor was made for other filters")
    identifier, page = _checked_id_and_page(identifier, page)
    return Position(Keyset(_typed(ordering.column, value), identifier), page, backwards is True)


def encode_reviews(secret: bytes, product_id: int, position: Position) -> str:
    return _seal(secret, [VERSION, "r", product_id, _plain(position.key.value), position.key.id, position.page])


def decode_reviews(secret: bytes, cursor: str, product_id: int) -> Position:
    payload = _open(secret, cursor)
    if len(payload) != 6 or payload[1] != "r":
        raise _invalid("Invalid cursor")
    _, _, cursor_product, created_at, identifier, page = payload
    if cursor_product != product_id:
        raise _invalid("Cursor was made for another product")
    identifier, page = _checked_id_and_page(identifier, page)
    return Position(Keyset(_typed("created_at", created_at), identifier), page)
