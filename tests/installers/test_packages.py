"""The Linux packages, built for real: the RPM's layout and scriptlets (rpmbuild), and the Debian
package's whole life on this machine (root): install with dpkg -i, enrol against a collector started
here, check and report with the installed agent, upgrade keeping the identity and the outbox, remove
keeping the state, purge leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import pytest

from benchmarks.loopback import free_port
from tests.installers.conftest import INSTALLERS, need_tools, run
from tests.installers.test_static import exposure_score

PACKAGE = "teleposture-agent"
# Where the package may leave anything at all (README.md, "Files").
DOCUMENTED = ("/opt/teleposture", "/etc/teleposture", "/var/lib/teleposture", "/usr/bin/teleposture-agent",
              "/lib/systemd/system/teleposture-agent.service", "/usr/share/doc/teleposture-agent",
              "/etc/systemd/system/multi-user.target.wants/teleposture-agent.service",
              "/etc/systemd/system/teleposture-agent.service",  # the mask deb-systemd-helper sets on removal
              "/var/lib/systemd/deb-systemd-helper-enabled", "/var/lib/systemd/deb-systemd-helper-masked")
SNAPSHOT_ROOTS = ("/opt", "/etc", "/usr", "/var/lib")
# dpkg's own database changes with any package operation; the others belong to services that keep
# running on the test machine meanwhile (the PostgreSQL the collector tests use writes WAL segments).
SNAPSHOT_EXCLUDED = ("/var/lib/dpkg", "/var/lib/postgresql", "/var/lib/redis", "/var/lib/apt/lists")
UNIT_CAPS = ("net_admin", "net_raw", "dac_read_search", "setuid", "setgid")
# The file-system part of the unit's sandbox, rebuilt in a private mount namespace (run by
# `unshare --mount --propagation private`): ProtectSystem=strict (everything read-only but the state
# directory; /proc and /sys stay separate mounts), PrivateDevices= (a /dev with the basic nodes only),
# PrivateTmp= (fresh /tmp and /var/tmp). Mounts made here vanish with the namespace.
FS_SANDBOX = """set -eu
mount -t tmpfs tmpfs /mnt
for node in null zero full random urandom tty; do
    : > "/mnt/$node"; mount --bind "/dev/$node" "/mnt/$node"
done
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
for node in null zero full random urandom tty; do
    : > "/dev/$node"; mount --bind "/mnt/$node" "/dev/$node"
