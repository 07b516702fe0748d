"""Installer sources that need no root and no package build: shell syntax, the systemd unit, the
launchd plist, the WiX source (compiled with wixl) and the CI workflow definitions."""

from __future__ import annotations

import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests.installers.conftest import INSTALLERS, LINUX, UNIT, need_tools, run

MACOS = INSTALLERS / "macos"
WINDOWS = INSTALLERS / "windows"

# Every shell script the installers ship or run, with the shell that runs it.
SHELL_SCRIPTS: Dict[str, str] = {
    "build-deb.sh": "bash",
    "build-rpm.sh": "bash",
    "build-wheelhouse.sh": "bash",
    "linux/teleposture-agent.sh": "sh",
    "linux/teleposture-venv": "sh",
    "linux/teleposture-enroll": "sh",
    "linux/debian/postinst": "sh",
    "linux/debian/prerm": "sh",
    "linux/debian/postrm": "sh",
    "linux/debian/config": "sh",
    "linux/debian/rules": "make",
    "macos/build-pkg.sh": "bash",
    "macos/teleposture-service": "sh",
    "macos/scripts/preinstall": "sh",
    "macos/scripts/postinstall": "sh",
    "macos/uninstall.sh": "sh",
}
SHELL_IDS = [name for name, shell in SHELL_SCRIPTS.items() if shell != "make"]


def test_every_script_is_listed() -> None:
    """A new script cannot slip past the syntax checks below."""
    found = set()
    for path in INSTALLERS.rglob("*"):
        if path.is_file() and path.read_bytes()[:2] == b"#!":
            found.add(str(path.relative_to(INSTALLERS)))
    assert found == set(SHELL_SCRIPTS), f"scripts not covered: {sorted(found - set(SHELL_SCRIPTS))}"


@pytest.mark.parametrize("name", SHELL_IDS)
def test_shell_syntax(name: str) -> None:
    path = INSTALLERS / name
    shell = SHELL_SCRIPTS[name]
    first_line = path.read_text().splitlines()[0]
    assert first_line in (f"#!/bin/{shell}", f"#!/usr/bin/env {shell}"), f"{name}: shebang {first_line!r}"
    assert path.stat().st_mode & 0o111, f"{name} is not executable"
    run(["bash", "-n", str(path)])
    if shell == "sh" and shutil.which("dash"):
        run(["dash", "-n", str(path)])  # Debian's /bin/sh: no bashisms in maintainer scripts


@pytest.mark.parametrize("name", SHELL_IDS)
def test_shellcheck(name: str) -> None:
    need_tools("shellcheck")
    shell = SHELL_SCRIPTS[name]
    run(["shellcheck", "--severity=style", f"--shell={shell}", str(INSTALLERS / name)])


def test_debian_rules_python_dependency(tmp_path: Path) -> None:
    """debian/rules turns the wheelhouse's Python X.Y into python3 (>= X.Y), python3 (<< X.Y+1)."""
    need_tools("make")
    shutil.copy(LINUX / "debian" / "rules", tmp_path / "rules")
    (tmp_path / "python-abi").write_text("3.9\n")
    result = run(["make", "-n", "-f", "rules", "override_dh_gencontrol"], cwd=tmp_path)
    assert "-Vteleposture:Python=python3 (>= 3.9), python3 (<< 3.10)" in result.stdout


# -- systemd unit ------------------------------------------------------------------------------------

def test_unit_verifies() -> None:
    """`systemd-analyze verify` on the unit from the repository.

    The only complaints allowed are the two programs that exist once the package is installed (the
    lifecycle test verifies the installed unit, where nothing at all may be reported)."""
    need_tools("systemd-analyze")
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    expected_missing = re.compile(r"Command /opt/teleposture/(venv/bin/teleposture-agent|libexec/teleposture-enroll) "
                                  r"is not executable: No such file or directory")
    unexpected = [line for line in complaints if not expected_missing.search(line)]
    assert not unexpected, "systemd-analyze verify:\n" + "\n".join(complaints)


def exposure_score(unit: Path) -> float:
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)], timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout[-2000:]}"
    return float(match.group(1))


def test_unit_exposure_score() -> None:
    """Exposure as `systemd-analyze security` rates it; the published osquery and Wazuh units score 9.6."""
    need_tools("systemd-analyze")
    score = exposure_score(UNIT)
    print(f"\nteleposture-agent.service: systemd-analyze security --offline=true exposure {score} "
          "(osquery, Wazuh agent: 9.6 UNSAFE; target <= 3.0)")
    assert score <= 3.0


def test_unit_capabilities_match_the_documented_ones() -> None:
    """The bounding set is exactly the five capabilities the header comment justifies."""
    text = UNIT.read_text()
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    assert bounding, "CapabilityBoundingSet= missing"
    caps = bounding.group(1).split()
    assert sorted(caps) == sorted(["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_DAC_READ_SEARCH", "CAP_SETUID", "CAP_SETGID"])
    for cap in caps:
        assert re.search(rf"^#.*{cap}", text, re.M), f"{cap} is granted without a comment saying why"


