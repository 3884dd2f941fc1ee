"""trials: what each trial trained on (Keras backend and version, device, precision, XLA)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy: that would cascade-delete every curve point).
    op.add_column("trials", sa.Column("provenance", JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("trials", "provenance")
