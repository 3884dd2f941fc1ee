"""Prometheus metrics at /metrics (text exposition format).

Two sources:
- this API process: request latency, a histogram by method, route template and status, kept in
  memory (one registry per app; with several API replicas, Prometheus scrapes each);
- the database, read at scrape time, so every API replica reports the same totals whatever
  process did the work: jobs by kind and state, studies by status, trials finished by state,
  the trial duration histogram and the workers alive (presence rows fresher than a lease).

The database figures are totals over every tenant (counts only, no names or ids). Deleting a
study removes its trials, so `lrsearch_trials_finished_total` can go down after a delete;
Prometheus' rate() treats that as a counter reset.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.auth import ops as auth
from service.config import Settings
from service.jobs.models import JOB_STATES, Job
from service.studies.models import STUDY_STATES, Study, Trial
from service.workers import ops as workers

DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                    21600.0, 86400.0)
FINISHED_TRIAL_STATES = ("complete", "pruned", "failed", "cancelled")


class DatabaseCollector(Collector):
    """Reads the queue, the studies, the trials and the workers at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings

    def collect(self) -> Iterator[Any]:
        with self.sessions() as session:
            jobs = GaugeMetricFamily("lrsearch_jobs", "Jobs (trial slots, range tests, dataset "
                                     "registrations) by kind and state.", labels=["kind", "state"])
            counts = {(k, s): n for k, s, n in session.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state))}
            for kind in ("trial", "range_test", "dataset"):
                for state in JOB_STATES:
                    jobs.add_metric([kind, state], counts.get((kind, state), 0))
            yield jobs

            studies = GaugeMetricFamily("lrsearch_studies", "Studies by status.",
                                        labels=["status"])
            by_status = dict(session.execute(select(Study.status, func.count())
                                             .group_by(Study.status)).all())
            for status in STUDY_STATES:
                studies.add_metric([status], by_status.get(status, 0))
            yield studies

            finished = CounterMetricFamily("lrsearch_trials_finished", "Trials finished, by "
                                           "final state.", labels=["state"])
            by_state = dict(session.execute(select(Trial.state, func.count())
                                            .group_by(Trial.state)).all())
            for state in FINISHED_TRIAL_STATES:
                finished.add_metric([state], by_state.get(state, 0))
            yield finished

            yield self._durations(session)

            yield GaugeMetricFamily("lrsearch_workers_alive", "Worker processes whose presence "
                                    "row is fresher than one lease.",
                                    value=workers.alive(session, self.settings.lease_seconds))

    @staticmethod
    def _durations(session: Session) -> HistogramMetricFamily:
        """One query: a cumulative count per bucket, the count and the sum."""
        d = Trial.duration_s
        columns = [func.sum(case((d <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        row = session.execute(select(*columns, func.count(d), func.coalesce(func.sum(d), 0.0))
                              .where(Trial.finished_at.is_not(None), d.is_not(None))).one()
        total = int(row[-2] or 0)
        buckets = [(f"{b:g}", int(n or 0)) for b, n in zip(DURATION_BUCKETS, row[:-2],
                                                              strict=True)]
        buckets.append(("+Inf", total))
        return HistogramMetricFamily("lrsearch_trial_duration_seconds",
                                     "Wall time of finished trials (claim to recorded result).",
                                     buckets=buckets, sum_value=float(row[-1] or 0.0))


class RequestLatency:
    """ASGI middleware timing every HTTP request by its route template (never the raw path,
    so ids do not explode the label set)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start)


def make_registry() -> tuple[CollectorRegistry, Histogram]:
    """This app's registry and its latency histogram; the app's lifespan registers the
    DatabaseCollector once its engine exists."""
    registry = CollectorRegistry()
    latency = Histogram("lrsearch_http_request_duration_seconds", "API request latency.",
                        ["method", "route", "status"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
    return registry, latency


def endpoint(request: Request) -> Response:
    """GET /metrics. With LRSEARCH_METRICS_TOKEN set, the scraper must send it as a Bearer
    token (Prometheus: `authorization: {credentials: ...}`). Without a token it is open only
    while the server runs without keys (local mode) or LRSEARCH_METRICS_PUBLIC=true: once a
    key exists, the totals are not for anyone who can reach the port."""
    settings: Settings = request.app.state.settings
    if settings.metrics_token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), settings.metrics_token.encode()):
            return _unauthorized("/metrics needs `Authorization: Bearer "
                                 "<LRSEARCH_METRICS_TOKEN>`.")
    elif not settings.metrics_public and _keys_exist(request):
        return _unauthorized("/metrics is closed: this server has API keys and no metrics "
                             "token. Set LRSEARCH_METRICS_TOKEN (scrapers send it as "
                             "`Authorization: Bearer <token>`), or LRSEARCH_METRICS_PUBLIC=true "
                             "to leave it open.")
    return Response(generate_latest(request.app.state.metrics_registry),
                    media_type=CONTENT_TYPE_LATEST)


def _keys_exist(request: Request) -> bool:
    with request.app.state.sessions() as session:
        return auth.any_key_ever(session)


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse(errors.body("unauthorized", detail, field="Authorization"),
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
