"""A worker claims only while the database's schema is its own code's (the Alembic revision of
`lrsearch migrate`): a real worker process against a real database whose revision is set to
one the code does not have, then to an older one, does not touch the queued job and says why;
once the revision is restored it claims the job and finishes it, without a restart."""

from __future__ import annotations

import time
from typing import Any

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


def test_a_claim_that_waited_on_a_migration_is_rolled_back(
        client: TestClient, engine: Engine, settings: Any, postgres_url: str) -> None:
    """The race the second revision read closes, provoked: on PostgreSQL a migration holds
    a lock on `jobs` while it changes the schema; a worker's claim, its first revision read
    already done, waits on that lock; the migration records its new revision and commits;
    the claim then goes on, and only the revision read after it sees the new schema. The
    claim must be rolled back (the job stays queued), and claimed once the revision is the
    code's again."""
    import threading

    from worker.loop import Worker

    if engine.dialect.name != "postgresql":
        # SQLite: the claim's transaction is BEGIN IMMEDIATE, so a migration's write and
        # a claim never interleave; the race exists only on PostgreSQL
        return
    head = migrations.head()
    sid = submit(client, n_trials=1, epochs=1, baseline={"enabled": False})
    worker = Worker(settings, name="racer")
    result: dict[str, Any] = {}
    with engine.connect() as migration:
        migration.execute(text("LOCK TABLE jobs IN EXCLUSIVE MODE"))  # as ALTER TABLE would
        thread = threading.Thread(target=lambda: result.update(claim=worker._claim_next()))
        thread.start()

        def claim_waits() -> bool:
            # a connection of its own: pg_stat_activity is a snapshot per transaction
            with engine.connect() as c:
                return bool(c.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE '%FROM jobs%FOR UPDATE%'")).scalar())

        wait_for(claim_waits, 30, "the worker's claim to wait on the migration's lock")
        migration.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = :r"),
                          {"r": FUTURE})
        migration.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert result["claim"] is None
    assert job_states(engine, sid) == [("queued", 0)]
    assert not worker.schema_ok
    stamp(engine, head)
    claim = worker._claim_next()
    assert claim is not None and claim.study_id == sid
    worker.engine.dispose()
    worker.heartbeat_engine.dispose()
