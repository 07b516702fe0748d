"""fleet_counts: the overview's device counts per org unit, kept by the snapshot job.

Counting a million devices live took 2-4.5 s per overview on PostgreSQL; the `daily-snapshot` job
now counts them once per `maintenance_interval` into this table (one row per org unit, replaced
whole), and the overview reads it when the fleet is larger than `overview_live_limit`
(server/store/counts.py). A new table only: no existing row is rewritten.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_counts",
        sa.Column("org_unit_id", sa.Integer(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("compliant", sa.Integer(), nullable=False),
        sa.Column("not_compliant", sa.Integer(), nullable=False),
        sa.Column("error", sa.Integer(), nullable=False),
        sa.Column("unknown", sa.Integer(), nullable=False),
        sa.Column("fresh_compliant", sa.Integer(), nullable=False),
        sa.Column("fresh_not_compliant", sa.Integer(), nullable=False),
        sa.Column("fresh_error", sa.Integer(), nullable=False),
        sa.Column("fresh_unknown", sa.Integer(), nullable=False),
        sa.Column("never_seen", sa.Integer(), nullable=False),
        sa.Column("never_seen_new", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Integer(), nullable=False),
        sa.Column("stale_after", sa.Double(), nullable=False),
        sa.Column("computed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("org_unit_id", name=op.f("pk_fleet_counts")),
    )


def downgrade() -> None:
    op.drop_table("fleet_counts")
