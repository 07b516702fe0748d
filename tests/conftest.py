"""Suite-wide hooks: under CI=true a skipped PostgreSQL, root, namespace or browser test fails the run."""

from tests.ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 (hooks)
