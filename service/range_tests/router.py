"""/v1/range-tests: run an LR range test remotely and read its curve and suggestions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from service.deps import SessionDep, SettingsDep, TenantDep
from service.range_tests import ops
from service.range_tests.plots import render
from service.range_tests.schemas import RangeTestCreate, RangeTestOut
from service.schemas import ERROR_RESPONSES, Page

router = APIRouter(prefix="/v1/range-tests", tags=["range tests"],
                   responses=ERROR_RESPONSES)


@router.post("", status_code=201)
def create_range_test(body: RangeTestCreate, session: SessionDep, settings: SettingsDep,
                      tenant: TenantDep,
                      idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key",
                                                                    max_length=200)] = None
                      ) -> RangeTestOut:
    """Queue a range test; a retry with the same Idempotency-Key returns the same one."""
    return RangeTestOut.of(ops.create(session, settings, tenant, body, idempotency_key))


@router.get("")
def list_range_tests(session: SessionDep, tenant: TenantDep,
                     offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Page:
    """Range tests, newest first: status, request, suggestions and bounds, without the sweeps
    (read one range test for its curves)."""
    rows, total = ops.list_tests(session, tenant, offset, limit)
    return Page(items=rows, total=total, offset=offset, limit=limit)


@router.get("/{test_id}")
def get_range_test(test_id: str, session: SessionDep, tenant: TenantDep) -> RangeTestOut:
    """Status, raw and smoothed curves, suggestions and per-family bounds."""
    return RangeTestOut.of(ops.get(session, tenant, test_id))


@router.post("/{test_id}/cancel")
def cancel_range_test(test_id: str, session: SessionDep, tenant: TenantDep) -> RangeTestOut:
    """Cancel: a queued test now, a running one's worker stops it (409 when finished)."""
    return RangeTestOut.of(ops.cancel(session, ops.get(session, tenant, test_id)))


@router.delete("/{test_id}", status_code=204)
def delete_range_test(test_id: str, session: SessionDep, tenant: TenantDep) -> None:
    """Delete a finished or cancelled range test (409 while queued or running)."""
    ops.delete(session, ops.get(session, tenant, test_id))


@router.get("/{test_id}/plot.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "A PNG image."}})
def get_range_test_plot(test_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    """The smoothed loss against the LR (log axis) with the suggestions marked (409 until the
    test has succeeded)."""
    return Response(render(ops.get(session, tenant, test_id)), media_type="image/png",
                    headers={"Cache-Control": "no-store"})
