"""The collector's tables (SQLAlchemy Core). Alembic migrations in server/migrations create exactly these.

Times are epoch seconds (double precision) everywhere: the same on SQLite and PostgreSQL, cheap to
compare and index. Device ids are UUID strings chosen by the collector and never reused, so a device id
names one key pair forever (re-enrolment makes a new device; see docs/collector.md).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
})

Time = sa.Double

# Device lifecycle: active devices report; revoked and replaced ones are refused.
DEVICE_ACTIVE = "active"
DEVICE_REVOKED = "revoked"
DEVICE_REPLACED = "replaced"
DEVICE_STATES = (DEVICE_ACTIVE, DEVICE_REVOKED, DEVICE_REPLACED)
# A device's compliance summary (agent.policy.summarize) or "unknown" before its first report.
COMPLIANCE_STATES = ("compliant", "not_compliant", "error", "unknown")
RESULT_STATUSES = ("pass", "warn", "fail", "not_applicable", "error")
ROLES = ("admin", "viewer")

org_units = sa.Table(
    "org_units", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    # Policy id (policies.policy_id) assigned to this org unit; NULL = the default policy.
    sa.Column("policy_id", sa.String(200), nullable=True),
    sa.Column("created_at", Time, nullable=False),
)

policies = sa.Table(
    "policies", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy_id", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    # The canonical JSON text of the whole policy document; never updated (versions are immutable).
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.UniqueConstraint("policy_id", "version"),
)

# Small server-wide values: the default policy id, the schema of the server key.
server_settings = sa.Table(
    "server_settings", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

enroll_tokens = sa.Table(
    "enroll_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    # The first characters of the token, so an operator can tell tokens apart without the secret.
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=False),
    sa.Column("uses_allowed", sa.Integer, nullable=True),  # NULL = unlimited until expiry
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Index(None, "org_unit_id", "created_at"),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # DEVICE_STATES
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("machine_id", sa.String(200), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    # Lower-cased copies: prefix search that an index can answer on both databases.
    sa.Column("hostname_lc", sa.String(255), nullable=False),
    sa.Column("serial", sa.String(200), nullable=False),
    sa.Column("serial_lc", sa.String(200), nullable=False),
    sa.Column("username", sa.String(200), nullable=False),
    sa.Column("username_lc", sa.String(200), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("os_name", sa.String(200), nullable=False),
    sa.Column("os_version", sa.String(100), nullable=False),
    sa.Column("agent_version", sa.String(50), nullable=True),
    sa.Column("enrolled_at", Time, nullable=False),
    sa.Column("enroll_token_id", sa.Integer, sa.ForeignKey("enroll_tokens.id"), nullable=True),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("replaced_by", sa.String(36), nullable=True),
    sa.Column("replaces", sa.String(36), nullable=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_seen", Time, nullable=True),  # when the collector last accepted a report
    sa.Column("last_report_at", Time, nullable=True),  # the created_at of that report
    sa.Column("last_raw_report_at", Time, nullable=True),  # when a raw payload was last kept (sampling)
    sa.Column("compliance", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("compliance_since", Time, nullable=True),
    sa.Column("fail_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("warn_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
    # Rules where the agent's own status differed from the collector's in the last evaluation.
    sa.Column("disagreements", sa.Integer, nullable=False, server_default="0"),
    sa.Column("policy_ref", sa.String(300), nullable=True),  # "id@version" the last report was evaluated with
    sa.Column("agent_policy_ref", sa.String(300), nullable=True),  # "id@version" the agent says it ran
    # SHA-256 of what the last evaluation depended on (policy version, platform, facts, the agent's own
    # statuses and version), and until when its results hold: the first moment a failing rule leaves its
    # grace period (NULL: for ever).
    sa.Column("eval_hash", sa.String(64), nullable=True),
    sa.Column("eval_valid_until", Time, nullable=True),
    # Index-backed listing: each allow-listed sort column leads an index, scoped lists use org_unit_id first.
    sa.Index(None, "machine_id"),
    sa.Index(None, "state", "last_seen"),
    sa.Index(None, "state", "hostname_lc"),
    sa.Index(None, "state", "serial_lc"),
    sa.Index(None, "state", "username_lc"),
    sa.Index(None, "state", "compliance", "last_seen"),
    sa.Index(None, "state", "fail_count"),
    sa.Index(None, "state", "enrolled_at"),
    sa.Index(None, "state", "platform", "last_seen"),
    sa.Index(None, "org_unit_id", "state", "last_seen"),
    sa.Index(None, "org_unit_id", "state", "hostname_lc"),
    sa.Index(None, "org_unit_id", "state", "compliance"),
    # Dashboard (migration 0003): the overview's one pass per org unit, and the OS filter.
    sa.Index(None, "state", "org_unit_id", "compliance", "last_seen", "enrolled_at"),
    sa.Index(None, "state", "os_name"),
)

check_state = sa.Table(
    "check_state", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("rule_id", sa.String(200), primary_key=True),
    sa.Column("check_id", sa.String(100), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # RESULT_STATUSES, the collector's verdict
    sa.Column("since", Time, nullable=False),  # when this status started (created_at of the report)
    # When the rule started failing (fail, or warn within grace); NULL while it passes. Feeds grace periods.
    sa.Column("failing_since", Time, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),  # JSON {"key", "params"} to render the reason in en/fr/ar
    sa.Column("evidence", sa.Text, nullable=False),  # JSON list of strings
    sa.Column("agent_status", sa.String(16), nullable=True),  # what the agent itself concluded
    sa.Column("updated_at", Time, nullable=False),
    # Copies of the device's org unit and activity so fleet counts per rule need no join.
    sa.Column("org_unit_id", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Index(None, "active", "rule_id", "status", "org_unit_id", "device_id"),
    sa.Index(None, "active", "org_unit_id", "rule_id", "status"),
)

transitions = sa.Table(
    "transitions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("rule_id", sa.String(200), nullable=False),
    sa.Column("check_id", sa.String(100), nullable=False),
    sa.Column("old_status", sa.String(16), nullable=True),  # NULL for the first result of a rule
    sa.Column("new_status", sa.String(16), nullable=False),
    sa.Column("at", Time, nullable=False),  # created_at of the report that showed the change
    sa.Column("recorded_at", Time, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("org_unit_id", sa.Integer, nullable=False),
    # JSON {"key", "params"} to render the reason in en/fr/ar; NULL for rows before migration 0006
    sa.Column("message", sa.Text, nullable=True),
    # With `at` since migration 0012: PostgreSQL partitions this table by month on `at`, and a unique
    # constraint of a partitioned table must hold the partition key (a seq has one created_at anyway).
    sa.UniqueConstraint("device_id", "rule_id", "seq", "at"),
    sa.Index(None, "device_id", "at"),
    sa.Index(None, "at"),
    sa.Index(None, "org_unit_id", "at"),
)

reports = sa.Table(
    "reports", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("report_id", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("received_at", Time, nullable=False),
    sa.Column("compliance", sa.String(16), nullable=False),
    sa.Column("policy_ref", sa.String(300), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the exact signed canonical text
    sa.Column("signature", sa.String(100), nullable=False),
    sa.UniqueConstraint("device_id", "seq"),
    sa.Index(None, "received_at"),
)

daily_stats = sa.Table(
    "daily_stats", metadata,
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    sa.Column("org_unit_id", sa.Integer, primary_key=True),
    sa.Column("devices", sa.Integer, nullable=False),
    sa.Column("compliant", sa.Integer, nullable=False),
    sa.Column("not_compliant", sa.Integer, nullable=False),
    sa.Column("error", sa.Integer, nullable=False),
    sa.Column("unknown", sa.Integer, nullable=False),
    sa.Column("stale", sa.Integer, nullable=False),  # per-rule counts: daily_rule_stats (migration 0012)
    sa.Column("computed_at", Time, nullable=False),
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(200), nullable=False, unique=True),
    # "scrypt$n$r$p$salt_b64$hash_b64" (server.security.hash_password).
    sa.Column("password_hash", sa.String(300), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("disabled_at", Time, nullable=True),
    sa.Column("last_login_at", Time, nullable=True),
)

user_org_units = sa.Table(
    "user_org_units", metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), primary_key=True),
)

# Dashboard sign-in sessions (migration 0005). The cookie carries a random secret; only its SHA-256 is
# stored, so a copy of this table signs nobody in. Sign-out, a password change or disabling the user
# sets revoked_at, which ends the session for every copy of the cookie. Rows are deleted once expired.
web_sessions = sa.Table(
    "web_sessions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("last_seen_at", Time, nullable=False),  # refreshed at most once a minute
    sa.Column("revoked_at", Time, nullable=True),
    # SHA-256 of the user's password hash when the session began: a password changed by any path
    # (even straight in the database) no longer matches, so it ends every older session.
    sa.Column("password_fingerprint", sa.String(64), nullable=False),
    sa.Column("remote_addr", sa.String(64), nullable=True),  # where it was signed in from
    sa.Column("user_agent", sa.String(200), nullable=True),
    sa.Index(None, "user_id", "expires_at"),
    sa.Index(None, "expires_at"),
)

api_tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("last_used_at", Time, nullable=True),
)

# An API token with rows here sees only these org units; without rows it sees the whole fleet.
api_token_org_units = sa.Table(
    "api_token_org_units", metadata,
    sa.Column("token_id", sa.Integer, sa.ForeignKey("api_tokens.id"), primary_key=True),
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), primary_key=True),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),  # "token:<name>", "user:<name>", "cli"
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target", sa.String(300), nullable=True),
    sa.Column("org_unit_id", sa.Integer, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | denied | failed
    sa.Column("details", sa.Text, nullable=False),  # JSON object
    sa.Column("remote_addr", sa.String(64), nullable=True),
    sa.Index(None, "at"),
    sa.Index(None, "org_unit_id", "at"),
    sa.Index(None, "action", "at"),
)

# Trend rollups (migration 0012): per day x org unit x rule, the current-state counts at the day's last
# snapshot and what changed during the day. Kept `rollup_retention` (400 days by default).
# The key leads with the rule: a rule's trend (one org unit or all) is one contiguous key range, and on
# SQLite (WITHOUT ROWID) the rows themselves are stored in key order, so 400 days read no scattered pages.
daily_rule_stats = sa.Table(
    "daily_rule_stats", metadata,
    sa.Column("rule_id", sa.String(200), primary_key=True),
    sa.Column("org_unit_id", sa.Integer, primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    sa.Column("passing", sa.Integer, nullable=False),
    sa.Column("warning", sa.Integer, nullable=False),
    sa.Column("failing", sa.Integer, nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("not_applicable", sa.Integer, nullable=False),
    sa.Column("new_failures", sa.Integer, nullable=False),  # changes to fail during the day
    sa.Column("fixed", sa.Integer, nullable=False),  # changes from fail to anything else during the day
    sa.Column("fix_seconds_median", sa.Double, nullable=True),  # median failing time of those fixes
    sa.Column("computed_at", Time, nullable=False),
    # No index on `day` alone: SQLite walks it to save a sort and then fetches every row apart. The
    # one-day readers (snapshot, dated report, retention) scan this table, which grows with org units x
    # rules x days kept, not with devices (88,000 rows for 20 units, 11 rules and 400 days: ~15 ms).
    sqlite_with_rowid=False,
)
