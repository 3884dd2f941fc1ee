"""What unfinished work uses: the run specs of a tenant's queued and running studies and range
tests (what deleting a dataset or a model must not pull from under them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch.spec import RunSpec
from service.range_tests.models import RangeTest
from service.studies.models import Study

ACTIVE = ("queued", "running")


def active_specs(session: Session, tenant: str) -> list[tuple[str, str, RunSpec]]:
    """(kind, id, spec) of each unfinished study and range test of the tenant. Bounded: the
    active limits (LRSEARCH_MAX_ACTIVE_STUDIES, ..._RANGE_TESTS) cap how many there are."""
    out: list[tuple[str, str, RunSpec]] = []
    for study_id, spec in session.execute(select(Study.id, Study.spec).where(
            Study.tenant == tenant, Study.status.in_(ACTIVE))):
        out.append(("study", study_id, RunSpec.from_stored(spec)))
    for test_id, spec, request in session.execute(select(
            RangeTest.id, RangeTest.spec, RangeTest.request).where(
            RangeTest.tenant == tenant, RangeTest.status.in_(ACTIVE))):
        out.append(("range test", test_id, RunSpec.from_stored(spec or request)))
    return out
