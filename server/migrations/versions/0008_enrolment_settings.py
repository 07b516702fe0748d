"""enrolment_settings (per org unit, whether a re-enrolment may replace a known machine without approval)
and an index on audit_log(target, at).

Re-enrolling a machine id that has an active device now needs the old device key's signature, an admin's
approval (the new device waits in state ``pending``) or this setting (same org unit only). Devices in
state ``pending`` need no schema change (``devices.state`` is free text of 16 characters).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolment_settings",
        sa.Column("org_unit_id", sa.Integer(), sa.ForeignKey("org_units.id"), primary_key=True),
        sa.Column("replace_within_org_unit", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    # The device page lists the enrolment entries (replacements, conflicts, approvals) about that device.
    op.create_index(op.f("ix_audit_log_target_at"), "audit_log", ["target", "at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_target_at"), table_name="audit_log")
    op.drop_table("enrolment_settings")
