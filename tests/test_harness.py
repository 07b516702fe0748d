"""The test harness itself: the throwaway PostgreSQL cluster, and CI's refusal of skipped tests that
need PostgreSQL, root, a network namespace or the browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchmarks.loopback import pg_reachable, scratch_database, throwaway_cluster

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.postgres
def test_throwaway_cluster_serves_databases_and_leaves_nothing_behind() -> None:
    # Under the system's temporary directory: pytest's tmp_path is 0700 root, out of the postgres user's reach.
    tmp_path = Path(tempfile.mkdtemp(prefix="tp-harness-"))
    tmp_path.chmod(0o755)
    try:
        _cluster_round_trip(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _cluster_round_trip(tmp_path: Path) -> None:
    with throwaway_cluster(tmp_path) as admin_url:
        port = sa.engine.make_url(admin_url).port
        assert port != 5432
        [root] = list(tmp_path.iterdir())
        assert (root / "sockets" / f".s.PGSQL.{port}").exists(), "the cluster has its own socket directory"
        with scratch_database(admin_url) as url:
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t (x int)")
                conn.exec_driver_sql("INSERT INTO t VALUES (42)")
                assert conn.exec_driver_sql("SELECT x FROM t").scalar() == 42
            engine.dispose()
    assert not pg_reachable(admin_url), "the cluster still answers after the block"
    assert list(tmp_path.iterdir()) == [], "the cluster's directory was left behind"


SAMPLE = '''
import pytest

@pytest.mark.postgres
def test_needs_postgres():
    pytest.skip("PostgreSQL not reachable at 127.0.0.1:1")

def test_needs_root():
    pytest.skip("needs root to create network namespaces")

def test_other_skip():
    pytest.skip("this machine runs a display server")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_passes():
    pass
'''


def _run_sample(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    postgres: x\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider",
                           "-rA", "test_sample.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_ci_fails_a_run_whose_postgres_or_root_tests_skipped(tmp_path: Path) -> None:
    done = _run_sample(tmp_path, "true")
    assert done.returncode == 1, done.stdout
    assert "FAILED test_sample.py::test_needs_postgres" in done.stdout
    assert "FAILED test_sample.py::test_needs_root" in done.stdout
    assert "CI=true: this test must run in CI (needs: postgres)" in done.stdout
    assert "SKIPPED [1] test_sample.py" in done.stdout and "display server" in done.stdout
    assert "2 failed, 1 passed, 1 skipped, 1 xfailed" in done.stdout


def test_outside_ci_the_same_tests_only_skip(tmp_path: Path) -> None:
    done = _run_sample(tmp_path, None)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in done.stdout


def test_ci_fails_a_module_skipped_at_import_for_the_browser(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text('import pytest\npytest.importorskip("selenium_absent_module")\n'
                                             'def test_page():\n    pass\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider",
                           "test_sample.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout
    assert "must run in CI" in done.stdout
