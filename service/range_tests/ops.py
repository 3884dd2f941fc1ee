"""Range-test use cases."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lrsearch import models, optimizers
from lrsearch.range_test import SweepSettings
from service.config import Settings
from service.datasets.ops import num_classes
from service.datasets.ops import resolve as resolve_dataset
from service.errors import NotFound
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.range_tests.schemas import RangeTestCreate
from service.requests import replay, request_hash, require_at_most


def validate(session: Session, settings: Settings, tenant: str, req: RangeTestCreate
             ) -> str | None:
    """Every check before anything is stored; returns an uploaded dataset's file."""
    require_at_most(("num_iter", req.num_iter, settings.max_num_iter),
                    ("repeats", req.repeats, settings.max_repeats),
                    ("batch_size", req.batch_size, settings.max_batch_size))
    SweepSettings(req.min_lr, req.max_lr, req.num_iter, req.mode, req.diverge_threshold)
    shape, dataset_file = resolve_dataset(session, settings, tenant, req.dataset)
    models.validate(req.model.name, req.model.params, shape,
                    num_classes(session, tenant, req.dataset),
                    max_params=settings.max_model_params)
    optimizers.resolve_params(req.optimizer.name, req.optimizer.params)
    return dataset_file


def create(session: Session, settings: Settings, tenant: str, req: RangeTestCreate,
           idempotency_key: str | None) -> RangeTest:
    raw = req.model_dump(mode="json")
    digest = request_hash(raw)
    found = replay(session, RangeTest, tenant, idempotency_key, digest)
    if found is not None:
        return found
    dataset_file = validate(session, settings, tenant, req)
    test = RangeTest(id=uuid.uuid4().hex, tenant=tenant, status="queued",
                     request={**raw, "dataset_file": dataset_file},
                     idempotency_key=idempotency_key, request_hash=digest)
    session.add(test)
    session.flush()
    session.add(Job(kind="range_test", tenant=tenant, range_test_id=test.id, state="queued"))
    session.flush()
    return test


def get(session: Session, tenant: str, test_id: str) -> RangeTest:
    test = session.get(RangeTest, test_id)
    if test is None or test.tenant != tenant:
        raise NotFound(f"Unknown range test `{test_id}`.", field="range_test_id")
    return test


def list_tests(session: Session, tenant: str, offset: int, limit: int
               ) -> tuple[list[RangeTest], int]:
    where = RangeTest.tenant == tenant
    total = session.scalar(select(func.count()).select_from(RangeTest).where(where)) or 0
    rows = session.scalars(select(RangeTest).where(where).order_by(RangeTest.created_at.desc())
                           .offset(offset).limit(limit)).all()
    return list(rows), total
