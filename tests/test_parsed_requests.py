"""The app keeps the requests its cached routes parsed, by route and URL (catalog.blueprints.cached.
ParsedRequests): a URL parses once, a bad one fails every time, and the kept ones are bounded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from catalog.blueprints.cached import Entry, ParsedRequests
from catalog.validation import RequestValidationError
from tests.conftest import Database


class CountingParser:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, request: SimpleNamespace, **path: str) -> Entry[str]:
        self.calls.append(request.raw_url)
        if b"bad" in request.raw_url:
            raise RequestValidationError([{"loc": ["query", "x"], "msg": "bad", "type": "value_error"}])
        return Entry(request.raw_url.decode(), request.raw_url.decode(), [path.get("product_id", "all")])


def asked(url: str) -> SimpleNamespace:
    """What ParsedRequests reads of a Sanic request: the URL as the client sent it."""
    return SimpleNamespace(raw_url=url.encode())


def test_a_url_is_parsed_once_and_each_spelling_and_route_on_its_own() -> None:
    parse, other_route = CountingParser(), CountingParser()
    parsed = ParsedRequests()
    first = parsed.get(asked("/products?page=2&sort=price"), parse, {})
    assert parsed.get(asked("/products?page=2&sort=price"), parse, {}) is first
    parsed.get(asked("/products?sort=price&page=2"), parse, {})
    parsed.get(asked("/products?page=2&sort=price"), other_route, {})
    assert parse.calls == [b"/products?page=2&sort=price", b"/products?sort=price&page=2"]
    assert other_route.calls == [b"/products?page=2&sort=price"]


def test_a_url_that_fails_to_parse_fails_every_time() -> None:
    parse = CountingParser()
    parsed = ParsedRequests()
    for _ in range(2):
        with pytest.raises(RequestValidationError):
            parsed.get(asked("/products?page=bad"), parse, {})
    assert len(parse.calls) == 2 and not parsed.kept


def test_the_oldest_parsed_requests_go_first_past_the_limit() -> None:
    parse = CountingParser()
    parsed = ParsedRequests(limit=3)
    for n in range(5):
        parsed.get(asked(f"/products/{n}"), parse, {"product_id": str(n)})
    assert [url for _, url in parsed.kept] == [b"/products/2", b"/products/3", b"/products/4"]


def test_the_service_answers_a_repeated_bad_request_with_the_same_422(client, db: Database) -> None:
    answers = [client.get("/products?page_size=0&page=x")[1] for _ in range(2)]
    assert [answer.status for answer in answers] == [422, 422]
    assert answers[0].json == answers[1].json
    assert {tuple(item["loc"]) for item in answers[0].json["detail"]} == {("query", "page_size"), ("query", "page")}
