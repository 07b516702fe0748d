"""Schema, settings and secrets: the pieces under the API."""

from __future__ import annotations

import io
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server import security
from server.ratelimit import RateLimiter
from server.settings import SettingsError, insecure_reasons, load_settings, parse_duration
from server.store import accounts, maintenance, migrate, retention
from server.store import db as db_module
from server.store.db import Database
from server.store.schema import metadata, reports
from tests.server.conftest import Collector


def _not_a_partition(name: str | None, kind: str, parents: dict[str, str | None]) -> bool:
    # Monthly partitions (PostgreSQL) are created by the retention job, not declared in the schema.
    table = name if kind == "table" else parents.get("table_name")
    return not (table is not None and retention.is_partition_name(table))


def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert migrate.status(db).current is None
        migrate.upgrade(db)
        status = migrate.status(db)
        assert status.up_to_date and status.current == migrate.head_revision()
        with db.read() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": _not_a_partition})
            assert compare_metadata(context, metadata) == []
    finally:
        db.dispose()


def test_settings_precedence_and_validation(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('[collector]\nport = 9000\nstale_after = "3d"\nmax_batch = 50\n')
    env = {"TELEPOSTURE_PORT": "9100", "TELEPOSTURE_CONFIG": str(config), "TELEPOSTURE_MAX_BATCH": "60"}
    settings = load_settings({"port": 9200, "data_dir": tmp_path}, environ=env)
    assert settings.port == 9200 and settings.max_batch == 60 and settings.stale_after == 3 * 86400
    assert load_settings({}, environ=env).port == 9100
    assert settings.resolved_database_url.endswith("/teleposture.db")
    (tmp_path / "bad.toml").write_text("port = [")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, environ={"TELEPOSTURE_CONFIG": str(tmp_path / "bad.toml")})
    with pytest.raises(SettingsError, match="port"):
        load_settings({"port": 70000, "data_dir": tmp_path}, environ={})
    with pytest.raises(SettingsError, match="stale_after"):
        load_settings({"stale_after": "soon", "data_dir": tmp_path}, environ={})
    with pytest.raises(SettingsError, match="unknown_thing|extra"):
        load_settings({"unknown_thing": 1, "data_dir": tmp_path}, environ={})
    assert [parse_duration(v) for v in (90, "90s", "15m", "12h", "7d", "2w")] == \
        [90, 90, 900, 43200, 604800, 1209600]


def test_insecure_settings_are_named(tmp_path: Path) -> None:
    loopback = load_settings({"data_dir": tmp_path}, environ={})
    assert insecure_reasons(loopback) == []
    exposed = load_settings({"data_dir": tmp_path, "host": "0.0.0.0"}, environ={})  # noqa: S104
    assert any("without TLS" in r for r in insecure_reasons(exposed))
    proxied = load_settings({"data_dir": tmp_path, "host": "10.0.0.5", "behind_tls_proxy": True}, environ={})
    assert insecure_reasons(proxied) == []
    half_tls = load_settings({"data_dir": tmp_path, "tls_certfile": tmp_path / "c.pem"}, environ={})
    assert any("both" in r for r in insecure_reasons(half_tls))


def test_passwords_and_tokens() -> None:
    stored = security.hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert security.verify_password("correct horse battery", stored)
    assert not security.verify_password("correct horse batterY", stored)
    assert security.hash_password("correct horse battery") != stored, "a fresh salt per hash"
    assert not security.verify_password("x", "scrypt$bad") and not security.verify_password("x", "md5$1$2$3$4$5")
    token = security.new_token(security.API_TOKEN_PREFIX)
    assert token.startswith("tpa_") and len(token) > 40 and security.token_hash(token) != token


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.take("a") == 0 for _ in range(60))
    wait = limiter.take("a")
    assert 0.9 < wait <= 1.0 and limiter.take("b") == 0
    now[0] += 1.0
    assert limiter.take("a") == 0
    assert RateLimiter(0).take("x") == 0


def test_daily_stats_and_report_retention(collector: Collector) -> None:
    device = collector.enroll()
    collector.send(device.report())
    collector.send(device.report(posture=replace(device.posture, firewall_enabled=False)))
    now = time.time()
    with collector.db.write() as conn:
        day = maintenance.snapshot_daily_stats(conn, now=now, stale_after=86400)
        maintenance.snapshot_daily_stats(conn, now=now, stale_after=86400)  # idempotent
    trend = collector.admin("GET", "/trend", params={"days": 2}).json()
    assert trend == [{"day": day, "devices": 1, "compliant": 1, "not_compliant": 0, "error": 0, "unknown": 0,
                      "stale": 0}]
    with collector.db.read() as conn:
        kept = conn.execute(sa.select(sa.func.count()).select_from(reports)).scalar()
    assert kept == 2
    with collector.db.write() as conn:
        assert retention.prune_reports(conn, retention=3600, now=now) == 0
        assert retention.prune_reports(conn, retention=3600, now=now + 7200) == 2
    assert collector.admin("GET", f"/devices/{device.device_id}").json()["reports"] == []


