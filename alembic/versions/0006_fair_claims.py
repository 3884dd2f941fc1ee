"""jobs: tenant and claimed_at, for claims that take turns across tenants

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

import service.db
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", service.db.UTCDateTime(timezone=True),
                                      nullable=True))
    # Every existing job belongs to its study's or its range test's tenant.
    op.execute("UPDATE jobs SET tenant = (SELECT tenant FROM studies "
               "WHERE studies.id = jobs.study_id) WHERE study_id IS NOT NULL")
    op.execute("UPDATE jobs SET tenant = (SELECT tenant FROM range_tests "
               "WHERE range_tests.id = jobs.range_test_id) WHERE range_test_id IS NOT NULL")
    op.execute("UPDATE jobs SET tenant = 'local' WHERE tenant IS NULL")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("tenant", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index("ix_jobs_state_tenant_created", ["state", "tenant", "created_at"],
                              unique=False)
        batch_op.create_index("ix_jobs_tenant_claimed", ["tenant", "claimed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_claimed")
        batch_op.drop_index("ix_jobs_state_tenant_created")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("tenant")
