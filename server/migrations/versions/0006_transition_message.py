"""transitions.message: the structured message of a status change, so history shows in en/fr/ar.

check_state already kept the engine's message (key and parameters) beside the English reason; the
history kept the English text only. Rows written before this revision stay NULL and the dashboard
shows their English reason.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding it rewrites no row on SQLite or PostgreSQL.
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transitions") as batch:
        batch.drop_column("message")
