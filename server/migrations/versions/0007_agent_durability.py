"""Agent durability: devices.last_report_id and the device_notices table.

A `duplicate` answer carries the device's last accepted seq and that report's id, so an agent whose
counter went backwards (state restored from a backup, deleted) can tell a report the collector never saw
and number it again. device_notices keeps what agents report about themselves (seq resets, dropped
reports, a cloned identity) for the device page.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable without a default: no row is rewritten. NULL until the device's next accepted report.
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("last_report_id", sa.String(64), nullable=True))
    op.create_table(
        "device_notices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_device_notices_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_notices")),
    )
    op.create_index(op.f("ix_device_notices_device_id_id"), "device_notices", ["device_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_device_notices_device_id_id"), table_name="device_notices")
    op.drop_table("device_notices")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_report_id")
