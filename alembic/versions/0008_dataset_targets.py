"""datasets: task (class ids or float targets) and target shape

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Every existing dataset holds class ids: task "classes", target_shape []. A dataset of float
targets has no num_classes, so that column becomes nullable. The downgrade refuses while any
dataset of float targets exists: the old schema cannot describe one, and deleting a tenant's
data silently is not a downgrade's call.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # The server defaults fill the existing rows; then they go, as in the models (the
    # application always writes both columns).
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task", sa.String(length=16), nullable=False,
                                      server_default="classes"))
        batch_op.add_column(sa.Column("target_shape", JSON, nullable=False,
                                      server_default=sa.text("'[]'")))
        batch_op.alter_column("num_classes", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.alter_column("task", existing_type=sa.String(length=16), server_default=None)
        batch_op.alter_column("target_shape", existing_type=JSON,
                              server_default=None)


def downgrade() -> None:
    targets = op.get_bind().execute(sa.text(
        "SELECT tenant, name FROM datasets WHERE task <> 'classes' ORDER BY tenant, name"
    )).all()
    if targets:
        names = ", ".join(f"{tenant}/{name}" for tenant, name in targets[:10])
        raise RuntimeError(
            f"Cannot downgrade below revision 0008: {len(targets)} uploaded dataset(s) hold "
            f"float targets, which the older schema cannot describe ({names}). Delete them "
            "first (DELETE /v1/datasets/{name}), then downgrade.")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("target_shape")
        batch_op.drop_column("task")
        batch_op.alter_column("num_classes", existing_type=sa.Integer(), nullable=False)
