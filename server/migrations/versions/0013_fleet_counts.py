"""fleet_counts: the overview's device counts per org unit, kept by the snapshot job; an index for
never-seen devices.

Counting a million devices live took 2-4.5 s per overview on PostgreSQL; the `daily-snapshot` job
now counts them once per `maintenance_interval` into this table (one row per org unit, replaced
whole), and the overview reads it when the fleet is larger than `overview_live_limit`
(server/store/counts.py). A new table only: no existing row is rewritten.

Also a partial index on devices (state, enrolled_at) WHERE last_seen IS NULL, for the overview's list of
never-seen devices: without it PostgreSQL walked the (state, enrolled_at) index over the whole fleet
looking for them (0.9 s at 1,000,000 devices when there are none).

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
    op.create_index("ix_devices_never_seen", "devices", ["state", "enrolled_at"],
                    postgresql_where=sa.text("last_seen IS NULL"), sqlite_where=sa.text("last_seen IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_devices_never_seen", table_name="devices")
    op.drop_table("fleet_counts")
