"""studies and trials: the constant-LR baseline and confirmation runs (a trial's role, the
slot of the trial a confirmation run retrains, a study's slots in all and its phase)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy: that would cascade-delete every trial and job).
    op.add_column("studies", sa.Column("n_slots", sa.Integer(), nullable=False,
                                       server_default="0"))
    op.add_column("studies", sa.Column("phase", sa.String(16), nullable=False,
                                       server_default="search"))
    op.execute("UPDATE studies SET n_slots = n_trials")  # studies before: search slots only
    op.add_column("trials", sa.Column("role", sa.String(16), nullable=False,
                                      server_default="search"))
    op.add_column("trials", sa.Column("confirms", sa.Integer(), nullable=True))


def downgrade() -> None:
    # The older schema would take baseline and confirmation slots for search slots (and run
    # them in the search's Optuna study): refuse while any study has them.
    studies = op.get_bind().execute(sa.text(
        "SELECT id FROM studies WHERE n_slots <> n_trials ORDER BY id")).scalars().all()
    if studies:
        raise RuntimeError(
            f"Cannot downgrade below revision 0012: {len(studies)} study(ies) have baseline or "
            f"confirmation slots, which the older schema cannot describe "
            f"({', '.join(studies[:10])}). Delete them first (DELETE /v1/studies/{{id}}), "
            "then downgrade.")
    op.drop_column("trials", "confirms")
    op.drop_column("trials", "role")
    op.drop_column("studies", "phase")
    op.drop_column("studies", "n_slots")
