"""rate_buckets: rate limits and sign-in failure limits counted in the database, shared by every node.

Unlogged on PostgreSQL: the buckets are rewritten on nearly every request and worth nothing after a
crash (PostgreSQL empties an unlogged table then: every bucket starts full again). SQLite has one node
and keeps its buckets in memory; the table exists there too, so both schemas stay the same.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefixes = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "rate_buckets",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("capacity", sa.Double(), nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("cost", sa.Double(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_rate_buckets")),
        prefixes=prefixes,
    )
    op.create_index(op.f("ix_rate_buckets_updated_at"), "rate_buckets", ["updated_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_buckets_updated_at"), table_name="rate_buckets")
    op.drop_table("rate_buckets")
