"""Local helpers shared by the benchmarks and the tests that use real processes and databases: a free
loopback port, a `teleposture-server serve` process, a throwaway PostgreSQL database."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
SERVER_BIN = REPO / ".venv" / "bin" / "teleposture-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve(data_dir: Path, database_url: str, *extra: str, env: Optional[dict[str, str]] = None,
          start_timeout: float = 30.0) -> Iterator[ServerProcess]:
    """`teleposture-server serve` on a free loopback port (``extra``: more serve flags, ``env``: more
    environment), answering /api/v1/health, until the block ends; its output goes to a log beside
    ``data_dir``."""
    import httpx  # here, not at the top: the agent footprint benchmark imports free_port and measures its RSS

    port = free_port()
    log_path = data_dir.parent / f"serve-{port}.log"
    environ = {**os.environ, "TELEPOSTURE_ACCESS_LOG": "false", **(env or {})}
    command = [str(SERVER_BIN) if SERVER_BIN.exists() else sys.executable, *([] if SERVER_BIN.exists() else
               ["-m", "server.cli"]), "--data-dir", str(data_dir), "--database-url", database_url, "serve",
               "--host", "127.0.0.1", "--port", str(port), *extra]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(url, port, process, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer within {start_timeout:.0f} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str = "tp_") -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``admin_url`` (a role that may create databases):
    its URL, until the block ends, when it is dropped (WITH FORCE: open connections do not keep it)."""
    import sqlalchemy as sa  # here, not at the top: see serve()

    name = prefix + secrets.token_hex(6)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class ClusterError(RuntimeError):
    """A throwaway PostgreSQL cluster could not be created or started."""


def _pg_bindir() -> Optional[Path]:
    """The directory of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def pg_reachable(admin_url: str) -> bool:
    import sqlalchemy as sa  # here, not at the top: see serve()

    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextlib.contextmanager
def throwaway_cluster(base_dir: Optional[Path] = None, start_timeout: float = 60.0) -> Iterator[str]:
    """A new PostgreSQL cluster (initdb) listening on a free loopback port with its own socket
    directory, trust authentication for the ``postgres`` role: its admin URL until the block ends, when
    the server is stopped and its directory removed. As root, the server runs as the ``postgres``
    user (PostgreSQL refuses to run as root), so ``base_dir`` (default: the system's temporary
    directory) must be reachable by that user."""
    import pwd
    import shutil
    import tempfile

    bindir = _pg_bindir()
    if bindir is None:
        raise ClusterError("initdb not found: install PostgreSQL (scripts/setup-dev.sh installs the "
                           "Debian package postgresql)")
    root = Path(tempfile.mkdtemp(prefix=f"tp-pg-{os.getpid()}-", dir=base_dir))
    data, sockets, log_file = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise ClusterError("running as root needs a 'postgres' user to own the cluster") from exc
        root.chmod(0o755)
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*argv: str, timeout: float) -> None:
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ClusterError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions", timeout=120)
        options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-o", options, "-w",
            "-t", str(int(start_timeout)), "start", timeout=start_timeout + 10)
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(root, ignore_errors=True)
