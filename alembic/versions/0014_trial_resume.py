"""trials: the epoch a trial last resumed from (its worker stopped or died after a checkpoint)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy: that would cascade-delete every curve point).
    op.add_column("trials", sa.Column("resumed_from_epoch", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("trials", "resumed_from_epoch")
