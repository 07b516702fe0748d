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
DEVICE_PENDING = "pending"  # a re-enrolment of a known machine, waiting for an admin (server/store/enrolment.py)
DEVICE_STATES = (DEVICE_ACTIVE, DEVICE_REVOKED, DEVICE_REPLACED, DEVICE_PENDING)
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
    # report_id of the report accepted as last_seq: a `duplicate` answer carries both, so an agent that lost
    # its counter can tell its own resent report from a new one numbered again (migration 0007).
    sa.Column("last_report_id", sa.String(64), nullable=True),
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
    # The overview's never-seen devices, oldest enrolment first (migration 0013). Partial: it holds only
    # devices that never reported, so finding none costs nothing (the (state, enrolled_at) index walked
    # all 1M devices looking for them: 0.9 s) and ingest touches it once per device, at its first report.
    sa.Index("ix_devices_never_seen", "state", "enrolled_at", postgresql_where=sa.text("last_seen IS NULL"),
             sqlite_where=sa.text("last_seen IS NULL")),
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

# The overview's counts per org unit (migration 0013), replaced whole by the snapshot job; read by the
# overview instead of counting the devices when the fleet is large (server/store/counts.py).
fleet_counts = sa.Table(
    "fleet_counts", metadata,
    sa.Column("org_unit_id", sa.Integer, primary_key=True),
    sa.Column("devices", sa.Integer, nullable=False),  # active devices, by compliance below
    sa.Column("compliant", sa.Integer, nullable=False),
    sa.Column("not_compliant", sa.Integer, nullable=False),
    sa.Column("error", sa.Integer, nullable=False),
    sa.Column("unknown", sa.Integer, nullable=False),
    sa.Column("fresh_compliant", sa.Integer, nullable=False),  # ... of them seen within stale_after
    sa.Column("fresh_not_compliant", sa.Integer, nullable=False),
    sa.Column("fresh_error", sa.Integer, nullable=False),
    sa.Column("fresh_unknown", sa.Integer, nullable=False),
    sa.Column("never_seen", sa.Integer, nullable=False),
    sa.Column("never_seen_new", sa.Integer, nullable=False),  # never seen, enrolled within stale_after
    sa.Column("revoked", sa.Integer, nullable=False),
    sa.Column("stale_after", Time, nullable=False),  # the window the fresh counts used
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
    sa.Index(None, "target", "at"),  # a device page lists the entries about that device
)

