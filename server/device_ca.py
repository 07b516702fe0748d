"""The collector's device CA: short-lived client TLS certificates for enrolled devices.

A reverse proxy (nginx, Traefik, Caddy) trusts this CA for client certificates and asks
`teleposture-gate http` whether the device behind a certificate may pass. Certificates are short-lived
(``device_cert_lifetime``, 7 days by default) and renewed by the device before they expire, so there is
no CRL or OCSP: a revoked device gets no new certificate, and its current one is refused by the gate
from the moment the device is revoked (its decision is ``deny``).

The CA key (ECDSA P-256, mode 0600) and certificate live in the data directory, made on first use under
a file lock so that several workers agree on one CA.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.files import atomic_write

CA_KEY_FILE = "device_ca_key.pem"
CA_CERT_FILE = "device_ca.pem"
MAX_CSR_BYTES = 16384


class CertificateRequestError(ValueError):
    """A CSR the collector will not sign; the message says why."""


@dataclass(frozen=True)
class IssuedCertificate:
    pem: str
    fingerprint: str  # SHA-256 of the DER certificate, lower-case hex
    not_after: float


class DeviceCA:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def issue(self, csr_pem: str, device_id: str, now: float, lifetime: float) -> IssuedCertificate:
        """A client certificate for ``device_id`` over the CSR's public key (the CSR's subject is ignored)."""
        if len(csr_pem) > MAX_CSR_BYTES:
            raise CertificateRequestError(f"the CSR is over {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise CertificateRequestError(f"expected a PEM certificate signing request: {exc}") from exc
        try:
            valid = csr.is_signature_valid
        except InvalidSignature:
            valid = False
        if not valid:
            raise CertificateRequestError("the CSR's signature does not verify: it must be signed by its own key")
        public_key = csr.public_key()
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise CertificateRequestError("the CSR's key must be ECDSA, RSA or Ed25519")
        if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
            raise CertificateRequestError("an RSA key must have at least 2048 bits")
        start = datetime.datetime.fromtimestamp(now - 300, datetime.timezone.utc)
        end = datetime.datetime.fromtimestamp(now + lifetime, datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id),
                                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "teleposture device")]))
                .issuer_name(self.cert.subject).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:teleposture:device:{device_id}")]), critical=False)
                .sign(self.key, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                                 hashlib.sha256(der).hexdigest(), end.timestamp())


def _create(data_dir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Teleposture device CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Teleposture")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    key_path = data_dir / CA_KEY_FILE
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    atomic_write(data_dir / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def load_or_create(data_dir: Path) -> DeviceCA:
    """The data directory's device CA, created on first use (several processes agree through a lock)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "device_ca.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (data_dir / CA_KEY_FILE).exists():
            _create(data_dir)
        key = serialization.load_pem_private_key((data_dir / CA_KEY_FILE).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((data_dir / CA_CERT_FILE).read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{data_dir / CA_KEY_FILE} is not an ECDSA key")
    return DeviceCA(key, cert)
