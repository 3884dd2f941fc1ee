"""Migration 0007 on a database with data: studies and curves written at the previous schema
(loss, val_loss, metric, val_metric columns) read the same through the API after the upgrade,
in `metrics` and in the deprecated alias fields; the downgrade puts the columns back.

Runs on SQLite and PostgreSQL. The curves hold more points than the migration moves per batch
(1000), so a batch boundary falls inside a trial."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.engine import Engine

from service import migrations
from service.config import Settings
from service.db import make_engine
from service.main import create_app

PREVIOUS = "0006"
STUDY_ID = "0123456789abcdef0123456789abcdef"
TRIALS = 3
EPOCHS = 400  # 1200 points: more than one batch of the migration
NULL_VAL_METRIC = (1, 7)  # (trial slot, epoch) whose val_metric is NULL
NAN_LOSS = (2, 3)  # (trial slot, epoch) whose loss is NaN (PostgreSQL; SQLite stores NULL)


def old_values(slot: int, epoch: int) -> dict[str, float | None]:
    """The four old columns of one point, as the previous schema stored them."""
    values: dict[str, float | None] = {
        "loss": 2.0 / (epoch + 1) + slot, "val_loss": 2.5 / (epoch + 1) + slot,
        "metric": 0.5 + epoch / 1000 - slot / 100, "val_metric": 0.4 + epoch / 1000 - slot / 100}
    if (slot, epoch) == NULL_VAL_METRIC:
        values["val_metric"] = None
    if (slot, epoch) == NAN_LOSS:
        values["loss"] = math.nan
    return values


def expected_metrics(slot: int, epoch: int, keeps_nan: bool) -> dict[str, float | None]:
    """What `metrics` must hold: Keras' names, a NULL left out, a NaN (where the backend kept
    it: PostgreSQL; SQLite stores NULL) as null."""
    names = {"loss": "loss", "val_loss": "val_loss", "metric": "accuracy",
             "val_metric": "val_accuracy"}
    out: dict[str, float | None] = {}
    for column, value in old_values(slot, epoch).items():
        if value is None or (math.isnan(value) and not keeps_nan):
            continue
        out[names[column]] = None if math.isnan(value) else value
    return out


OLD_SPEC = {"families": ["constant"], "dataset": "digits", "dataset_file": None,
            "model": {"name": "mlp", "params": {"hidden": [16]}},
            "optimizer": {"name": "sgd", "params": {}}, "epochs": EPOCHS, "batch_size": 32,
            "n_trials": TRIALS, "metric": "val_accuracy", "direction": "maximize",
            "search_space": {"constant": {"lr": {"low": 0.01, "high": 1.0, "log": True}}},
            "sampler": {"name": "tpe", "seed": None, "grid_points": 5},
            "pruner": {"name": "median"}, "seed": 0, "range_test_id": None}


def seed_previous_schema(engine: Engine) -> None:
    """A finished study with three complete trials and their curves, written with plain SQL
    against the tables as they are at revision 0006 (NaN only where the backend keeps it)."""
    meta = MetaData()
    studies, trials, points = (Table(name, meta, autoload_with=engine)
                               for name in ("studies", "trials", "curve_points"))
    assert {"loss", "val_loss", "metric", "val_metric"} <= set(points.c.keys())
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    values = [0.7, 0.9, 0.8]
    with engine.begin() as c:
        c.execute(studies.insert().values(
            id=STUDY_ID, tenant="local", name="before 0007", status="succeeded",
            request={"family": "constant", "dataset": "digits", "epochs": EPOCHS,
                     "n_trials": TRIALS},
            spec=OLD_SPEC, optuna_study_name=f"local.{STUDY_ID}", n_trials=TRIALS,
            n_queued=0, n_running=0, n_complete=TRIALS, n_pruned=0, n_failed=0,
            n_cancelled=0, best_value=0.9, best_trial_number=1, best_family="constant",
            best_params={"lr": 0.2}, created_at=now, updated_at=now, started_at=now,
            finished_at=now))
        for slot in range(TRIALS):
            trial_id = c.execute(trials.insert().values(
                study_id=STUDY_ID, slot=slot, number=slot, family="constant",
                params={"lr": 0.1 * (slot + 1)}, state="complete", value=values[slot],
                attempt=1, worker="old-worker", steps_per_epoch=7, started_at=now,
                finished_at=now, duration_s=12.5)).inserted_primary_key[0]
            c.execute(points.insert(), [
                {"trial_id": trial_id, "epoch": e, "lr_first": 0.1 * (slot + 1),
                 "lr_last": 0.09 * (slot + 1), "seconds": 0.25 + e / 1000,
                 **old_values(slot, e)} for e in range(EPOCHS)])


def old_columns(engine: Engine) -> dict[tuple[int, int], dict[str, float | None]]:
    """(slot, epoch) -> the four old columns, read back after a downgrade."""
    meta = MetaData()
    trials, points = (Table(name, meta, autoload_with=engine)
                      for name in ("trials", "curve_points"))
    query = (select(trials.c.slot, points.c.epoch, points.c.loss, points.c.val_loss,
                    points.c.metric, points.c.val_metric)
             .join(trials, trials.c.id == points.c.trial_id))
    with engine.connect() as c:
        return {(slot, epoch): {"loss": loss, "val_loss": val_loss, "metric": metric,
                                "val_metric": val_metric}
                for slot, epoch, loss, val_loss, metric, val_metric in c.execute(query)}


@pytest.fixture
def old_engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    migrations.upgrade(engine, PREVIOUS)
    yield engine
    engine.dispose()


def assert_epoch(point: dict[str, Any], slot: int, epoch: int, keeps_nan: bool) -> None:
    expected = expected_metrics(slot, epoch, keeps_nan)
    assert point["epoch"] == epoch
    assert point["metrics"] == pytest.approx(expected), (slot, epoch)
    assert point["lr_first"] == pytest.approx(0.1 * (slot + 1))
    assert point["lr_last"] == pytest.approx(0.09 * (slot + 1))
    assert point["seconds"] == pytest.approx(0.25 + epoch / 1000)
    # The deprecated aliases repeat the same numbers under the old names.
    for alias, name in (("loss", "loss"), ("val_loss", "val_loss"), ("metric", "accuracy"),
                        ("val_metric", "val_accuracy")):
        assert point[alias] == pytest.approx(expected.get(name)), (slot, epoch, alias)


def test_curves_written_before_the_migration_read_the_same_after_it_and_after_downgrade(
        settings: Settings, old_engine: Engine) -> None:
    seed_previous_schema(old_engine)
    keeps_nan = old_engine.dialect.name == "postgresql"
    migrations.migrate(settings, old_engine)  # to head, as `lrsearch migrate` does
    assert migrations.current(old_engine) == migrations.head()
    columns = {c["name"] for c in inspect(old_engine).get_columns("curve_points")}
    assert "metrics" in columns and not columns & {"loss", "val_loss", "metric", "val_metric"}

    with TestClient(create_app(settings)) as client:
        for slot in range(TRIALS):
            r = client.get(f"/v1/studies/{STUDY_ID}/trials/{slot}")
            assert r.status_code == 200, r.text
            trial = r.json()
            assert trial["seed"] is None  # not recorded before 0007
            assert [p["epoch"] for p in trial["history"]] == list(range(EPOCHS))
            for point in trial["history"]:
                assert_epoch(point, slot, point["epoch"], keeps_nan)
        nan_slot, nan_epoch = NAN_LOSS
        nan_point = client.get(f"/v1/studies/{STUDY_ID}/trials/{nan_slot}").json()[
            "history"][nan_epoch]
        assert nan_point["loss"] is None and nan_point["metrics"].get("loss") is None
        if keeps_nan:  # PostgreSQL kept the NaN: now a null (JSON has no NaN)
            assert "loss" in nan_point["metrics"]
        null_slot, null_epoch = NULL_VAL_METRIC
        assert "val_accuracy" not in client.get(
            f"/v1/studies/{STUDY_ID}/trials/{null_slot}").json()["history"][null_epoch][
            "metrics"]

        best = client.get(f"/v1/studies/{STUDY_ID}/best")
        assert best.status_code == 200, best.text
        assert best.json()["trial_number"] == 1 and len(best.json()["history"]) == EPOCHS
        for point in best.json()["history"]:
            assert_epoch(point, 1, point["epoch"], keeps_nan)

        # The old study's objective (spec["metric"]) drives the curves plot and the page.
        plot = client.get(f"/v1/studies/{STUDY_ID}/plots/lr_curves.png")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
        page = client.get(f"/ui/studies/{STUDY_ID}")
        assert page.status_code == 200, page.text
        assert "maximize val_accuracy" in page.text
        header = page.text.split("<h3>Its epochs</h3>")[1].split("</tr>")[0]
        assert [h.split("</th>")[0] for h in header.split("<th>")[1:]] == [
            "Epoch", "LR first", "LR last", "loss", "val_loss", "accuracy", "val_accuracy",
            "Seconds"]

    migrations.downgrade(old_engine, PREVIOUS)
    assert migrations.current(old_engine) == PREVIOUS
    assert "seed" not in {c["name"] for c in inspect(old_engine).get_columns("trials")}
    assert "metrics" not in {c["name"] for c in inspect(old_engine).get_columns("curve_points")}
    restored = old_columns(old_engine)
    assert len(restored) == TRIALS * EPOCHS  # no curve point lost on the way down
    for (slot, epoch), got in restored.items():
        want = {k: None if v is not None and math.isnan(v) else v
                for k, v in old_values(slot, epoch).items()}  # a NaN came back as NULL
        assert got == pytest.approx(want), (slot, epoch)