# Per org unit: may a re-enrolment of a known machine, with this org unit's token and into the org unit the
# machine is already in, replace the old device at once (no admin approval)? No row: no.
enrolment_settings = sa.Table(
    "enrolment_settings", metadata,
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), primary_key=True),
    sa.Column("replace_within_org_unit", sa.Boolean, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

# What a device's agent told the collector about itself beyond posture (server/device_notices.py):
# `seq_reset` (its sequence counter was behind the collector's and it numbered reports again),
# `reports_dropped` (its outbox lost reports), `cloned_identity` (its key signed a report from another
# machine). Shown on the device page, newest first (migration 0007).
device_notices = sa.Table(
    "device_notices", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", Time, nullable=False),  # when the collector recorded it
    sa.Column("seq", sa.BigInteger, nullable=True),  # the report that carried it
    sa.Column("details", sa.Text, nullable=False),  # JSON object
    sa.Index(None, "device_id", "id"),
)

# --- Noncompliance actions, events and sinks (migration 0009; docs/actions.md) ---------------------

# The ladder per (device, rule) during a failing episode: how many steps fired and when the next is due.
# A row exists only while an episode runs; it is deleted when the rule passes or is exempted.
ladder_state = sa.Table(
    "ladder_state", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("rule_id", sa.String(200), primary_key=True),
    sa.Column("org_unit_id", sa.Integer, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("started_at", Time, nullable=False),  # when the rule started failing (the episode's start)
    sa.Column("steps_fired", sa.Integer, nullable=False),  # how many steps of the ladder fired
    sa.Column("last_action", sa.String(32), nullable=True),  # the action of the last step fired
    sa.Column("next_action", sa.String(32), nullable=True),
    sa.Column("next_at", Time, nullable=True),  # the next step's deadline; NULL when the ladder is done
    sa.Column("ladder", sa.Text, nullable=False),  # JSON [[after_seconds, action], ...] fixed for the episode
    sa.Column("updated_at", Time, nullable=False),
    sa.Index(None, "next_at"),
    sa.Index(None, "org_unit_id", "next_action", "next_at"),
)

# A device is blocked while it has a row here (one per rule whose ladder reached `block`).
device_blocks = sa.Table(
    "device_blocks", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("rule_id", sa.String(200), primary_key=True),
    sa.Column("org_unit_id", sa.Integer, nullable=False),
    sa.Column("since", Time, nullable=False),
    sa.Index(None, "org_unit_id", "since"),
)

# An org unit's own ladder (overrides the policy's `actions`) and the contacts notify_manager e-mails.
org_unit_ladders = sa.Table(
    "org_unit_ladders", metadata,
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), primary_key=True),
    sa.Column("actions", sa.Text, nullable=True),  # JSON {severity: [[after_seconds, action], ...]}; NULL: policy's
    sa.Column("contacts", sa.Text, nullable=False, server_default="[]"),  # JSON list of e-mail addresses
    sa.Column("language", sa.String(8), nullable=False, server_default="en"),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

# Exemptions from a rule for one device or a whole org unit, with a mandatory reason and an expiry.
rule_exceptions = sa.Table(
    "rule_exceptions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.String(200), nullable=False),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=True),
    sa.Column("org_unit_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("ended_at", Time, nullable=True),  # revoked or expired (the expiry job sets it)
    sa.Index(None, "org_unit_id", "rule_id", "ended_at"),
    sa.Index(None, "device_id", "ended_at"),
    sa.Index(None, "ended_at", "expires_at"),
)

# The durable outbox: one row per event, written in the transaction of the change that caused it.
events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("uid", sa.String(36), nullable=False, unique=True),  # idempotency id (webhook-id, syslog MSGID)
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(36), nullable=True),
    sa.Column("org_unit_id", sa.Integer, nullable=True),
    sa.Column("severity", sa.String(16), nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the OCSF-shaped JSON document
    sa.Index(None, "created_at"),
    sa.Index(None, "device_id", "id"),
)

sinks = sa.Table(
    "sinks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # webhook | email | syslog
    sa.Column("config", sa.Text, nullable=False),  # JSON, without secrets
    sa.Column("secret", sa.Text, nullable=True),  # encrypted with the server key (server.actions.secrets)
    sa.Column("filters", sa.Text, nullable=False),  # JSON {event_types, org_unit_ids, min_severity}
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
)

# Delivery state of each event to each sink. Per (sink, device) events go out in id order: only the
# oldest pending one of a device is ever claimed.
deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.ForeignKey("events.id"),
              primary_key=True),
    sa.Column("sink_id", sa.Integer, sa.ForeignKey("sinks.id"), primary_key=True),
    sa.Column("device_key", sa.String(36), nullable=False),  # device id, or "" for fleet-wide events
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Time, nullable=False),
    sa.Column("claimed_until", Time, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", Time, nullable=True),
    sa.Index(None, "sink_id", "state", "device_key", "event_id"),
    sa.Index(None, "sink_id", "state", "event_id"),
)

# -- Access decisions (issue 14, migration 0010) ------------------------------------------------
ACCESS_DECISIONS = ("allow", "deny")
CREDENTIAL_KINDS = ("vpn", "device_tls")

