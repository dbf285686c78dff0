"""Opaque keyset cursors: versioned, signed, and bound to the filters they were made for.

A cursor is ``base64url(payload) "." base64url(hmac)``, the payload ``[version, last_id, page,
category_id, is_active]``. ``page`` is the number of the page the cursor leads to, so responses
reached by cursor still say which page they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import orjson

from catalog.queries import MAX_DB_ID, ProductFilter
from catalog.validation import RequestValidationError, field_error

VERSION = 1
MAX_LENGTH = 256
SIGNATURE_BYTES = 12


@dataclass(frozen=True, slots=True)
class Position:
    after_id: int
    page: int


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def encode(secret: bytes, position: Position, filters: ProductFilter) -> str:
    payload = orjson.dumps([VERSION, position.after_id, position.page, filters.category_id, filters.is_active])
    return f"{_b64encode(payload)}.{_b64encode(_sign(secret, payload))}"


def _invalid(msg: str) -> RequestValidationError:
    return RequestValidationError([field_error(("query", "cursor"), msg, "value_error")])


def decode(secret: bytes, cursor: str, filters: ProductFilter) -> Position:
    """The position a cursor points at; 422 when it is malformed, tampered with or made for other filters."""
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
        version, after_id, page, category_id, is_active = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        raise _invalid("Invalid cursor") from None
    if version != VERSION or not isinstance(after_id, int) or not isinstance(page, int):
        raise _invalid("Unsupported cursor version")
    if not (0 <= after_id <= MAX_DB_ID and page >= 1):
        raise _invalid("Invalid cursor")
    if (category_id, is_active) != (filters.category_id, filters.is_active):
        raise _invalid("Cursor was made for other filters")
    return Position(after_id=after_id, page=page)
