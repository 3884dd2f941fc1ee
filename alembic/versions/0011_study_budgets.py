"""studies: budgets (epochs trained, finished trials since the best improved, why a study
stopped early)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch copy of `studies` would drop it, and with it (foreign keys
    # with ON DELETE CASCADE) every trial and job of every study.
    op.add_column("studies", sa.Column("epochs_run", sa.Integer(), nullable=False,
                                       server_default="0"))
    op.add_column("studies", sa.Column("since_best", sa.Integer(), nullable=False,
                                       server_default="0"))
    op.add_column("studies", sa.Column("stop_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    for column in ("stop_reason", "since_best", "epochs_run"):
        op.drop_column("studies", column)
