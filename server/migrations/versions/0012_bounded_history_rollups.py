"""Bounded history and trend rollups: transitions partitioned by month on PostgreSQL, daily rollups
per org unit x rule.

- PostgreSQL: `transitions` is rebuilt as a table partitioned by month on `at` (native range
  partitioning, one DEFAULT partition for times no month covers), so retention drops whole months
  (server/store/retention.py). Rows, ids (the sequence moves over), indexes, the foreign key and the
  constraint names are kept; the primary key and the unique constraint gain `at`, which PostgreSQL
  requires of a partitioned table. Everything happens in the migration's one transaction: a failure
  leaves the old table as it was. SQLite keeps the plain table (retention deletes in batches).
- The unique key of `transitions` becomes (device_id, rule_id, seq, at) on both databases.
- `daily_rule_stats`: one row per day x org unit x rule (status counts, new failures, fixes, median
  time to fix). It replaces the JSON column `daily_stats.rules`, whose per-rule counts are moved here.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import op

from server.store import retention

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_STATUS_COLUMNS = {"pass": "passing", "warn": "warning", "fail": "failing", "error": "errors",
                   "not_applicable": "not_applicable"}


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for spec in retention.PARTITIONED:
            if sa.inspect(conn).has_table(spec.table) and not retention.is_partitioned(conn, spec.table):
                retention.create_partitioned_copy(conn, spec)
    else:
        # Same unique key as PostgreSQL's partitioned table (which must hold `at`); SQLite copies the table.
        with op.batch_alter_table("transitions") as batch:
            batch.drop_constraint("uq_transitions_device_id_rule_id_seq", type_="unique")
            batch.create_unique_constraint("uq_transitions_device_id_rule_id_seq_at",
                                           ["device_id", "rule_id", "seq", "at"])
    rollups = op.create_table(
        "daily_rule_stats",
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("org_unit_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("passing", sa.Integer(), nullable=False),
        sa.Column("warning", sa.Integer(), nullable=False),
        sa.Column("failing", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("not_applicable", sa.Integer(), nullable=False),
        sa.Column("new_failures", sa.Integer(), nullable=False),
        sa.Column("fixed", sa.Integer(), nullable=False),
        sa.Column("fix_seconds_median", sa.Double(), nullable=True),
        sa.Column("computed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "org_unit_id", "day", name=op.f("pk_daily_rule_stats")),
        sqlite_with_rowid=False,
    )
    rows = []
    for day, org_unit_id, rules, computed_at in conn.execute(
            sa.text("SELECT day, org_unit_id, rules, computed_at FROM daily_stats")):
        try:
            per_rule = json.loads(rules)
        except ValueError:
            continue
        for rule_id, statuses in per_rule.items() if isinstance(per_rule, dict) else ():
            counts = {column: int(statuses.get(status, 0)) for status, column in _STATUS_COLUMNS.items()}
            rows.append({"day": day, "org_unit_id": org_unit_id, "rule_id": str(rule_id)[:200], **counts,
                         "new_failures": 0, "fixed": 0, "fix_seconds_median": None,
                         "computed_at": computed_at or time.time()})
    if rows:
        op.bulk_insert(rollups, rows)
    with op.batch_alter_table("daily_stats") as batch:
        batch.drop_column("rules")


def downgrade() -> None:
    with op.batch_alter_table("daily_stats") as batch:
        batch.add_column(sa.Column("rules", sa.Text(), nullable=False, server_default="{}"))
    op.drop_table("daily_rule_stats")