# -- macOS ---------------------------------------------------------------------------------------------

def test_launchd_plist() -> None:
    with (MACOS / "org.teleposture.agent.plist").open("rb") as handle:
        plist = plistlib.load(handle)
    assert plist["Label"] == "org.teleposture.agent"
    assert isinstance(plist["ProgramArguments"], list) and plist["ProgramArguments"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] is True
    assert isinstance(plist["ThrottleInterval"], int) and plist["ThrottleInterval"] >= 10
    assert plist["ProcessType"] in ("Background", "Standard", "Adaptive", "Interactive")
    assert plist["StandardOutPath"].startswith("/Library/Logs/Teleposture/")
    assert plist["StandardErrorPath"].startswith("/Library/Logs/Teleposture/")
    assert plist["Umask"] == 0o077
    assert "UserName" not in plist  # a LaunchDaemon without UserName runs as root, as the checks need

    # The program it starts is what build-pkg.sh puts at that path.
    program = plist["ProgramArguments"][0]
    assert program == "/Library/Teleposture/libexec/teleposture-service"
    build = (MACOS / "build-pkg.sh").read_text()
    assert '"$here/teleposture-service"' in build and '"$root/Library/Teleposture/libexec/"' in build
    assert '"$here/org.teleposture.agent.plist" "$root/Library/LaunchDaemons/"' in build


def test_macos_postinstall_bootstraps_and_enrols() -> None:
    text = (MACOS / "scripts" / "postinstall").read_text()
    assert 'launchctl bootstrap system "$PLIST"' in text
    assert "teleposture-enroll" in text and "enroll.env" in text
    assert "chmod -R go-w" in text  # program files not writable by users


def test_macos_distribution_is_xml() -> None:
    from xml.dom import minidom

    dom = minidom.parse(str(MACOS / "distribution.xml"))
    refs = dom.getElementsByTagName("pkg-ref")
    assert any(ref.getAttribute("version") == "@VERSION@" for ref in refs)


# -- Windows ---------------------------------------------------------------------------------------------

def _fake_bundle(root: Path) -> Path:
    """The shape of a PyInstaller one-folder build: the executable and _internal/ (contents irrelevant)."""
    bundle = root / "teleposture-agent"
    (bundle / "_internal" / "cryptography" / "hazmat").mkdir(parents=True)
    (bundle / "teleposture-agent.exe").write_bytes(b"MZ placeholder")
    (bundle / "_internal" / "python311.dll").write_bytes(b"MZ placeholder")
    (bundle / "_internal" / "base_library.zip").write_bytes(b"PK placeholder")
    (bundle / "_internal" / "cryptography" / "hazmat" / "_rust.pyd").write_bytes(b"MZ placeholder")
    return bundle


def _msi_table(msi: Path, table: str, cwd: Path) -> List[Dict[str, str]]:
    """Rows of an MSI table from `msiinfo export` (tab-separated: names, types, key line, rows)."""
    lines = run(["msiinfo", "export", str(msi), table], cwd=cwd).stdout.splitlines()
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"))) for line in lines[3:] if line]


@pytest.fixture(scope="module")
def msi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tools("wixl", "wixl-heat", "msiinfo")
    work = tmp_path_factory.mktemp("msi")
    bundle = _fake_bundle(work)
    files = sorted(str(p.relative_to(bundle)) for p in (bundle / "_internal").rglob("*") if p.is_file())
    # The same harvest build-msi.ps1 does with heat.exe, done with wixl-heat.
    runtime = run(["wixl-heat", "--prefix", "_internal/", "--directory-ref", "AgentInternal",
                   "--component-group", "AgentRuntime", "--var", "var.RuntimeDir", "--win64"],
                  input="\n".join(files) + "\n", cwd=work).stdout
    (work / "runtime.wxs").write_text(runtime)
    out = work / "teleposture-agent.msi"
    # wixl resolves sources relative to its working directory.
    run(["wixl", "-a", "x64", "-D", "Toolchain=wixl", "-D", "Win64=yes", "-D", "Version=0.1.0",
         "-D", "AgentDir=teleposture-agent", "-D", "RuntimeDir=teleposture-agent/_internal",
         "-o", out.name, str(WINDOWS / "teleposture-agent.wxs"), "runtime.wxs"], cwd=work)
    assert out.stat().st_size > 10_000
    return out


def test_msi_has_service_and_upgrade_tables(msi: Path) -> None:
    tables = run(["msiinfo", "tables", str(msi)], cwd=msi.parent).stdout.split()
    for table in ("ServiceInstall", "ServiceControl", "Upgrade", "CustomAction", "Registry", "CreateFolder"):
        assert table in tables, f"{table} missing from {tables}"


