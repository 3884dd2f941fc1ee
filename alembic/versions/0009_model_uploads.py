"""uploaded Keras models, what each worker can load (plugins), range tests' run specs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import service.db
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_uploads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("created_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "name"),
    )
    op.add_column("workers", sa.Column("capabilities", JSON, nullable=True))
    op.add_column("range_tests", sa.Column("spec", JSON, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35 has one): a batch table copy would drop and re-create
    # range_tests, and SQLite's foreign keys would delete every job that cascades from it.
    op.drop_column("range_tests", "spec")
    op.drop_column("workers", "capabilities")
    op.drop_table("model_uploads")
