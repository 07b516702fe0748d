"""Access decisions (issue 14): current decision per device, admin exceptions, network credentials
(VPN certificates and device TLS certificates), gate tokens and the decisions gates report back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_state",
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.Column("causes", sa.Text(), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("org_unit_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_access_state_device_id_devices")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_access_state")),
    )
    op.create_index(op.f("ix_access_state_decision_since"), "access_state", ["decision", "since"])
    op.create_table(
        "access_exceptions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"],
                                name=op.f("fk_access_exceptions_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_exceptions")),
    )
    op.create_index(op.f("ix_access_exceptions_device_id_expires_at"), "access_exceptions",
                    ["device_id", "expires_at"])
    op.create_table(
        "network_credentials",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("not_after", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"],
                                name=op.f("fk_network_credentials_device_id_devices")),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_network_credentials")),
    )
    op.create_index(op.f("ix_network_credentials_device_id"), "network_credentials", ["device_id"])
    op.create_table(
        "gate_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.Column("last_used_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_gate_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_gate_tokens_token_hash")),
    )
    op.create_table(
        "gate_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("gate", sa.String(length=200), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("org_unit_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_decisions")),
    )
    op.create_index(op.f("ix_gate_decisions_device_id_at"), "gate_decisions", ["device_id", "at"])
    op.create_index(op.f("ix_gate_decisions_at"), "gate_decisions", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_gate_decisions_at"), table_name="gate_decisions")
    op.drop_index(op.f("ix_gate_decisions_device_id_at"), table_name="gate_decisions")
    op.drop_table("gate_decisions")
    op.drop_table("gate_tokens")
    op.drop_index(op.f("ix_network_credentials_device_id"), table_name="network_credentials")
    op.drop_table("network_credentials")
    op.drop_index(op.f("ix_access_exceptions_device_id_expires_at"), table_name="access_exceptions")
    op.drop_table("access_exceptions")
    op.drop_index(op.f("ix_access_state_decision_since"), table_name="access_state")
    op.drop_table("access_state")
