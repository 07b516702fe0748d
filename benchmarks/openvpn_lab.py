"""Real OpenVPN in two network namespaces: the namespace pair every VPN lab starts from, and a TLS lab.

``NetnsPair``: namespaces "srv" and "cli" joined by a veth (192.0.2.1/25 and 192.0.2.2/25, RFC 5737
documentation addresses), the processes started in them, and close() that removes everything; names carry
the pid and a random tag. tests/agent/test_vpn_netns.py builds its static-key tunnel on it.

``VpnLab``: a TLS OpenVPN server (tunnel pool 198.51.100.0/24) with a PKI made on the spot, and the laptops'
clients; used by tests/gate/test_openvpn_gate.py and benchmarks/gate_bench.py. The server asks its
management interface (a unix socket in the lab's directory, reachable from the host namespace) about every
connection when ``client_auth`` is set: that is where ``teleposture-gate openvpn`` plugs in.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_VETH, CLIENT_VETH = "192.0.2.1", "192.0.2.2"
POOL = "198.51.100.0"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Identity:
    name: str
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, lower-case hex


class Pki:
    """A CA, a server certificate and client certificates (ECDSA P-256), written as PEM files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Teleposture test VPN CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._ca_name = name
        self.ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                        .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
                        .not_valid_before(now - datetime.timedelta(minutes=5))
                        .not_valid_after(now + datetime.timedelta(days=2))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                       critical=True)
                        .sign(self._ca_key, hashes.SHA256()))
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, server: bool = False, dns: tuple[str, ...] = ()) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self._ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in dns]),
                                            critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{common_name}.crt", self.dir / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        return Identity(common_name, cert_path, key_path, fingerprint)


def wait_for_text(path: Path, texts: tuple[str, ...], proc: Optional[subprocess.Popen], timeout: float) -> str:
    """The first of ``texts`` to appear in the file (a log); AssertionError with the log's tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        for text in texts:
            if text in content:
                return text
        if proc is not None and proc.poll() is not None:
            content = path.read_text(errors="replace") if path.exists() else ""
            for text in texts:
                if text in content:
                    return text
            break
        time.sleep(0.02)
    log = path.read_text(errors="replace") if path.exists() else "(no log)"
    raise AssertionError(f"none of {texts} in {path.name} within {timeout}s; log tail:\n{log[-3000:]}")


class NetnsPair:
    """Namespaces ``server`` and ``client`` joined by a veth pair (vsrv 192.0.2.1/25, vcli 192.0.2.2/25) once
    build() ran, and the processes spawn() started in them; close() stops those and deletes both."""

    def __init__(self, prefix: str) -> None:
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.server, self.client = f"{prefix}-srv-{tag}", f"{prefix}-cli-{tag}"
        self.procs: List[subprocess.Popen] = []

    def build(self) -> None:
        for ns in (self.server, self.client):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.server, "link", "add", "vsrv", "type", "veth", "peer", "name", "vcli",
           "netns", self.client)
        sh("ip", "-n", self.server, "addr", "add", f"{SERVER_VETH}/25", "dev", "vsrv")
        sh("ip", "-n", self.client, "addr", "add", f"{CLIENT_VETH}/25", "dev", "vcli")
        sh("ip", "-n", self.server, "link", "set", "vsrv", "up")
        sh("ip", "-n", self.client, "link", "set", "vcli", "up")

    def spawn(self, namespace: str, argv: List[str]) -> subprocess.Popen:
        """``argv`` inside ``namespace``, its output discarded (OpenVPN writes its own --log)."""
        proc = subprocess.Popen(["ip", "netns", "exec", namespace, *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for ns in (self.server, self.client):
            sh("ip", "netns", "del", ns, check=False)


class VpnLab(NetnsPair):
    def __init__(self, directory: Path) -> None:
        super().__init__("tpg")
        self.dir = directory
        self.pki = Pki(directory / "pki")
        self.server_identity = self.pki.issue("vpn.example.org", server=True)
        self.management = directory / "mgmt.sock"
        self.server_log = directory / "server.log"
        self.server_proc: Optional[subprocess.Popen] = None
        self.port = 1194

    def start_server(self, client_auth: bool = True) -> None:
        self.stop_server()
        self.server_log.unlink(missing_ok=True)
        argv = ["openvpn", "--server", POOL, "255.255.255.0", "--topology", "subnet",
                "--dev", "tun", "--proto", "udp", "--local", SERVER_VETH, "--lport", str(self.port),
                "--ca", str(self.pki.ca), "--cert", str(self.server_identity.cert),
                "--key", str(self.server_identity.key), "--dh", "none", "--keepalive", "2", "10",
                "--verb", "3", "--log", str(self.server_log)]
        if client_auth:
            argv += ["--management", str(self.management), "unix", "--management-client-auth",
                     "--auth-user-pass-optional"]
        self.server_proc = self.spawn(self.server, argv)
        wait_for_text(self.server_log, ("Initialization Sequence Completed",), self.server_proc, 20)

    def stop_server(self) -> None:
        if self.server_proc is not None and self.server_proc.poll() is None:
            self.server_proc.terminate()
            self.server_proc.wait(timeout=10)
        self.server_proc = None

    def start_client(self, identity: Identity, lang: str = "en", extra: tuple[str, ...] = ()) -> ClientProcess:
        log = self.dir / f"client-{identity.name}-{secrets.token_hex(3)}.log"
        argv = ["openvpn", "--client", "--dev", "tun", "--proto", "udp",
                "--remote", SERVER_VETH, str(self.port), "--nobind", "--ca", str(self.pki.ca),
                "--cert", str(identity.cert), "--key", str(identity.key), "--remote-cert-tls", "server",
                "--setenv", "UV_TELEPOSTURE_LANG", lang, "--push-peer-info", "--connect-retry", "1",
                "--verb", "3", "--log", str(log), *extra]
        return ClientProcess(self.spawn(self.client, argv), log)


@dataclass
class ClientProcess:
    proc: subprocess.Popen
    log: Path

    CONNECTED = "Initialization Sequence Completed"
    REFUSED = "AUTH_FAILED"

    def outcome(self, timeout: float = 30) -> str:
        """"connected" or "refused", whichever the client's log shows first."""
        found = wait_for_text(self.log, (self.CONNECTED, self.REFUSED), self.proc, timeout)
        return "connected" if found == self.CONNECTED else "refused"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
