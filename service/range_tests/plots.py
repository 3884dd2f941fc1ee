"""A range test's plot as PNG (the fastai-style LR finder picture)."""

from __future__ import annotations

from lrsearch import plots
from lrsearch.errors import redact_paths
from service.errors import Conflict
from service.range_tests.models import RangeTest


def render(test: RangeTest) -> bytes:
    if test.status != "succeeded" or not test.result:
        reason = f": {redact_paths(test.error)}" if test.error else ""
        raise Conflict(f"Range test `{test.id}` is {test.status}{reason}; its plot exists once "
                       "it has succeeded.", field="status")
    req = test.request
    title = (f"LR range test: {req['model']['name']} on {req['dataset']} "
             f"({req['optimizer']['name']})")
    return plots.png(plots.range_test(test.result, title=title))
