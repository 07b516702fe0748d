"""Which PostgreSQL server the tests use, decided once per test process.

TELEPOSTURE_TEST_PG when set (a configured server: used as is, never replaced); otherwise the server at
127.0.0.1:5432 when it answers; otherwise a throwaway cluster (initdb on a free port, its own socket
directory) started here and stopped when the process exits. So a fresh machine with the Debian package
installed runs every PostgreSQL test instead of skipping it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os

from benchmarks.loopback import DEFAULT_PG_ADMIN_URL, ClusterError, pg_reachable, throwaway_cluster

log = logging.getLogger(__name__)

_clusters = contextlib.ExitStack()
atexit.register(_clusters.close)


@functools.lru_cache(maxsize=1)
def admin_url() -> str:
    configured = os.environ.get("TELEPOSTURE_TEST_PG")
    if configured:
        return configured
    if pg_reachable(DEFAULT_PG_ADMIN_URL):
        return DEFAULT_PG_ADMIN_URL
    try:
        return _clusters.enter_context(throwaway_cluster())
    except ClusterError as exc:
        # The PostgreSQL tests then skip, and under CI=true a skipped PostgreSQL test fails the run.
        log.warning("no PostgreSQL for the tests: %s", exc)
        return DEFAULT_PG_ADMIN_URL
