"""devices.eval_valid_until: how long an evaluation whose failures are inside a grace period stays true.

A failing rule inside its grace period is a ``warn`` until ``failing_since + grace``; until the earliest
such moment, the same inputs give the same results, so the unchanged-report shortcut (eval_hash) applies
to those devices too instead of re-evaluating every report.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("eval_valid_until", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("eval_valid_until")
