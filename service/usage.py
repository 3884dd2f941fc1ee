"""What unfinished work uses: the run specs of a tenant's studies and range tests that still
have a waiting, queued or running job (what deleting a dataset or a model must not pull from under
them; a cancelled study's trial may still be running to its next epoch boundary)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch.spec import RunSpec
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.studies.models import Study

ACTIVE = ("waiting", "queued", "running")


def active_specs(session: Session, tenant: str) -> list[tuple[str, str, RunSpec]]:
    """(kind, id, spec) of each such study and range test of the tenant. Bounded: the active
    limits (LRSEARCH_MAX_ACTIVE_STUDIES, ..._RANGE_TESTS) cap how many have jobs left."""
    out: list[tuple[str, str, RunSpec]] = []
    studies = select(Study.id, Study.spec).where(
        Study.tenant == tenant,
        Study.id.in_(select(Job.study_id).where(Job.state.in_(ACTIVE))))
    for study_id, spec in session.execute(studies):
        out.append(("study", study_id, RunSpec.from_stored(spec)))
    tests = select(RangeTest.id, RangeTest.spec, RangeTest.request).where(
        RangeTest.tenant == tenant,
        RangeTest.id.in_(select(Job.range_test_id).where(Job.state.in_(ACTIVE))))
    for test_id, spec, request in session.execute(tests):
        out.append(("range test", test_id, RunSpec.from_stored(spec or request)))
    return out
