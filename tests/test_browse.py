"""Browsing: every sort, price range, name search and include, walked by cursor forwards and backwards."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from itertools import product as combinations
from urllib.parse import urlencode

import pytest

from tests.conftest import Database
from tests.helpers import links

NAMES = ["Stainless Kettle", "Steel Pan", "kettle black", "Óak Chair", "Stainless steel kettle XL", "Lamp"]
SORT_SQL = {
    "id": "id", "price": "price, id", "-price": "price DESC, id DESC", "created_at": "created_at, id",
    "-created_at": "created_at DESC, id DESC", "name": "name, id",
}


@pytest.fixture
def shop(db: Database) -> Database:
    kitchen, garden = db.category("Kitchen"), db.category("Garden")
    start = datetime(2024, 1, 1)
    for i in range(60):
        db.product(
            f"{NAMES[i % len(NAMES)]} {i // 6}",
            # Long runs of equal prices and equal creation times: the id must break every tie.
            price=[5.0, 5.0, 5.0, 9.99, 12.5, 5.0, 100.0][i % 7],
            category_id=(kitchen, garden, None)[i % 3],
            is_active=i % 8 != 0,
            created_at=start + timedelta(days=i % 4),
        )
    for product_id in (2, 3):
        db.review(product_id, 4)
        db.review(product_id, 1)
    db.inventory(2, 7, 2)
    return db


def name_matches(name: str, words: list[str]) -> bool:
    name_words = re.findall(r"[^\W_]+", name.lower())
    return all(any(word_in_name.startswith(word) for word_in_name in name_words) for word in words)


def expected_ids(db: Database, sort: str, params: dict) -> list[int]:
    where, args = ["is_active = $1"], [params.get("is_active", "true") == "true"]
    for name, sql in (("category_id", "category_id = ${}"), ("min_price", "price >= ${}"), ("max_price", "price <= ${}")):
        if name in params:
            args.append(float(params[name]) if "price" in name else int(params[name]))
            where.append(sql.format(len(args)))
    rows = db.fetch(f"SELECT id, name FROM products WHERE {' AND '.join(where)} ORDER BY {SORT_SQL[sort]}", *args)
    words = re.findall(r"[^\W_]+", params.get("q", "").lower())
    return [row["id"] for row in rows if name_matches(row["name"], words)]


def walk(client, params: dict, direction: str = "next", start_cursor: str | None = None) -> tuple[list[int], list[int]]:
    seen, pages = [], []
    query = dict(params, **({"cursor": start_cursor} if start_cursor else {}))
    header = "x-next-cursor" if direction == "next" else "x-prev-cursor"
    for _ in range(100):
        _, response = client.get(f"/products?{urlencode(query)}")
        assert response.status == 200, response.text
        ids = [item["id"] for item in response.json["items"]]
        seen.extend(ids if direction == "next" else reversed(ids))
        pages.append(response.json["page"])
        if header not in response.headers:
            return seen, pages
        query = dict(params, cursor=response.headers[header])
    raise AssertionError("the walk did not end")


FILTERS = [{}, {"category_id": "1"}, {"is_active": "false"}, {"min_price": "5", "max_price": "12.5"}, {"q": "stain KETT"}]


@pytest.mark.parametrize(("sort", "filters"), list(combinations(SORT_SQL, FILTERS)))
def test_cursor_walks_forwards_and_backwards_match_sql(client, shop: Database, sort: str, filters: dict) -> None:
    params = {"sort": sort, "page_size": "7", **filters}
    expected = expected_ids(shop, sort, params)
    assert expected, "the fixture should match every filter"
    forward, pages = walk(client, params)
    assert forward == expected
    assert pages == list(range(1, len(pages) + 1))
    _, total = client.get(f"/products?{urlencode(params)}")
    assert total.json["total"] == len(expected) and total.json["total_pages"] == len(pages)

    # From the last page (reached by page=N), X-Prev-Cursor walks back to the first.
    _, last = client.get(f"/products?{urlencode(dict(params, page=len(pages)))}")
    last_ids = [item["id"] for item in last.json["items"]]
    backward, back_pages = walk(client, params, "prev", last.headers.get("x-prev-cursor"))
    if len(pages) > 1:
        assert list(reversed(last_ids)) + backward == list(reversed(expected))
        assert back_pages == list(range(len(pages) - 1, 0, -1))


def test_page_numbers_match_cursor_pages_for_every_sort(client, shop: Database) -> None:
    for sort in SORT_SQL:
        params = {"sort": sort, "page_size": "9"}
        forward, pages = walk(client, params)
        by_page = []
        for page in pages:
            _, response = client.get(f"/products?{urlencode(dict(params, page=page))}")
            by_page.extend(item["id"] for item in response.json["items"])
        assert by_page == forward, sort


def test_prev_link_rides_along_with_next(client, shop: Database) -> None:
    _, first = client.get("/products?page_size=5")
    assert "x-prev-cursor" not in first.headers and set(links(first.headers["link"])) == {"next"}
    _, second = client.get(f"/products?page_size=5&cursor={first.headers['x-next-cursor']}")
    assert set(links(second.headers["link"])) == {"next", "prev"}
    _, back = client.get(links(second.headers["link"])["prev"].split("/products", 1)[1].join(["/products", ""]))
    assert back.json["items"] == first.json["items"] and back.json["page"] == 1


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("sort=cheapest", ["query", "sort"]),
        ("sort=-name", ["query", "sort"]),
        ("min_price=-1", ["query", "min_price"]),
        ("max_price=abc", ["query", "max_price"]),
        ("min_price=nan", ["query", "min_price"]),
        ("max_price=inf", ["query", "max_price"]),
        ("min_price=10&max_price=5", ["query", "min_price"]),
        ("q=%21%40%23", ["query", "q"]),
        ("q=" + "a" * 201, ["query", "q"]),
        ("include=category,prices", ["query", "include"]),
    ],
)
def test_bad_browse_parameters(client, shop: Database, query: str, loc: list) -> None:
    _, response = client.get(f"/products?{query}")
    assert response.status == 422, response.text
    assert [item["loc"] for item in response.json["detail"]] == [loc]


def test_a_cursor_is_bound_to_its_sort_and_filters(client, shop: Database) -> None:
    _, first = client.get("/products?sort=price&page_size=5&min_price=5")
    cursor = first.headers["x-next-cursor"]
    for other in ("sort=-price&min_price=5", "sort=price", "sort=price&min_price=6", "sort=price&min_price=5&q=lamp"):
        _, response = client.get(f"/products?{other}&page_size=5&cursor={cursor}")
        assert response.status == 422 and response.json["detail"][0]["loc"] == ["query", "cursor"], other
    _, response = client.get(f"/products?sort=price&min_price=5.0&page_size=5&cursor={cursor}")
    assert response.status == 200  # the same filter, spelt differently


def test_search_is_case_and_accent_exact_prefix_matching(client, shop: Database) -> None:
    _, response = client.get("/products?q=óak&page_size=100")
    assert response.json["items"] and all("Óak" in item["name"] for item in response.json["items"])
    _, response = client.get("/products?q=kett%27s%20%26%20stain&page_size=100")
    assert {item["name"].split()[0] for item in response.json["items"]} == {"Stainless"}
    _, response = client.get("/products?q=zzz")
    assert response.json["items"] == [] and response.json["total"] == 0


def test_include_leaves_parts_out_and_keeps_review_figures(client, shop: Database) -> None:
    _, full = client.get("/products?page_size=5")
    _, lean = client.get("/products?page_size=5&include=category,inventory")
    for whole, part in zip(full.json["items"], lean.json["items"], strict=True):
        assert "reviews" not in part
        assert {k: v for k, v in whole.items() if k != "reviews"} == part
    assert lean.json["items"][1]["review_count"] == 2 and lean.json["items"][1]["average_rating"] == 2.5
    _, bare = client.get("/products?page_size=5&include=category")
    assert set(bare.json["items"][0]) == {"id", "name", "description", "price", "category_id", "is_active",
                                          "created_at", "category", "average_rating", "review_count"}
    assert len(lean.body) < len(full.body)


def test_reviews_endpoint_pages_newest_first(client, db: Database) -> None:
    product, other = db.product(), db.product()
    moments = [datetime(2024, 1, 1) + timedelta(hours=h % 5) for h in range(23)]
    for moment in moments:
        db.execute("INSERT INTO reviews (product_id, user_id, rating, created_at) VALUES ($1, 1, 3, $2)", product, moment)
    db.review(other, 5)
    expected = [row["id"] for row in db.fetch(
        "SELECT id FROM reviews WHERE product_id = $1 ORDER BY created_at DESC, id DESC", product)]
    seen, url, pages = [], f"/products/{product}/reviews?page_size=4", []
    while url:
        _, response = client.get(url)
        assert response.status == 200, response.text
        assert response.json["total"] == 23 and response.json["page_size"] == 4
        seen.extend(review["id"] for review in response.json["items"])
        pages.append(response.json["page"])
        next_cursor = response.headers.get("x-next-cursor")
        url = f"/products/{product}/reviews?page_size=4&cursor={next_cursor}" if next_cursor else None
    assert seen == expected and pages == [1, 2, 3, 4, 5, 6]

    _, first = client.get(f"/products/{product}/reviews?page_size=4")
    _, response = client.get(f"/products/{other}/reviews?cursor={first.headers['x-next-cursor']}")
    assert response.status == 422
    _, response = client.get("/products/99999/reviews")
    assert response.status == 404 and response.json == {"detail": "Product not found"}
    _, response = client.get(f"/products/{product}/reviews?page_size=0")
    assert response.status == 422
