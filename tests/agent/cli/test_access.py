"""`teleposture-agent access` against a real collector process: the decision on demand, the VPN certificate
of an OpenVPN profile registered, the device TLS certificate issued and renewed only at half-life."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from benchmarks.openvpn_lab import Pki
from tests.agent.service.conftest import agent_env
from tests.agent.service.realcollector import AGENT, RealCollector


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCollector]:
    running = RealCollector(tmp_path_factory.mktemp("collector"))
    running.start()
    running.allow_replacement()  # each test enrols this same machine again, from a fresh state directory
    try:
        yield running
    finally:
        running.stop()


def agent(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT, *args], env=agent_env(state), capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture()
def enrolled(collector: RealCollector, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    done = agent(state, "enroll", "--server", collector.url, "--token", collector.token(), "--allow-http")
    assert done.returncode == 0, done.stderr
    return state


def test_show_without_a_report_is_denied_and_says_why(enrolled: Path) -> None:
    done = agent(enrolled, "access", "show", "--json")
    assert done.returncode == 1, done.stderr
    answer = json.loads(done.stdout)
    assert answer["decision"] == "deny" and [c["code"] for c in answer["causes"]] == ["no_report"]
    assert (enrolled / "access" / "decision.jws").read_text().count(".") == 2


def test_register_vpn_certificate_of_a_profile(enrolled: Path, collector: RealCollector, tmp_path: Path) -> None:
    identity = Pki(tmp_path / "pki").issue("jdoe-laptop")
    inline = tmp_path / "inline.ovpn"
    inline.write_text(f"client\nremote vpn.example.org 1194\n<cert>\n{identity.cert.read_text()}</cert>\n")
    done = agent(enrolled, "access", "register-vpn", "--profile", str(inline), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fingerprint"] == identity.fingerprint
    device_id = json.loads((enrolled / "identity.json").read_text())["device_id"]
    access = collector.api(f"/devices/{device_id}/access")
    assert [c["fingerprint"] for c in access["credentials"]] == [identity.fingerprint]
    # a `cert FILE` profile (relative to the profile) works too; no certificate at all is a clear error
    by_path = tmp_path / "by-path.conf"
    by_path.write_text(f"client\ncert pki/{identity.cert.name}\n")
    assert agent(enrolled, "access", "register-vpn", "--profile", str(by_path)).returncode == 0
    bare = tmp_path / "bare.ovpn"
    bare.write_text("client\n")
    failed = agent(enrolled, "access", "register-vpn", "--profile", str(bare))
    assert failed.returncode == 2 and "no client certificate" in failed.stderr


def test_device_certificate_issued_then_renewed_only_when_due(enrolled: Path) -> None:
    done = agent(enrolled, "access", "certificate", "--json")
    assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate((enrolled / "access" / "device.crt").read_bytes())
    device_id = json.loads((enrolled / "identity.json").read_text())["device_id"]
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == device_id
    assert (enrolled / "access" / "device.key").stat().st_mode & 0o077 == 0
    again = agent(enrolled, "access", "certificate")
    assert again.returncode == 0 and "still fresh" in again.stderr
    assert (enrolled / "access" / "device.crt").read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
    forced = agent(enrolled, "access", "certificate", "--force")
    assert forced.returncode == 0
    assert x509.load_pem_x509_certificate((enrolled / "access" / "device.crt").read_bytes()).serial_number != \
        cert.serial_number


def test_the_service_renews_a_held_certificate_at_half_life(enrolled: Path) -> None:
    from agent.service import access as agent_access
    from agent.service.state import StateDir
    from agent.service.transport import Transport

    state = StateDir(enrolled)
    identity = state.load_identity()
    transport = Transport(identity.server_url, ca_file=identity.ca_file, allow_http=identity.allow_http)
    assert agent_access.renew_if_held(transport, state, time.time()) is None  # none held: nothing asked
    assert agent(enrolled, "access", "certificate").returncode == 0
    held = x509.load_pem_x509_certificate((enrolled / "access" / "device.crt").read_bytes())
    assert agent_access.renew_if_held(transport, state, time.time()) is None  # fresh
    half_life = (held.not_valid_before_utc.timestamp() + held.not_valid_after_utc.timestamp()) / 2
    renewed = agent_access.renew_if_held(transport, state, half_life + 1)
    assert renewed is not None
    assert x509.load_pem_x509_certificate((enrolled / "access" / "device.crt").read_bytes()).serial_number != \
        held.serial_number
