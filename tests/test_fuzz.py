"""Fuzzing every operation of the service's own OpenAPI document with schemathesis.

No 5xx, every status and body as documented, every 4xx in the contract's error shape. Bounded by
FUZZ_EXAMPLES per operation so it fits CI; raise it to fuzz harder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import product
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from benchmarks.servers import free_port, start_sanic, stop
from catalog.seed import seed
from tests.conftest import create_database, drop_database

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
# Schema-valid requests may still be refused with 422 where the contract says so: an unknown category_id,
# min_price above max_price, a search with no letters, a cursor made for another query.


@pytest.fixture(scope="module")
def fuzzed_server(postgres_server_url: str, redis_url: str, tmp_path_factory) -> Iterator[str]:
    import asyncio

    url = create_database(postgres_server_url, "catalog_fuzz")
    asyncio.run(seed(url, 300, progress=False))
    port, log = free_port(), tmp_path_factory.mktemp("fuzz") / "server.log"
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "CACHE_PREFIX": f"fuzz{port}"}
    server = start_sanic(env, port, log, workers=1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)
        drop_database(postgres_server_url, url)
        assert "Traceback" not in Path(log).read_text(), "the server logged a traceback while fuzzed"


def test_every_operation_answers_as_documented(fuzzed_server: str) -> None:
    # Driven by hand rather than by schemathesis's pytest plugin, which does not run under pytest 9.
    api = schemathesis.openapi.from_url(f"{fuzzed_server}/docs/openapi.json")
    # Valid requests (positive) and requests that break the document (negative: wrong types, out of range).
    calls: dict[str, int] = {}
    failures: list[str] = []
    for result, mode in product(api.get_all_operations(), (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            response = case.call_and_validate(base_url=fuzzed_server, excluded_checks=[positive_data_acceptance])
            calls[f"{operation.label} {mode.value}"] = calls.get(f"{operation.label} {mode.value}", 0) + 1
            if 400 <= response.status_code < 500:
                detail = response.json()["detail"]
                assert isinstance(detail, str) or all(set(item) == {"loc", "msg", "type"} for item in detail)

        try:
            fuzz()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to break in a parameterless GET
        except Exception as error:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label} ({mode.value}): {error}")
    print(f"fuzzed {sum(calls.values())} requests over {len(calls)} operations: {calls}")
    assert not failures, "\n\n".join(failures)
