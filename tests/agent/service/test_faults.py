"""Agent durability under the faults laptops really have: the real `teleposture-agent run` against the real
collector process (benchmarks.loopback.serve), one fault each.

Every test ends the same way: the service is stopped, what is left in its outbox is uploaded, and then
every report the agent created (its `cycle` log lines give seq and report_id) is on the collector exactly
once, found by report_id (a report numbered again keeps its report_id), no seq twice, or it is counted as
lost in `dropped_reports`. Per fault the figures (created / delivered / counted lost) are printed (-s).

Faults: a 2 MiB tmpfs filled to the last byte and freed; the file system read-only (remounted while the
service is stopped: Linux refuses a read-only remount while SQLite holds files open for writing);
state.db deleted, emptied, garbage, replaced by a copy from reports ago; the state directory copied to a
machine with another machine id (a mount namespace with its own /etc/machine-id); the clock 2 days ahead
and 2 days behind (the real libfaketime).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from agent import protocol
from agent.service.core import AgentService
from benchmarks.loopback import serve
from tests.agent.service.conftest import agent_env, make_settings
from tests.agent.service.realcollector import AGENT, RealCollector
from tests.waiting import wait_until
from tests.web.conftest import sign_in

pytestmark = pytest.mark.slow

FAST = {"TELEPOSTURE_CHECK_INTERVAL": "1", "TELEPOSTURE_UPLOAD_INTERVAL": "1", "TELEPOSTURE_SPLAY": "0",
        "TELEPOSTURE_UPLOAD_BATCH": "1", "TELEPOSTURE_BACKOFF_BASE": "0.2", "TELEPOSTURE_BACKOFF_CAP": "1",
        "TELEPOSTURE_POLICY_REFRESH_INTERVAL": "3", "TELEPOSTURE_LOG_FORMAT": "json"}
FIGURES: Dict[str, Tuple[int, int, int]] = {}


# -- the collector ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCollector]:
    data = tmp_path_factory.mktemp("faults-collector")
    real = RealCollector(data)  # `teleposture-server init` in data
    database = f"sqlite+pysqlite:///{(data / 'teleposture.db').resolve()}"
    with serve(data, database, env={k: v for k, v in real.env.items() if k.startswith("TELEPOSTURE_")}) as server:
        real.port = server.port
        real.allow_replacement()  # each test enrols this same machine again, from a fresh state directory
        yield real
    for name, (created, delivered, lost) in FIGURES.items():
        print(f"fault {name}: created {created}, delivered {delivered}, counted lost {lost}")


def _collector_rows(collector: RealCollector, device_id: str) -> List[Tuple[int, str, str]]:
    conn = sqlite3.connect(f"file:{collector.data_dir / 'teleposture.db'}?mode=ro", uri=True, timeout=10)
    try:
        return [(int(r[0]), str(r[1]), str(r[2])) for r in conn.execute(
            "SELECT seq, report_id, payload FROM reports WHERE device_id=? ORDER BY id", (device_id,))]
    finally:
        conn.close()


def _notices(collector: RealCollector, device_id: str, kind: str) -> List[dict]:
    conn = sqlite3.connect(f"file:{collector.data_dir / 'teleposture.db'}?mode=ro", uri=True, timeout=10)
    try:
        return [json.loads(r[0]) for r in conn.execute(
            "SELECT details FROM device_notices WHERE device_id=? AND kind=? ORDER BY id", (device_id, kind))]
    finally:
        conn.close()


# -- the agent ---------------------------------------------------------------------------------------------

class Agent:
    """One state directory, its `run` processes (one at a time) and what their logs say they created."""

    def __init__(self, state: Path, logs: Path, recording: Path, prefix: Tuple[str, ...] = ()) -> None:
        self.state = state
        self.logs = logs
        self.recording = recording
        self.prefix = prefix
        self.env = dict(agent_env(state), **FAST)
        self.proc: Optional[subprocess.Popen] = None
        self.runs = 0
        self.extra_created: Dict[str, int] = {}  # reports made by `report --now`

    def enrol(self, collector: RealCollector) -> str:
        done = subprocess.run([AGENT, "enroll", "--server", collector.url, "--token", collector.token(),
                               "--allow-http"], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return str(json.loads((self.state / "identity.json").read_text())["device_id"])

    def start(self) -> None:
        self.runs += 1
        with open(self.logs / f"run-{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen([*self.prefix, AGENT, "run", "--replay", str(self.recording)],
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=log)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, self.log_text()[-3000:]
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("run-*.log")))

    def events(self, name: str) -> List[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                out.append(entry)
        return out

    def created(self) -> Dict[str, int]:
        """report_id -> seq it was created with, from the service's `cycle` log lines."""
        return dict(self.extra_created, **{e["report_id"]: int(e["seq"]) for e in self.events("cycle")})

    def status(self) -> dict:
        done = subprocess.run([AGENT, "status", "--json"], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return dict(json.loads(done.stdout))

    def drain(self) -> None:
        """Upload what the stopped service left queued (the upload job's own code)."""
        service = AgentService(make_settings(self.state, upload_batch=1))
        try:
            outcome = service.upload_pending()
            assert outcome.error is None and outcome.remaining == 0, outcome
        finally:
            service.close()


def _delivered_all(agent: Agent, collector: RealCollector, device_id: str) -> Callable[[], bool]:
    def check() -> bool:
        on_collector = {rid for _, rid, _ in _collector_rows(collector, device_id)}
        created = set(agent.created())
        return bool(created) and created <= on_collector
    return check


def _more_cycles(agent: Agent, count: int) -> Callable[[], bool]:
    start = len(agent.events("cycle"))
    return lambda: len(agent.events("cycle")) >= start + count


def _account(name: str, agent: Agent, collector: RealCollector, device_id: str) -> Tuple[int, int, int]:
    """Every created report on the collector once (by report_id), no seq twice, or counted lost."""
    rows = _collector_rows(collector, device_id)
    seqs = Counter(seq for seq, _, _ in rows)
    assert all(n == 1 for n in seqs.values()), f"a seq stored twice: {[s for s, n in seqs.items() if n > 1]}"
    assert [s for s, _, _ in rows] == sorted(s for s, _, _ in rows), "the collector received seqs out of order"
    ids = Counter(rid for _, rid, _ in rows)
    created = agent.created()
    twice = [rid for rid in created if ids[rid] > 1]
    assert not twice, f"reports stored twice: {twice}"
    missing = [rid for rid in created if ids[rid] == 0]
    counted = max([int(json.loads(p).get("dropped_reports") or 0) for _, _, p in rows] or [0])
    assert len(missing) <= counted, f"{len(missing)} report(s) lost but only {counted} counted: {missing}"
    figures = (len(created), len(created) - len(missing), counted)
    FIGURES[name] = figures
    return figures


@pytest.fixture()
def agent(tmp_path: Path, recording: Path) -> Agent:
    logs = tmp_path / "logs"
    logs.mkdir()
    return Agent(tmp_path / "state", logs, recording)


# -- tmpfs: disk full, read-only ----------------------------------------------------------------------

@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / f"tmpfs-{os.getpid()}-{secrets.token_hex(4)}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)
        subprocess.run(["umount", str(mount)], check=True)


def _fill(mount: Path) -> Path:
    """Fill the file system to the last byte: pages first, then single bytes until ENOSPC."""
    filler = mount / "filler"
    fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert shutil.disk_usage(mount).free == 0
    return filler


def _files(state: Path) -> List[str]:
    return sorted(str(p.relative_to(state)) for p in state.rglob("*"))


def test_disk_full_is_not_corruption_and_the_agent_resumes(collector: RealCollector, agent: Agent,
                                                           tmpfs: Path) -> None:
    agent.state = tmpfs / "state"
    agent.env = dict(agent_env(agent.state), **FAST)
    device_id = agent.enrol(collector)
    agent.start()
    try:
        wait_until(_delivered_all(agent, collector, device_id), 60, "first reports delivered")
        filler = _fill(tmpfs)
        files_when_full = _files(agent.state)
        time.sleep(6)  # several 1 s cycles on a full disk
        assert agent.alive(), agent.log_text()[-3000:]
        status = agent.status()
        assert status["last_error"]["message"].startswith(f"disk full: {agent.state}"), status
        assert status["storage"]["free_bytes"] == 0
        assert _files(agent.state) == files_when_full  # nothing moved aside, no new file
        assert len(agent.events("storage_unavailable")) == 1  # logged once, not once per cycle
        filler.unlink()
        wait_until(_more_cycles(agent, 3), 60, "cycles after space came back")
        assert len(agent.events("storage_recovered")) == 1
        wait_until(_delivered_all(agent, collector, device_id), 60, "every report delivered after space came back")
    finally:
        agent.stop()
    agent.drain()
    assert not list(agent.state.glob("*.corrupt-*"))
    assert agent.status()["last_error"] is None or "disk full" not in agent.status()["last_error"]["message"]
    created, delivered, lost = _account("disk full (2 MiB tmpfs)", agent, collector, device_id)
    assert lost == 0 and delivered == created


def test_read_only_file_system_waits_then_resumes(collector: RealCollector, agent: Agent, tmpfs: Path) -> None:
    agent.state = tmpfs / "state"
    agent.env = dict(agent_env(agent.state), **FAST)
    device_id = agent.enrol(collector)
    agent.start()
    wait_until(_more_cycles(agent, 2), 60, "first cycles")
    agent.stop()
    files = _files(agent.state)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        once = subprocess.run([AGENT, "report", "--now", "--replay", str(agent.recording)], env=agent.env,
                              capture_output=True, text=True, timeout=60)
        assert once.returncode == 4 and "read-only file system" in once.stderr, once.stdout + once.stderr
        status = agent.status()
        assert status["last_error"]["message"] == f"read-only file system: {agent.state}", status
        agent.start()  # the service starts on a read-only disk: it must wait, not exit into a restart loop
        time.sleep(5)
        assert agent.alive(), agent.log_text()[-3000:]
        assert _files(agent.state) == files
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    try:
        wait_until(_more_cycles(agent, 3), 60, "cycles once the file system is writable")
        wait_until(_delivered_all(agent, collector, device_id), 60, "every report delivered")
    finally:
        agent.stop()
    agent.drain()
    created, delivered, lost = _account("read-only file system", agent, collector, device_id)
    assert lost == 0 and delivered == created


# -- state.db lost, emptied, garbage, rolled back ----------------------------------------------------------

def _delete(state: Path, backup: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state / 'state.db'}{suffix}").unlink(missing_ok=True)


def _empty(state: Path, backup: Path) -> None:
    _delete(state, backup)
    (state / "state.db").write_bytes(b"")


def _garbage(state: Path, backup: Path) -> None:
    _delete(state, backup)
    (state / "state.db").write_bytes(os.urandom(8192))


def _restore(state: Path, backup: Path) -> None:
    _delete(state, backup)
    shutil.copy2(backup, state / "state.db")


@pytest.mark.parametrize("fault", [_delete, _empty, _garbage, _restore],
                         ids=["deleted", "emptied", "garbage", "restored-from-backup"])
def test_lost_or_rolled_back_state_db_never_reuses_a_seq(collector: RealCollector, agent: Agent,
                                                          fault: Callable[[Path, Path], None]) -> None:
    device_id = agent.enrol(collector)
    agent.start()
    wait_until(_more_cycles(agent, 2), 60, "first cycles")
    agent.stop()
    backup = agent.state.parent / "state.db.backup"  # a copy from a few reports ago
    shutil.copy2(agent.state / "state.db", backup)
    agent.start()
    wait_until(_more_cycles(agent, 3), 60, "more cycles")
    wait_until(_delivered_all(agent, collector, device_id), 60, "reports delivered before the fault")
    agent.stop()
    counter_before = max(agent.created().values())
    fault(agent.state, backup)
    status = agent.status()  # never a traceback, whatever state.db holds
    assert status["enrolled"] is True
    # `report --now` does not ask for the policy first: its low seq meets the collector's `duplicate`,
    # with another report_id at that seq, and is numbered again instead of being deleted
    once = subprocess.run([AGENT, "report", "--now", "--replay", str(agent.recording)], env=agent.env,
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stdout + once.stderr
    assert "numbered again" in once.stdout, once.stdout
    if fault is _garbage:  # said clearly, once, by the first process that opened it; no traceback
        assert "was unreadable" in once.stderr and "rebuilt" in once.stderr and "Traceback" not in once.stderr
    agent.extra_created[once.stdout.split("report_id ")[1].split()[0]] = 0
    agent.start()
    wait_until(_more_cycles(agent, 4), 60, "cycles after the fault")
    wait_until(_delivered_all(agent, collector, device_id), 60, "every report delivered after the fault")
    agent.stop()
    agent.drain()
    created, delivered, lost = _account(f"state.db {fault.__name__.strip('_')}", agent, collector, device_id)
    assert lost == 0 and delivered == created
    # the collector knows the counter was reset: a seq_reset notice from the agent
    resets = _notices(collector, device_id, "seq_reset")
    assert resets and resets[-1]["to"] > counter_before, resets
    if fault is _garbage:
        assert len(list(agent.state.glob("state.db.corrupt-*"))) == 1


# -- cloned state directory --------------------------------------------------------------------------------

def test_cloned_state_directory_refuses_to_report_and_the_collector_flags_it(
        collector: RealCollector, agent: Agent, tmp_path: Path) -> None:
    device_id = agent.enrol(collector)
    agent.start()
    wait_until(_more_cycles(agent, 2), 60, "first cycles")
    agent.stop()
    clone_state = tmp_path / "clone-state"
    shutil.copytree(agent.state, clone_state)
    machine_id = tmp_path / "other-machine-id"
    machine_id.write_text(secrets.token_hex(16) + "\n")
    # another machine: its own /etc/machine-id, in a mount namespace of its own
    other = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount --bind "{machine_id}" /etc/machine-id && exec "$@"', "sh")
    clone = Agent(clone_state, tmp_path / "clone-logs", agent.recording, prefix=other)
    clone.logs.mkdir()
    once = subprocess.run([*other, AGENT, "report", "--now", "--replay", str(agent.recording)], env=clone.env,
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 4, once.stdout + once.stderr
    assert "enrol this machine" in once.stderr and "--force" in once.stderr
    clone.start()
    agent.start()
    try:
        wait_until(_more_cycles(agent, 3), 60, "cycles of the genuine agent")
        assert clone.alive() and clone.created() == {}
        assert "was enrolled on machine" in clone.status()["last_error"]["message"]
        wait_until(_delivered_all(agent, collector, device_id), 60, "the genuine agent's reports")
    finally:
        clone.stop()
        agent.stop()
    agent.drain()
    created, delivered, lost = _account("cloned state directory (genuine machine)", agent, collector, device_id)
    assert lost == 0 and delivered == created

    # An agent that does not check (an older version) sends with the copied key: refused and flagged.
    service = AgentService(make_settings(clone_state))
    try:
        payload = protocol.build_report(device_id=device_id, seq=10**6, agent_version="0.old", platform="linux",
                                        policy={"id": "x", "version": 1, "digest": "x"}, facts={}, results=[],
                                        extra={"machine_id": machine_id.read_text().strip()})
        envelope = protocol.canonical_json(protocol.seal(service.key, device_id, payload).to_json())
        verdict = service.transport.upload([envelope])[0]
    finally:
        service.close()
    assert verdict.status == "rejected" and "cloned identity" in verdict.reason
    flagged = _notices(collector, device_id, "cloned_identity")
    assert [n["machine_id"] for n in flagged] == [machine_id.read_text().strip()]
    # the security team sees it on the device page of the dashboard
    username = f"analyst{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(18)
    created = subprocess.run([str(Path(AGENT).with_name("teleposture-server")), "user", "create", "--username",
                              username, "--password-stdin"], input=password + "\n", env=collector.env,
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    client = sign_in(collector.url, username, password)
    try:
        page = client.get(f"/devices/{device_id}")
    finally:
        client.close()
    assert page.status_code == 200
    assert "Cloned identity" in page.text and machine_id.read_text().strip() in page.text


# -- clock skew (libfaketime) ------------------------------------------------------------------------------

def _libfaketime() -> str:
    """The multi-threaded libfaketime (the service has threads), from the Debian package faketime.

    Preloaded directly rather than through the `faketime` command, which forks and would take the SIGTERM
    meant for the service. The monotonic clock is left alone, as on a laptop whose wall clock is wrong."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is required: apt-get install faketime"
    return str(found[0])


@pytest.mark.parametrize("offset", ["+2d", "-2d"])
def test_clock_days_off_is_measured_and_corrected(collector: RealCollector, agent: Agent, offset: str) -> None:
    device_id = agent.enrol(collector)
    agent.env.update(LD_PRELOAD=_libfaketime(), FAKETIME=offset, FAKETIME_DONT_FAKE_MONOTONIC="1")
    # first a report made before any answer told the agent the collector's time
    once = subprocess.run([AGENT, "report", "--now", "--replay", str(agent.recording)], env=agent.env,
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stdout + once.stderr
    agent.extra_created[once.stdout.split("report_id ")[1].split()[0]] = 1
    if offset.startswith("+"):  # refused as dated in the future, stamped again and re-signed once: delivered
        assert "stamped again with the collector's time" in once.stderr, once.stderr
    agent.start()
    try:
        wait_until(_more_cycles(agent, 5), 90, "cycles under faketime")
        wait_until(_delivered_all(agent, collector, device_id), 60, "every report delivered")
    finally:
        agent.stop()
    # read what the service measured under faketime before the test's own drain, which runs on the real clock
    # and, if the service stopped with a report still queued, measures (truthfully) its own zero skew
    measured = agent.status()["clock_skew_seconds"]
    agent.drain()
    created, delivered, lost = _account(f"clock {offset}", agent, collector, device_id)
    assert lost == 0 and delivered == created
    assert agent.status()["outbox"]["dead_letters"] == 0
    expected = 2 * 86400 * (1 if offset.startswith("+") else -1)
    rows = _collector_rows(collector, device_id)
    last = json.loads(rows[-1][2])
    skew = last["facts"]["os_identity"]["facts"]["clock_skew_seconds"]
    assert abs(skew - expected) < 120, skew
    # once measured, created_at is the collector's time, not the machine's
    assert abs(protocol.parse_rfc3339(last["created_at"]) - time.time()) < 600
    assert abs(measured - expected) < 120, measured
