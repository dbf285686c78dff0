"""A finished JSON response as both the HTTP middleware and the response cache handle it.

A ``Representation`` is a JSON body with its entity tags and, when it is worth it, its gzip form; it
answers a request with 200 in the encoding the client takes, or 304. Uncached responses become one in
the response middleware (``catalog.http``; compressed only for clients that take gzip); cached ones are
stored as one (``catalog.cache``), compressed once, so a cache hit does no serialisation and
no compression work. Its own module so that neither of the two depends on the other.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass, field

import orjson
from sanic import HTTPResponse, Request

from config.settings import Settings

JSON_TYPE = "application/json"
UNSAFE_IN_HEADERS = str.maketrans("", "", "\r\n\x00")


class Response(HTTPResponse):
    """Sanic's response, with its header check made cheap: Sanic runs ``str.translate`` over every header
    value of every response (about 16 ns a character, a tenth of a cached hit's time with a page's Link and
    Server-Timing); a search for the three characters it drops is a hundred times faster, and values
    without them (nearly all) are sent as they are."""

    @staticmethod
    def _sanitize_header_value(value: str) -> str:
        if "\r" in value or "\n" in value or "\x00" in value:
            return value.translate(UNSAFE_IN_HEADERS)
        return value


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (RFC 9110 12.5.3: ``q=0`` means "not acceptable")."""
    if not header:
        return False
    explicit: float | None = None
    wildcard: float | None = None
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            explicit = quality
        elif coding == "*":
            wildcard = quality
    chosen = explicit if explicit is not None else wildcard
    return chosen is not None and chosen > 0


def if_none_match_hits(header: str | None, tag: str) -> bool:
    """Weak comparison, as RFC 9110 13.1.2 prescribes for If-None-Match on GET and HEAD."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    opaque = tag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == opaque for candidate in header.split(","))


@dataclass(frozen=True, slots=True)
class Representation:
    body: bytes
    digest: str
    gzipped: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200

    @classmethod
    def of(
        cls, body: bytes, headers: dict[str, str], gzipped: bytes | None = None, status: int = 200
    ) -> Representation:
        return cls(body, hashlib.blake2b(body, digest_size=16).hexdigest(), gzipped, headers, status)

    def etag(self, gzipped: bool) -> str:
        # A gzip body is another representation of the same resource: it gets its own strong tag.
        return f'"{self.digest}-gz"' if gzipped else f'"{self.digest}"'

    def respond(self, request: Request, settings: Settings, extra_headers: dict[str, str] | None = None) -> HTTPResponse:
        """200 in the encoding the client takes, or 304 when it already has this representation.

        Other statuses (a cached 404) are sent as they are: entity tags are for successful responses.
        """
        if self.status != 200:
            headers = {**(extra_headers or {}), **self.headers}
            return Response(self.body, status=self.status, headers=headers, content_type=JSON_TYPE)
        compressible = len(self.body) > settings.gzip_min_bytes and request.method != "HEAD"
        use_gzip = compressible and accepts_gzip(request.headers.get("accept-encoding"))
        headers = {
            **(extra_headers or {}),
            "ETag": self.etag(use_gzip),
            "Vary": "Accept-Encoding",
            "Cache-Control": "no-cache",
        }
        if if_none_match_hits(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status=304, headers=headers)
        headers.update(self.headers)
        if not use_gzip:
            return Response(self.body, status=200, headers=headers, content_type=JSON_TYPE)
        body = self.gzipped if self.gzipped is not None else gzip.compress(self.body, settings.gzip_level)
        headers["Content-Encoding"] = "gzip"
        return Response(body, status=200, headers=headers, content_type=JSON_TYPE)

    def encode(self) -> bytes:
        """Bytes for a cache: a length-prefixed JSON head (digest, headers, body length), body, gzip body."""
        head = orjson.dumps([self.digest, self.headers, len(self.body), self.status])
        return b"".join((struct.pack(">I", len(head)), head, self.body, self.gzipped or b""))

    @classmethod
    def decode(cls, data: bytes) -> Representation:
        (head_length,) = struct.unpack_from(">I", data)
        digest, headers, body_length, status = orjson.loads(data[4 : 4 + head_length])
        start = 4 + head_length
        body, gzipped = data[start : start + body_length], data[start + body_length :]
        return cls(body, digest, gzipped or None, headers, status)

    @classmethod
    def for_cache(cls, body: bytes, headers: dict[str, str], settings: Settings, status: int = 200) -> Representation:
        """Compressed once here, at the best level, since the cache serves it many times."""
        worth_it = status == 200 and len(body) > settings.gzip_min_bytes
        gzipped = gzip.compress(body, settings.gzip_level) if worth_it else None
        return cls.of(body, headers, gzipped, status)