# The current decision per device and since when it holds (updated only when it changes).
access_state = sa.Table(
    "access_state", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("decision", sa.String(8), nullable=False),  # ACCESS_DECISIONS
    sa.Column("since", Time, nullable=False),
    sa.Column("causes", sa.Text, nullable=False),  # JSON list, see server.access.Cause
    sa.Column("warnings", sa.Text, nullable=False),  # JSON list
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("org_unit_id", sa.Integer, nullable=False),
    sa.Index(None, "decision", "since"),
)

# Admin exceptions: allow a device despite failing rules, with a reason, until an expiry (audited).
access_exceptions = sa.Table(
    "access_exceptions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Index(None, "device_id", "expires_at"),
)

# Certificates a device connects with (SHA-256 of the DER certificate, lower-case hex).
network_credentials = sa.Table(
    "network_credentials", metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # CREDENTIAL_KINDS
    sa.Column("label", sa.String(300), nullable=False),  # e.g. the certificate's subject
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("not_after", Time, nullable=True),  # device TLS certificates: when they expire
    sa.Index(None, "device_id"),
)

# Bearer tokens of gates: they fetch decisions and report what they decided, nothing else (a table
# of their own, so no gate token can ever authenticate to the admin API).
gate_tokens = sa.Table(
    "gate_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("last_used_at", Time, nullable=True),
)

# What the gates decided (reported back): who was let in, refused or disconnected, and why.
gate_decisions = sa.Table(
    "gate_decisions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),  # when the gate decided
    sa.Column("received_at", Time, nullable=False),
    sa.Column("gate", sa.String(200), nullable=False),  # the gate token's name
    sa.Column("device_id", sa.String(36), nullable=True),  # NULL: a certificate linked to no device
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # connect | reauth | disconnect
    sa.Column("outcome", sa.String(8), nullable=False),  # allow | deny
    sa.Column("reason", sa.String(64), nullable=False),  # stable code
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("org_unit_id", sa.Integer, nullable=True),
    sa.Index(None, "device_id", "at"),
    sa.Index(None, "at"),
)

# Token buckets shared by the collector nodes on PostgreSQL (server/ratelimit.SharedRateLimiter): request
# limits per client address and device, failed sign-ins per address and user name. UNLOGGED on
# PostgreSQL (migration 0011): a crash may refill the buckets, nothing else is lost.
rate_buckets = sa.Table(
    "rate_buckets", metadata,
    sa.Column("scope", sa.String(16), primary_key=True),  # ip | device | login-ip | login-user
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("capacity", sa.Double, nullable=False),  # the limit's burst, its refill per second and
    sa.Column("rate", sa.Double, nullable=False),  # the last take's cost, as the taking node set them
    sa.Column("cost", sa.Double, nullable=False),
    sa.Column("tokens", sa.Double, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("granted", sa.Boolean, nullable=False),  # whether the last take succeeded (RETURNING reads it)
    sa.Index(None, "updated_at"),
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

# Changes (transitions rows) per UTC day of `at` x org unit x new status, for the report's period counts.
# The snapshot job adds the history rows up to rollup_marks.last_id (server/store/change_counts.py).
daily_status_changes = sa.Table(
    "daily_status_changes", metadata,
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD (UTC) of the change's `at`
    sa.Column("org_unit_id", sa.Integer, primary_key=True),
    sa.Column("new_status", sa.String(16), primary_key=True),
    sa.Column("changes", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

# The same per UTC hour, for the partial days at a period's ends.
hourly_status_changes = sa.Table(
    "hourly_status_changes", metadata,
    sa.Column("hour", sa.String(13), primary_key=True),  # YYYY-MM-DD HH (UTC) of the change's `at`
    sa.Column("org_unit_id", sa.Integer, primary_key=True),
    sa.Column("new_status", sa.String(16), primary_key=True),
    sa.Column("changes", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

# How far a rollup has read an append-only table: the last id counted (one row per rollup).
rollup_marks = sa.Table(
    "rollup_marks", metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