def test_user_create_and_sign_in(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    code, out, err = collector.cli("user", "create", "--username", "amina", "--role", "viewer",
                                   "--org-unit", "HR", "--password-stdin")
    assert code == 0 and "password:" not in out, err
    code, _, err = collector.cli("user", "create", "--username", "amina")
    assert code == 2 and "already exists" in err
    match = accounts.verify_user_password(collector.db, "amina", "a long enough passphrase")
    assert accounts.verify_user_password(collector.db, "amina", "wrong passphrase!!") is None
    assert accounts.verify_user_password(collector.db, "nobody", "a long enough passphrase") is None
    assert match is not None
    with collector.db.write() as conn:
        principal = accounts.complete_sign_in(conn, match)
        hr = accounts.org_unit_id(conn, "HR")
    assert principal is not None and principal.role == "viewer" and principal.scope.org_unit_ids == {hr}


def test_driver_transaction_commits_or_drops_driver_and_core_writes_together(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    db = Database(database_url)
    table = sa.table("driver_probe", sa.column("id"), sa.column("v"))
    insert = f"INSERT INTO driver_probe (id, v) VALUES ({'%(id)s, %(v)s' if db.is_postgres else ':id, :v'})"
    try:
        with db.write() as conn:
            conn.execute(sa.text("CREATE TABLE driver_probe (id INTEGER PRIMARY KEY, v VARCHAR(10))"))
        with db.write_driver() as transaction:
            transaction.cursor.execute(insert, {"id": 1, "v": "driver"})
            transaction.conn.execute(table.insert().values(id=2, v="core"))
        with pytest.raises(RuntimeError):
            with db.write_driver() as transaction:
                transaction.conn.execute(table.insert().values(id=3, v="core"))
                transaction.cursor.execute(insert, {"id": 4, "v": "driver"})
                raise RuntimeError("abandoned")
        with pytest.raises(sa.exc.IntegrityError):  # the driver's own error, as SQLAlchemy raises it
            with db.write_driver() as transaction:
                transaction.cursor.execute(insert, {"id": 5, "v": "driver"})
                transaction.cursor.execute(insert, {"id": 1, "v": "again"})
        if not db.is_postgres:
            # Another process holds the write lock beyond the busy timeout: an OperationalError (a 503).
            holder = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(sa.exc.OperationalError, match="locked"):
                    with db.write_driver() as transaction:
                        transaction.cursor.execute(insert, {"id": 6, "v": "driver"})
            finally:
                holder.execute("ROLLBACK")
                holder.close()
        with db.write_driver() as transaction:  # the pool's connections are all usable again
            transaction.cursor.execute(insert, {"id": 7, "v": "driver"})
        with db.read() as conn:
            rows = sorted(tuple(row) for row in conn.execute(sa.select(table.c.id, table.c.v)))
        assert rows == [(1, "driver"), (2, "core"), (7, "driver")]
    finally:
        db.dispose()


def test_autocommit_driver_statements_commit_alone_and_the_pool_gets_transactions_back(database_url: str) -> None:
    db = Database(database_url, pool_size=1)
    insert = f"INSERT INTO autocommit_probe (id) VALUES ({'%(id)s' if db.is_postgres else ':id'})"
    try:
        with db.write() as conn:
            conn.execute(sa.text("CREATE TABLE autocommit_probe (id INTEGER PRIMARY KEY)"))
        with pytest.raises(sa.exc.IntegrityError):
            with db.write_driver(autocommit=True) as transaction:
                transaction.cursor.execute(insert, {"id": 1})
                transaction.cursor.execute(insert, {"id": 1})  # fails alone: the first stays
        with pytest.raises(RuntimeError):
            transaction.conn  # noqa: B018 - no Core statements beside autocommit ones
        with pytest.raises(RuntimeError):
            with db.write_driver() as transaction:  # the same pooled connection: a transaction again
                transaction.cursor.execute(insert, {"id": 2})
                raise RuntimeError("abandoned")
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT id FROM autocommit_probe")).scalars().all() == [1]
    finally:
        db.dispose()
