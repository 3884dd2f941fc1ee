"""Schemathesis drives every operation of the app's own OpenAPI spec, without a key and with a
valid one: no response may be a server error or break the documented schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from service import migrations
from service.auth import ops as auth
from service.config import Settings
from service.db import make_engine
from service.main import create_app
from tests.fixtures import TEST_HOSTS

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    s = Settings(database_url=f"sqlite:///{folder}/db/lrsearch.db", data_dir=folder / "data",
                 max_epochs=50, max_trials=20, max_preview_steps=20_000,
                 allowed_hosts=TEST_HOSTS)
    engine = make_engine(s.database_url)
    migrations.migrate(s, engine)
    with Session(engine) as session, session.begin():
        _, key = auth.create(session, "fuzz")
    engine.dispose()
    app = create_app(s, anonymous=False)
    app.state.fuzz_key = key
    yield app


def fuzz(app: object, headers: dict[str, str]) -> tuple[int, list[str]]:
    """Run every operation of the app's spec; returns (operations run, failures)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        ran += 1
        cases = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                          operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as e:  # collect, so one report names every broken operation
            failures.append(f"{operation.label}: {type(e).__name__}: {str(e)[:1500]}")
    return ran, failures


@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "valid-key"])
def test_no_operation_fails_or_breaks_its_schema(fuzzed_app: object, with_key: bool) -> None:
    key = fuzzed_app.state.fuzz_key  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {key}"} if with_key else {}
    ran, failures = fuzz(fuzzed_app, headers)
    assert ran >= 20  # every documented operation
    assert not failures, "\n\n".join(failures)
