"""A worker claims only while the database's schema is its own code's (the Alembic revision of
`lrsearch migrate`): a real worker process against a real database whose revision is set to
one the code does not have, then to an older one, does not touch the queued job and says why;
once the revision is restored it claims the job and finishes it, without a restart."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from service import migrations
from tests.worker.conftest import Workers, finished, jobs, study_row, submit, wait_for

FUTURE = "9999_from_a_newer_release"  # a revision none of this code's migrations has
PREVIOUS = "0011"  # an older revision of this code's own history
POLLS = 10  # the job must stay queued this many poll intervals (LRSEARCH_POLL_SECONDS=0.2)


def stamp(engine: Engine, revision: str) -> None:
    """Set the database's recorded revision without running any migration, as a newer
    release's `lrsearch migrate` (or an older database) would leave it."""
    with engine.begin() as c:
        c.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = :r"),
                  {"r": revision})
    assert migrations.current(engine) == revision


def job_states(engine: Engine, study_id: str) -> list[tuple[str, int]]:
    return [(j.state, j.attempt) for j in jobs(engine, study_id)]


def test_a_worker_waits_for_its_schema_and_then_claims(
        client: TestClient, engine: Engine, workers: Workers) -> None:
    head = migrations.head()
    assert PREVIOUS in migrations.known_revisions() and head != PREVIOUS
    sid = submit(client, n_trials=1, epochs=1, baseline={"enabled": False})
    assert job_states(engine, sid) == [("queued", 0)]
    stamp(engine, FUTURE)
    workers.start()

    # The reason is logged at start, naming both revisions and what to do.
    wait_for(lambda: f"found database schema revision {FUTURE}, this code expects {head}"
             in workers.log(0), 120, "the worker to log the schema mismatch")
    assert "upgrade this program" in workers.log(0)
    # The worker is up (its child described what it can load) and polling: still no claim.
    wait_for(lambda: "can load:" in workers.log(0), 120, "the worker's child to start")
    time.sleep(POLLS * 0.2)
    assert job_states(engine, sid) == [("queued", 0)]
    assert workers.procs[0].poll() is None  # waiting, not exited

    # An older database: the advice changes to running the migrations.
    stamp(engine, PREVIOUS)
    wait_for(lambda: f"found database schema revision {PREVIOUS}, this code expects {head}: "
             "run `lrsearch migrate`" in workers.log(0), 30, "the log to name the old revision")
    time.sleep(POLLS * 0.2)
    assert job_states(engine, sid) == [("queued", 0)]
    # Logged when the revision changed, not at every poll.
    assert workers.log(0).count("is not claiming jobs") == 2

    # Migrated: the same process claims the job and finishes the study.
    stamp(engine, head)
    wait_for(lambda: jobs(engine, sid)[0].state != "queued", 60, "the job to be claimed")
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    assert study_row(engine, sid).status == "succeeded"
    assert job_states(engine, sid) == [("done", 1)]
    assert f"database schema at revision {head}, this code's: claiming jobs" in workers.log(0)
    assert workers.procs[0].poll() is None
