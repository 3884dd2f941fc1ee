"""datasets registered from files the workers read: status, source, registration facts;
registration jobs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Every existing dataset is an upload, registered when it was stored: status "ready". A dataset
reference is registered by a `dataset` job (`jobs.dataset_id`; deleting the dataset deletes its
job). The downgrade refuses while any dataset reference exists: the old schema cannot describe
one.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import service.db
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch copy of `datasets` would drop it, and with it (through the
    # foreign key below) every job that references it, once one exists.
    op.add_column("datasets", sa.Column("status", sa.String(length=16), nullable=False,
                                        server_default="ready"))
    op.add_column("datasets", sa.Column("source", JSON, nullable=True))
    op.add_column("datasets", sa.Column("registered", JSON, nullable=True))
    op.add_column("datasets", sa.Column("error", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("updated_at", service.db.UTCDateTime(timezone=True),
                                        nullable=True))
    # SQLite: a batch copy of `jobs` (nothing references it, so no cascade fires) gives it a
    # named table-level foreign key, which an inline ADD COLUMN ... REFERENCES would not.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_jobs_dataset_id_datasets", "datasets", ["dataset_id"],
                                    ["id"], ondelete="CASCADE")
        batch_op.create_index("ix_jobs_dataset_id", ["dataset_id"])  # the cascade's lookup


def downgrade() -> None:
    refs = op.get_bind().execute(sa.text(
        "SELECT tenant, name FROM datasets WHERE source IS NOT NULL ORDER BY tenant, name"
    )).all()
    if refs:
        names = ", ".join(f"{tenant}/{name}" for tenant, name in refs[:10])
        raise RuntimeError(
            f"Cannot downgrade below revision 0010: {len(refs)} dataset reference(s) exist, "
            f"which the older schema cannot describe ({names}). Delete them first "
            "(DELETE /v1/datasets/{name}), then downgrade.")
    op.execute("DELETE FROM jobs WHERE kind = 'dataset'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_dataset_id")
        batch_op.drop_constraint("fk_jobs_dataset_id_datasets", type_="foreignkey")
        batch_op.drop_column("dataset_id")
    for column in ("updated_at", "error", "registered", "source", "status"):
        op.drop_column("datasets", column)