done
mkdir /dev/shm && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount --bind /var/lib/teleposture /var/lib/teleposture
mount -o remount,bind,ro /
exec "$@"
"""


# -- RPM --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_rpm_layout_and_scriptlets(wheelhouse: Path, tmp_path: Path) -> None:
    need_tools("rpmbuild", "rpm")
    out = tmp_path / "out"
    built = run(["bash", str(INSTALLERS / "build-rpm.sh"), "--wheelhouse", str(wheelhouse), "--out", str(out),
                 "--version", "0.1.0", "--release", "3"], timeout=180).stdout.strip().splitlines()[-1]
    rpm = Path(built)
    assert rpm.name.startswith("teleposture-agent-0.1.0-3.") and rpm.exists()

    files = set(run(["rpm", "-qlp", str(rpm)]).stdout.split())
    for path in ("/usr/bin/teleposture-agent", "/etc/teleposture/agent.toml", "/var/lib/teleposture",
                 "/usr/lib/systemd/system/teleposture-agent.service", "/opt/teleposture/libexec/teleposture-venv",
                 "/opt/teleposture/libexec/teleposture-enroll"):
        assert path in files, f"{path} not in the RPM"
    wheels = {Path(p).name for p in files if p.startswith("/opt/teleposture/wheels/")}
    assert any(w.startswith("teleposture-0.1.0-") for w in wheels)
    assert any(w.startswith("cryptography-") for w in wheels) and any(w.startswith("pip-") for w in wheels)
    assert not [p for p in files if p.startswith("/opt/teleposture/venv")], "the venv is built at install, not shipped"

    configs = run(["rpm", "-qcp", str(rpm)]).stdout.split()
    assert "/etc/teleposture/agent.toml" in configs
    listing = run(["rpm", "-qlvp", str(rpm)]).stdout
    assert re.search(r"^drwx------\s+\S+\s+root\s+root .* /var/lib/teleposture$", listing, re.M), listing
    requires = run(["rpm", "-qp", "--requires", str(rpm)]).stdout
    abi = (wheelhouse / "python-abi").read_text().strip()
    assert f"python(abi) = {abi}" in requires

    # Each scriptlet parses as sh, and tells install/upgrade/erase apart with $1.
    scripts = run(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):\n", scripts, flags=re.M)
    bodies = dict(zip(parts[1::2], parts[2::2]))
    assert set(bodies) >= {"preinstall", "postinstall", "preuninstall", "postuninstall", "posttrans"}, set(bodies)
    for name, body in bodies.items():
        script = tmp_path / f"{name}.sh"
        script.write_text(body)
        run(["sh", "-n", str(script)])
    for name in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert '"$1"' in bodies[name], f"{name} ignores $1"
    assert 'if [ "$1" -eq 0 ]' in bodies["preuninstall"] and "rm -rf /opt/teleposture/venv" in bodies["preuninstall"]


# -- Debian package, for real ------------------------------------------------------------------------------

def snapshot() -> Set[str]:
    paths: Set[str] = set()
    for root in SNAPSHOT_ROOTS:
        for directory, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(directory, d) not in SNAPSHOT_EXCLUDED]
            paths.update(os.path.join(directory, name) for name in dirs + files)
    return {p for p in paths if not p.startswith(SNAPSHOT_EXCLUDED)}


def documented(path: str) -> bool:
    return any(path == place or path.startswith(place + "/") for place in DOCUMENTED)


class Collector:
    """A real collector process (`teleposture-server serve`) on a loopback port, SQLite in a temp dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TELEPOSTURE_DATA_DIR": str(data_dir)}
        self.process: Optional[subprocess.Popen[bytes]] = None
        server = Path(sys.executable).with_name("teleposture-server")
        self.cli = [str(server)] if server.exists() else [sys.executable, "-m", "server.cli"]

    def command(self, *args: str) -> str:
        return run(self.cli + list(args), env=self.env, cwd=self.data_dir, timeout=120).stdout

    def init(self) -> None:
        self.command("init")
        self.viewer_token = self.command("api-token", "create", "--name", "installer-test", "--role",
                                         "viewer").strip().splitlines()[-1]

    def token(self) -> str:
        return self.command("token", "create", "--org-unit", "installer-test", "--uses", "1").strip().splitlines()[-1]

    def start(self) -> None:
        with (self.data_dir / "serve.log").open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.cli + ["serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                            env=self.env, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"collector exited: {(self.data_dir / 'serve.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("collector did not answer /api/v1/health within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def device(self, device_id: str) -> Dict[str, object]:
        request = urllib.request.Request(f"{self.url}/api/v1/admin/devices/{device_id}",
                                         headers={"Authorization": f"Bearer {self.viewer_token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            detail: Dict[str, object] = json.load(answer)
        return detail


def dpkg(*args: str, env: Optional[Dict[str, str]] = None) -> str:
    # --force-unsafe-io: no fsync per file; a test machine need not survive a power cut mid-install.
    result = run(["dpkg", "--force-unsafe-io", *args], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", **(env or {})}, timeout=180)
    return result.stdout + result.stderr


def installed_agent(*args: str, check: bool = True, prefix: Optional[List[str]] = None) -> subprocess.CompletedProcess[str]:
    """The installed agent, by its installed path (never the repository's)."""
    return run([*(prefix or []), "/usr/bin/teleposture-agent", *args], timeout=180, check=check, cwd="/")


def device_id() -> str:
    identity = json.loads(Path("/var/lib/teleposture/identity.json").read_text())
    return str(identity["device_id"])


def check_states(prefix: Optional[List[str]] = None) -> Dict[str, str]:
    result = installed_agent("check", "--json", check=False, prefix=prefix)
    assert result.returncode in (0, 1), f"check exited {result.returncode}: {result.stderr[-2000:]}"
    facts = json.loads(result.stdout)["facts"]
    return {check: outcome["state"] for check, outcome in facts.items()}


@pytest.fixture
def debian_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This machine, as root, without the package; put back the way it was whatever happens.

    The repository's agent run as root elsewhere (other tests, `teleposture-agent check`) uses the same
    default places (/var/lib/teleposture/cache): such leftovers are set aside for the test and put back.
    """
    if os.geteuid() != 0:
        pytest.skip("installs a .deb with dpkg: needs root")
    need_tools("dpkg", "dpkg-deb", "dpkg-buildpackage", "dh", "setpriv", "unshare", "debconf-set-selections")
    status = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE], capture_output=True, text=True)
    if status.returncode == 0 and status.stdout.strip() not in ("", "un", "pn"):
        pytest.fail(f"{PACKAGE} is already installed here ({status.stdout.strip()}); this test would replace it. "
                    f"Remove it first: dpkg -P {PACKAGE}")
    aside = tmp_path_factory.mktemp("set-aside")
    moved: List[str] = []
    for place in ("/etc/teleposture", "/var/lib/teleposture", "/opt/teleposture"):
        if os.path.lexists(place):
            shutil.move(place, aside / place.strip("/").replace("/", "_"))
            moved.append(place)
    try:
        yield
    finally:
        subprocess.run(["dpkg", "-P", PACKAGE], capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        for place in ("/etc/teleposture", "/var/lib/teleposture", "/opt/teleposture"):
            shutil.rmtree(place, ignore_errors=True)
        for place in moved:
            shutil.move(aside / place.strip("/").replace("/", "_"), place)


def build_debs(wheelhouse: Path, out: Path, versions: List[str]) -> List[Path]:
    """Build one .deb per version, side by side (each build is mostly single-threaded debhelper)."""
    builds = [subprocess.Popen(["bash", str(INSTALLERS / "build-deb.sh"), "--wheelhouse", str(wheelhouse),
                                "--out", str(out / version), "--version", version],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for version in versions]
    debs = []
    for version, build in zip(versions, builds):
        stdout, stderr = build.communicate(timeout=300)
        assert build.returncode == 0, f"build-deb.sh --version {version} failed:\n{stderr[-3000:]}"
        deb = Path(stdout.strip().splitlines()[-1])
        assert deb.exists() and f"_{version}_" in deb.name, stdout
        debs.append(deb)
    return debs


@pytest.mark.root
@pytest.mark.slow
def test_deb_lifecycle(wheelhouse: Path, tmp_path: Path, debian_machine: None) -> None:
    t0 = time.monotonic()
    timings: Dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t0
        timings[name] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()

    deb1, deb2 = build_debs(wheelhouse, tmp_path / "debs", ["0.1.0-1", "0.1.0-2"])
    lap("build two .debs")

    # Package contents: layout and conffiles, before anything is installed.
    contents = run(["dpkg-deb", "-c", str(deb1)]).stdout
    for path in ("./usr/bin/teleposture-agent", "./etc/teleposture/agent.toml",
                 "./lib/systemd/system/teleposture-agent.service", "./opt/teleposture/libexec/teleposture-venv"):
        assert re.search(rf" {re.escape(path)}$", contents, re.M), f"{path} not in the .deb"
    assert "./opt/teleposture/venv" not in contents
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", str(deb1), str(control)])
    assert (control / "conffiles").read_text().split() == ["/etc/teleposture/agent.toml"]
    if shutil.which("lintian"):
        # Clean apart from the overrides the package explains (add-on software in /opt).
        lint = run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(deb1)], timeout=300,
                   check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        lap("lintian")
    else:
        print("lintian not installed: package lint skipped (scripts/setup-dev.sh installs it)")

    before = snapshot()
    collector = Collector(tmp_path / "collector")
    collector.data_dir.mkdir()
    collector.init()
    collector.start()
    lap("collector init + serve")
    try:
        # 1. Unattended install: collector URL and token preseeded in debconf (plain http is allowed
        #    for a loopback collector only, and only by this development setting in dpkg's environment).
        token = collector.token()
        run(["debconf-set-selections"], input=f"{PACKAGE} teleposture/server-url string {collector.url}\n"
                                               f"{PACKAGE} teleposture/enroll-token password {token}\n")
        output = dpkg("-i", str(deb1), env={"TELEPOSTURE_ALLOW_HTTP": "1"})
        lap("dpkg -i")
        assert "enrolled as device" in output, output
        assert not Path("/etc/teleposture/enroll.env").exists(), "the token file must be deleted once used"
        assert token not in Path("/var/cache/debconf/passwords.dat").read_text(), "token left in debconf"
        first_id = device_id()
        assert oct(Path("/var/lib/teleposture").stat().st_mode & 0o777) == "0o700"
        assert oct(Path("/var/lib/teleposture/device_key.pem").stat().st_mode & 0o777) == "0o600"
        pid1 = run(["ps", "-p", "1", "-o", "comm="]).stdout.strip()
        if pid1 != "systemd":
            assert f"systemd is not running (PID 1 is {pid1})" in output, output
        assert os.path.islink("/etc/systemd/system/multi-user.target.wants/teleposture-agent.service")

        # The installed unit verifies with nothing to report, and scores as the repository's does.
        verify = run(["systemd-analyze", "verify", "/lib/systemd/system/teleposture-agent.service"])
        assert not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
        score = exposure_score(Path("/lib/systemd/system/teleposture-agent.service"))
        print(f"\ninstalled unit: systemd-analyze security --offline=true exposure {score}")
        assert score <= 3.0

        # The agent runs from its own venv, on the system Python, with no pip and no repository code.
        venv_python = "/opt/teleposture/venv/bin/python"
        where = run([venv_python, "-c", "import agent, sys; print(agent.__file__); print(sys.base_prefix)"],
                    cwd="/").stdout.split()
        assert where[0].startswith("/opt/teleposture/venv/lib/"), where
        assert where[1] == "/usr", where
        assert run([venv_python, "-c", "import pip"], check=False).returncode != 0
        assert not Path("/opt/teleposture/venv/bin/teleposture-server").exists()

        # 2. check with the installed agent; then again inside the unit's limits (file-system sandbox,
        #    capability bounding set, no_new_privs, memory-deny-write-execute): the same outcomes, so the
        #    sandbox costs no check here.
        unrestricted = check_states()
        assert set(unrestricted) >= {"os_identity", "disk_encryption", "vpn", "patches", "firewall", "screen_lock",
                                     "antivirus"}, unrestricted
        lap("check (installed agent)")
        bounded = ["setpriv", "--bounding-set=-all," + ",".join("+" + cap for cap in UNIT_CAPS), "--no-new-privs"]
        # The system Python runs the helper's text: inside the sandbox /tmp is a fresh tmpfs, so neither a
        # checkout under /tmp nor its venv is visible there.
        mdwe = ["/usr/bin/python3", "-c", Path(__file__).with_name("mdwe_exec.py").read_text()]
        if run([*mdwe, "true"], check=False).returncode == 0:
            bounded += mdwe
        else:
            print("kernel without PR_SET_MDWE (< 6.3): the sandboxed check runs without memory-deny-write-execute")
        fs_sandbox = tmp_path / "fs-sandbox.sh"
        fs_sandbox.write_text(FS_SANDBOX)
        sandboxed = check_states(prefix=["unshare", "--mount", "--propagation", "private", "sh", str(fs_sandbox),
                                         *bounded])
        assert sandboxed == unrestricted, f"outcomes differ inside the unit's limits: {unrestricted} vs {sandboxed}"
        if shutil.which("nft"):
            # Control: without any capability the firewall ruleset is unreadable, so the comparison above can fail.
            stripped = check_states(prefix=["setpriv", "--bounding-set=-all", "--no-new-privs"])
            assert stripped["firewall"] == "error", stripped
        # The GNOME screen-lock probe switches to the session user with runuser: possible inside the
        # bounding set, impossible without CAP_SETUID/CAP_SETGID (why those two are granted).
        as_nobody = ["runuser", "-u", "nobody", "--", "id", "-u"]
        assert run([*bounded[:3], *as_nobody]).stdout.strip() == "65534"
        without = ["setpriv", "--bounding-set=-all," + ",".join("+" + c for c in UNIT_CAPS if not c.startswith("set")),
                   "--no-new-privs"]
        assert run([*without, *as_nobody], check=False).returncode != 0
        lap("check x2 in the sandbox's limits")

        # 3. report --now: signed, queued and delivered; the collector has it.
        report = installed_agent("report", "--now")
        assert "delivered" in report.stdout, report.stdout
        detail = collector.device(first_id)
        device = detail["device"]
        assert isinstance(device, dict) and device["id"] == first_id and device["last_report_at"], device
        lap("report --now")

        # 4. A report queued while the collector is down stays in the outbox across the upgrade.
        collector.stop()
        queued = installed_agent("report", "--now", "--deadline", "1", check=False)
        assert queued.returncode == 1 and "queued but not delivered" in queued.stdout, queued.stdout + queued.stderr
        status = json.loads(installed_agent("status", "--json").stdout)
        assert status["outbox"]["depth"] == 1, status["outbox"]

        # 5. Upgrade to a higher version, with a valid token dropped in the enrolment file: an enrolled
        #    machine must not enrol again (identity kept), and the file must go.
        collector.start()
        enroll_env = Path("/etc/teleposture/enroll.env")
        enroll_env.write_text(f"TELEPOSTURE_SERVER={collector.url}\nTELEPOSTURE_TOKEN={collector.token()}\n")
        enroll_env.chmod(0o600)
        output = dpkg("-i", str(deb2))
        lap("dpkg -i (upgrade)")
        assert "already enrolled" in output, output
        assert run(["dpkg-query", "-W", "-f=${Version}", PACKAGE]).stdout == "0.1.0-2"
        assert device_id() == first_id, "the upgrade changed the device identity"
        assert not enroll_env.exists(), "a token file ignored by an enrolled machine must still be deleted"
        status = json.loads(installed_agent("status", "--json").stdout)
        assert status["device_id"] == first_id and status["outbox"]["depth"] == 1, status
        delivered = installed_agent("report", "--now")
        assert "delivered" in delivered.stdout and "still queued" not in delivered.stdout, delivered.stdout
        status = json.loads(installed_agent("status", "--json").stdout)
        assert status["outbox"]["depth"] == 0, status["outbox"]

        # 6. Remove: program gone, identity, outbox and config kept.
        dpkg("-r", PACKAGE)
        for gone in ("/opt/teleposture", "/usr/bin/teleposture-agent", "/lib/systemd/system/teleposture-agent.service"):
            assert not os.path.exists(gone), f"{gone} left after dpkg -r"
        for kept in ("/var/lib/teleposture/identity.json", "/var/lib/teleposture/outbox.db",
                     "/etc/teleposture/agent.toml"):
            assert os.path.exists(kept), f"{kept} lost by dpkg -r (only purge may delete it)"
        assert device_id() == first_id

        # 7. Purge: state and config gone; nothing anywhere that was not there before.
        dpkg("-P", PACKAGE)
        lap("remove + purge")
        for gone in ("/var/lib/teleposture", "/etc/teleposture"):
            assert not os.path.exists(gone), f"{gone} left after dpkg -P"
        assert not run(["debconf-show", PACKAGE]).stdout.strip(), "debconf answers left after purge"
        assert subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE],
                              capture_output=True, text=True).stdout.strip() in ("", "un", "pn")
        after = snapshot()
        added = sorted(after - before)
        assert not added, "files left behind by the package:\n" + "\n".join(added[:50])
        removed = sorted(p for p in before - after if not documented(p))
        assert not removed, "files outside the package's places removed:\n" + "\n".join(removed[:50])
    finally:
        collector.stop()
        print(f"timings (s): {timings}")
