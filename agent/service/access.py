"""The laptop's side of access decisions (docs/access.md): its signed decision on demand, the VPN
certificate it registers, and its device TLS certificate for the reverse-proxy gate.

Files in the state directory, under ``access/``: ``decision.jws`` (the last decision), ``device.key``
(0600), ``device.crt`` and ``device-ca.pem``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import protocol
from agent.service.state import StateDir
from agent.service.transport import Transport, TransportError
from common.files import atomic_write

ACCESS_PATH = "/api/v1/access"
VPN_CERTIFICATE_PATH = "/api/v1/vpn-certificate"
DEVICE_CERTIFICATE_PATH = "/api/v1/device-certificate"
_INLINE_CERT = re.compile(r"<cert>\s*(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)\s*</cert>", re.S)
_CERT_LINE = re.compile(r"^\s*cert\s+(?:\"([^\"]+)\"|(\S+))\s*$", re.M)


class AccessError(RuntimeError):
    """Something the employee or IT must fix; the message says what."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, state: StateDir) -> Paths:
        return cls(state.root / "access")

    @property
    def decision(self) -> Path:
        return self.root / "decision.jws"

    @property
    def key(self) -> Path:
        return self.root / "device.key"

    @property
    def cert(self) -> Path:
        return self.root / "device.crt"

    @property
    def ca(self) -> Path:
        return self.root / "device-ca.pem"


def profile_certificate(profile_text: str, profile_dir: Path) -> x509.Certificate:
    """The client certificate an OpenVPN profile uses: inline ``<cert>`` or a ``cert FILE`` line (relative
    to the profile's directory, as OpenVPN reads it)."""
    inline = _INLINE_CERT.search(profile_text)
    if inline:
        pem = inline.group(1).encode("ascii")
    else:
        line = _CERT_LINE.search(profile_text)
        if line is None:
            raise AccessError("the OpenVPN profile has no client certificate (no <cert> block, no `cert FILE` line)")
        path = Path(line.group(1) or line.group(2))
        path = path if path.is_absolute() else profile_dir / path
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise AccessError(f"cannot read the profile's certificate {path}: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise AccessError(f"the profile's client certificate is not a PEM certificate: {exc}") from exc


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _signed(transport: Transport, key: Any, device_id: str, method: str, path: str,
            body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    headers = protocol.sign_request(key, device_id, method, urlsplit(transport.base_url + path).path)
    data = None
    if body is not None:
        data = protocol.canonical_json(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    response = transport._request(method, path, data=data, headers=headers)  # the transport's own error mapping
    transport._raise_for_status(response, f"{method} {path}")
    answer = transport._json(response, f"{method} {path}")
    if not isinstance(answer, dict):
        raise TransportError(f"{method} {path}: expected a JSON object answer")
    return answer


def fetch_decision(transport: Transport, state: StateDir) -> Dict[str, Any]:
    """Ask the collector for this device's signed decision now; keep the token for later use."""
    identity = state.load_identity()
    answer = _signed(transport, state.load_private_key(), identity.device_id, "GET", ACCESS_PATH)
    paths = Paths.of(state)
    paths.root.mkdir(mode=0o700, exist_ok=True)
    if isinstance(answer.get("token"), str):
        atomic_write(paths.decision, answer["token"].encode("ascii"))
    return answer


def register_vpn(transport: Transport, state: StateDir, profile: Path) -> Dict[str, Any]:
    """Register the fingerprint of the VPN profile's client certificate with the collector."""
    try:
        text = profile.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AccessError(f"cannot read the OpenVPN profile {profile}: {exc.strerror}") from exc
    cert = profile_certificate(text, profile.parent)
    identity = state.load_identity()
    subject = cert.subject.rfc4514_string()[:300]
    answer = _signed(transport, state.load_private_key(), identity.device_id, "POST", VPN_CERTIFICATE_PATH,
                     {"fingerprint": fingerprint(cert), "label": subject})
    return {"fingerprint": fingerprint(cert), "subject": subject, **answer}


def needs_renewal(cert_path: Path, now: float) -> bool:
    """True without a certificate, or once half of its lifetime has passed."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return True
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return now >= start + (end - start) / 2


def renew_if_held(transport: Transport, state: StateDir, now: float) -> Optional[Dict[str, Any]]:
    """The service's renewal: a laptop that holds a device certificate gets a new one at half-life (before
    the old one expires); a laptop without one is left alone (`access certificate` asks the first)."""
    paths = Paths.of(state)
    if not paths.cert.exists() or not needs_renewal(paths.cert, now):
        return None
    return renew_certificate(transport, state, force=True)


def renew_certificate(transport: Transport, state: StateDir, force: bool = False) -> Optional[Dict[str, Any]]:
    """Get (or renew at half-life) the device TLS certificate; None when the current one is still fresh."""
    paths = Paths.of(state)
    if not force and not needs_renewal(paths.cert, time.time()):
        return None
    paths.root.mkdir(mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = state.load_identity()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.device_id)]))
           .sign(key, hashes.SHA256()))
    answer = _signed(transport, state.load_private_key(), identity.device_id, "POST", DEVICE_CERTIFICATE_PATH,
                     {"csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii")})
    for name in ("certificate", "ca", "not_after"):
        if name not in answer:
            raise TransportError(f"device certificate answer lacks {name!r}")
    # key first: a certificate on disk always has its key beside it
    atomic_write(paths.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    atomic_write(paths.cert, str(answer["certificate"]).encode("ascii"), mode=0o644)
    atomic_write(paths.ca, str(answer["ca"]).encode("ascii"), mode=0o644)
    return {"certificate": str(paths.cert), "key": str(paths.key), "not_after": answer["not_after"],
            "fingerprint": answer.get("fingerprint")}


def summary_json(answer: Dict[str, Any]) -> str:
    shown = {k: answer.get(k) for k in ("device_id", "decision", "since", "expires_at", "causes", "warnings",
                                        "exception")}
    return json.dumps(shown, ensure_ascii=False, indent=2, sort_keys=True)