def test_msi_service(msi: Path) -> None:
    [service] = _msi_table(msi, "ServiceInstall", msi.parent)
    assert service["Name"] == "TelepostureAgent"
    assert service["StartName"] == "LocalSystem"
    assert int(service["StartType"]) == 2  # SERVICE_AUTO_START
    assert int(service["ServiceType"]) == 0x10  # SERVICE_WIN32_OWN_PROCESS
    assert service["Arguments"] == "windows-service"
    assert service["Component_"] == "AgentExe"
    [control] = _msi_table(msi, "ServiceControl", msi.parent)
    # start at install (1), stop at install (2) and at uninstall (32), delete at uninstall (128)
    assert int(control["Event"]) == 1 | 2 | 32 | 128


def test_msi_failure_actions_and_acl(msi: Path) -> None:
    actions = {row["Action"]: row for row in _msi_table(msi, "CustomAction", msi.parent)}
    assert "restart/60000" in actions["ServiceFailureActions"]["Target"]
    acl = actions["RestrictDataAcl"]["Target"]
    assert "/inheritance:r" in acl and "*S-1-5-18:" in acl and "*S-1-5-32-544:" in acl
    for name in ("RestrictDataAcl", "ServiceFailureActions", "ServiceFailureFlag"):
        kind = int(actions[name]["Type"])
        assert kind & 0x400, f"{name} is not deferred"
        assert kind & 0x800, f"{name} impersonates the user instead of running as LocalSystem"


def test_msi_major_upgrade(msi: Path) -> None:
    upgrade = _msi_table(msi, "Upgrade", msi.parent)
    codes = {row["UpgradeCode"] for row in upgrade}
    assert codes == {"{6E0A3D52-8A36-4C8B-9B3A-2F1C5D7E9A41}"}
    assert {row["ActionProperty"] for row in upgrade} == {"WIX_UPGRADE_DETECTED", "WIX_DOWNGRADE_DETECTED"}
    sequence = {row["Action"]: int(row["Sequence"]) for row in _msi_table(msi, "InstallExecuteSequence", msi.parent)}
    # The old version goes before anything is installed, so its uninstall cannot delete the new service.
    assert sequence["InstallValidate"] < sequence["RemoveExistingProducts"] < sequence["InstallInitialize"]


def test_msi_enrolment_properties(msi: Path) -> None:
    registry = _msi_table(msi, "Registry", msi.parent)
    values = {row["Name"]: row["Value"] for row in registry if row["Key"] == r"SOFTWARE\Teleposture\Enrollment"}
    assert values == {"ServerUrl": "[SERVERURL]", "Token": "[ENROLLTOKEN]"}
    properties = {row["Property"]: row["Value"] for row in _msi_table(msi, "Property", msi.parent)}
    assert properties["MsiHiddenProperties"] == "ENROLLTOKEN"
    assert properties["ALLUSERS"] == "1"
    directories = {row["Directory"]: row for row in _msi_table(msi, "Directory", msi.parent)}
    assert directories["INSTALLDIR"]["Directory_Parent"] == "ProgramFiles64Folder"
    assert directories["DATADIR"]["Directory_Parent"] == "CommonAppDataFolder"


# -- CI workflow definitions --------------------------------------------------------------------------------

@pytest.mark.parametrize("path, runner, script", [
    (MACOS / "ci" / "macos-pkg.yml", "macos", "installers/macos/build-pkg.sh"),
    (WINDOWS / "ci" / "windows-msi.yml", "windows", "installers/windows/build-msi.ps1"),
])
def test_workflow(path: Path, runner: str, script: str) -> None:
    workflow = yaml.safe_load(path.read_text())
    jobs = workflow["jobs"]
    assert jobs, "no jobs"
    for job in jobs.values():
        runs_on = job["runs-on"]
        if "matrix" in str(runs_on):
            runs_on = " ".join(job["strategy"]["matrix"]["runner"])
        assert runner in str(runs_on)
        commands = " ".join(step.get("run", "") for step in job["steps"])
        assert script in commands
        assert (INSTALLERS.parent / script).exists()


def test_windows_and_bundle_python_type_checks() -> None:
    """The service host and the bundle's entry point only run on Windows/macOS builders: type-check
    them here as Windows code (pywin32 has no stubs and is treated as Any)."""
    sources = [str(WINDOWS / "winservice.py"), str(INSTALLERS / "pyinstaller" / "teleposture_main.py")]
    result = run([sys.executable, "-m", "mypy", "--platform", "win32", "--python-version", "3.11",
                  "--follow-imports=silent", "--ignore-missing-imports", "--no-incremental", *sources],
                 cwd=INSTALLERS.parent, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    spec = (INSTALLERS / "pyinstaller" / "teleposture-agent.spec").read_text()
    compile(spec, "teleposture-agent.spec", "exec")
    assert 'os.path.join(here, "teleposture_main.py")' in spec
