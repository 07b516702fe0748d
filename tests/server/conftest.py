"""Fixtures: a fresh collector database per test on SQLite and on PostgreSQL, an initialised data
directory, an in-process app client, and a real `teleposture-server serve` process."""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks.collector_sim import SimDevice
from benchmarks.loopback import pg_reachable, scratch_database
from server import cli, security
from server.app import create_app
from server.settings import Settings, load_settings
from server.store import policies as policy_store
from server.store.db import Database
from server.store.schema import metadata
from tests import postgres as test_postgres
from tests.waiting import eventually

# Configured, listening at 5432, or a throwaway cluster started for this test process (tests/postgres.py).
PG_ADMIN_URL = test_postgres.admin_url()


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Full-cost scrypt takes ~0.4 s here; hashes record their own parameters, so tests may use less.
    monkeypatch.setattr(security, "SCRYPT_N", 2 ** 10)


def pg_available() -> bool:
    return pg_reachable(PG_ADMIN_URL)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards)."""
    with scratch_database(PG_ADMIN_URL) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL (the test initialises it)."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'data' / 'teleposture.db'}"
        return
    if not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    with postgres_database() as url:
        yield url


@dataclass(frozen=True)
class Template:
    data_dir: Path
    database_url: str
    admin_token: str


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Template]]:
    """One initialised collector per backend, run once per session; tests get copies of it."""
    made: dict[str, Template] = {}
    stack = contextlib.ExitStack()

    def make(backend: str) -> Template:
        if backend not in made:
            data_dir = tmp_path_factory.mktemp(f"template-{backend}") / "data"
            if backend == "sqlite":
                url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
            else:
                url = stack.enter_context(postgres_database())
            made[backend] = Template(data_dir, url, init_collector(data_dir, url))
        return made[backend]

    yield _TemplateMap(make)  # type: ignore[misc]
    stack.close()


class _TemplateMap:
    def __init__(self, make: Any) -> None:
        self._make = make
        self._rows: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def __getitem__(self, backend: str) -> Template:
        return self._make(backend)

    def rows(self, url: str) -> dict[str, list[dict[str, Any]]]:
        if url not in self._rows:
            self._rows[url] = _all_rows(url)
        return self._rows[url]


def _reset_postgres(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Put a PostgreSQL collector database back to its just-initialised rows (faster than a new database)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        for table in metadata.sorted_tables:
            if rows.get(table.name):
                conn.execute(table.insert(), rows[table.name])
            identity = [c for c in table.primary_key.columns if c.autoincrement is True]
            if identity and rows.get(table.name):
                column = identity[0].name
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
                                     f"(SELECT max({column}) FROM {table.name}))"))
    engine.dispose()


def _all_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {t.name: [dict(r) for r in conn.execute(sa.select(t)).mappings()] for t in metadata.sorted_tables}
    engine.dispose()
    return rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def initialised(request: pytest.FixtureRequest, tmp_path: Path, templates: Any) -> Iterator[Template]:
    """An initialised collector (data dir and database) for one test, in the template's state.

    SQLite: a copy of the template's data directory. PostgreSQL: the session's database, emptied and
    refilled with the template's rows (tests run one at a time within a session; other sessions use
    their own tp_<random> database)."""
    if request.param == "postgres" and not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    template = templates[request.param]
    data_dir = tmp_path / "data"
    shutil.copytree(template.data_dir, data_dir)
    if request.param == "sqlite":
        yield Template(data_dir, f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}", template.admin_token)
        return
    _reset_postgres(template.database_url, templates.rows(template.database_url))
    yield Template(data_dir, template.database_url, template.admin_token)


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


@dataclass
class Collector:
    """An initialised collector (data dir + database) and an in-process client for its app."""

    data_dir: Path
    database_url: str
    admin_token: str
    client: TestClient
    db: Database
    settings: Settings
    devices: list[SimDevice] = field(default_factory=list)

    def cli(self, *args: str) -> tuple[int, str, str]:
        return run_cli("--data-dir", str(self.data_dir), "--database-url", self.database_url, *args)

    def enroll_token(self, org_unit: str = "Finance", uses: int | None = None, expires: str = "1d") -> str:
        args = ["token", "create", "--org-unit", org_unit, "--expires", expires]
        if uses is not None:
            args += ["--uses", str(uses)]
        code, out, err = self.cli(*args)
        assert code == 0, err
        return out.strip().splitlines()[-1]

    def api_token(self, role: str = "viewer", org_units: tuple[str, ...] = (), name: str = "t") -> str:
        args = ["api-token", "create", "--name", name, "--role", role]
        for unit in org_units:
            args += ["--org-unit", unit]
        code, out, err = self.cli(*args)
        assert code == 0, err
        return out.strip().splitlines()[-1]

    def enroll(self, device: SimDevice | None = None, token: str | None = None, org_unit: str = "Finance"
               ) -> SimDevice:
        device = device or SimDevice.numbered(len(self.devices) + 1)
        response = self.client.post("/api/v1/enroll", json=device.enroll_body(token or self.enroll_token(org_unit)))
        assert response.status_code == 200, response.text
        device.device_id = response.json()["device_id"]
        self.devices.append(device)
        return device

    def send(self, *envelopes: dict[str, str]) -> dict[str, Any]:
        response = self.client.post("/api/v1/reports", json={"envelopes": list(envelopes)})
        assert response.status_code == 200, response.text
        return response.json()

    def admin(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return self.client.request(method, "/api/v1/admin" + path, headers=headers, **kwargs)


def init_collector(data_dir: Path, database_url: str) -> str:
    code, out, err = run_cli("--data-dir", str(data_dir), "--database-url", database_url, "init")
    assert code == 0, err
    return out.strip().splitlines()[-1]


def collector_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "database_url": database_url, "access_log": False,
                              "maintenance_interval": 3600, "actions_interval": 3600}
    values.update(overrides)
    return load_settings(values, environ={})


@contextlib.contextmanager
def in_process(template: Template, **overrides: Any) -> Iterator[Collector]:
    # server.store.policies caches parsed versions by primary key for the whole process, and every test
    # database reuses the same keys: start each collector with an empty cache.
    with policy_store._parsed_lock:
        policy_store._parsed.clear()
    settings = collector_settings(template.data_dir, template.database_url, **overrides)
    db = Database(template.database_url)
    with TestClient(create_app(settings, db=db)) as client:
        yield Collector(data_dir=template.data_dir, database_url=template.database_url,
                        admin_token=template.admin_token, client=client, db=db, settings=settings)
    db.dispose()


@pytest.fixture
def collector(initialised: Template) -> Iterator[Collector]:
    with in_process(initialised) as running:
        yield running


def settle_jobs(collector: Collector) -> None:
    """On PostgreSQL a node runs each singleton job (retention, daily snapshot) as soon as it takes the job's
    lock, which can be seconds into the test, once the previous test's collector let it go: wait for those
    first runs, so that none prunes or counts in the middle of what the test measures (the next runs are
    maintenance_interval away). On SQLite the first run waits a whole interval."""
    if collector.db.is_postgres:
        cluster = collector.client.app.state.ctx.cluster
        eventually(lambda: all(cluster.runs(name) >= 1 for name in cluster.job_names()), timeout=20)


def snapshot(db: Database, exclude: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every collector table (sorted), to prove a refused request changed nothing."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.read() as conn:
        for table in metadata.sorted_tables:
            # rate_buckets counts requests (PostgreSQL), refused ones included: not data a request changes.
            if table.name in exclude or table.name == "rate_buckets":
                continue
            rows = conn.execute(sa.select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
