"""curve_points.metrics (every logged metric per epoch, a JSON mapping) and trials.seed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

The four fixed columns (loss, val_loss, metric = accuracy, val_metric = val_accuracy) move into
`metrics` under Keras' names; a NULL column leaves its name out, a non-finite value (NaN on
PostgreSQL) becomes null. The data is moved in Python, in batches, with bound parameters: one
code path for SQLite and PostgreSQL, and no NaN ever reaches a JSON value. The downgrade fills
the columns back from the mapping (other metrics are dropped with it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

import service.db
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The old column -> the metric's Keras name.
COLUMNS = {"loss": "loss", "val_loss": "val_loss", "metric": "accuracy",
           "val_metric": "val_accuracy"}
BATCH = 1000

points = sa.table("curve_points", sa.column("trial_id", sa.Integer()),
                  sa.column("epoch", sa.Integer()),
                  sa.column("metrics", service.db.JSONType),
                  *(sa.column(name, sa.Float()) for name in COLUMNS))


def _finite(value: Any) -> float | None:
    """A number as a float; None for NULL, NaN, infinities and anything not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _batches(connection: sa.Connection, columns: Sequence[str]) -> Iterator[Sequence[Any]]:
    """Every curve point's (trial_id, epoch, *columns), BATCH rows at a time, in key order
    (keyset pagination: each batch is read whole before the caller writes)."""
    selected = [points.c.trial_id, points.c.epoch, *(points.c[name] for name in columns)]
    last: tuple[int, int] | None = None
    while True:
        query = sa.select(*selected).order_by(points.c.trial_id, points.c.epoch).limit(BATCH)
        if last is not None:
            query = query.where(sa.or_(points.c.trial_id > last[0],
                                       sa.and_(points.c.trial_id == last[0],
                                               points.c.epoch > last[1])))
        rows = connection.execute(query).all()
        if not rows:
            return
        yield rows
        last = (rows[-1][0], rows[-1][1])


def _by_key() -> sa.Update:
    return points.update().where(points.c.trial_id == sa.bindparam("key_trial"),
                                 points.c.epoch == sa.bindparam("key_epoch"))


def upgrade() -> None:
    with op.batch_alter_table("curve_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("metrics", service.db.JSONType, nullable=True))
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seed", sa.Integer(), nullable=True))

    connection = op.get_bind()
    update = _by_key().values(metrics=sa.bindparam("new_metrics", type_=service.db.JSONType))
    for rows in _batches(connection, list(COLUMNS)):
        connection.execute(update, [
            {"key_trial": trial_id, "key_epoch": epoch,
             "new_metrics": {name: _finite(value)
                             for name, value in zip(COLUMNS.values(), values, strict=True)
                             if value is not None}}
            for trial_id, epoch, *values in rows])

    with op.batch_alter_table("curve_points", schema=None) as batch_op:
        batch_op.alter_column("metrics", existing_type=service.db.JSONType, nullable=False)
        for column in COLUMNS:
            batch_op.drop_column(column)


def downgrade() -> None:
    with op.batch_alter_table("curve_points", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.add_column(sa.Column(column, sa.Float(), nullable=True))

    connection = op.get_bind()
    update = _by_key().values(**{column: sa.bindparam(f"new_{column}", type_=sa.Float())
                                 for column in COLUMNS})
    for rows in _batches(connection, ["metrics"]):
        connection.execute(update, [
            {"key_trial": trial_id, "key_epoch": epoch,
             **{f"new_{column}": _finite((metrics or {}).get(name))
                for column, name in COLUMNS.items()}}
            for trial_id, epoch, metrics in rows])

    with op.batch_alter_table("curve_points", schema=None) as batch_op:
        batch_op.drop_column("metrics")
    # Not in batch mode: on SQLite that copies `trials` and drops the original, and dropping a
    # table with foreign keys on deletes its rows first, cascading to every curve point.
    # SQLite (3.35+) drops a plain column in place.
    op.drop_column("trials", "seed")
