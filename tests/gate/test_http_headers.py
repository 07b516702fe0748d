"""gate.http's pure parts: the client certificate as nginx, Caddy (RFC 9440) and Traefik pass it; languages."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from benchmarks.openvpn_lab import Pki
from gate.http import certificate_fingerprint, preferred_language


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    identity = Pki(tmp_path_factory.mktemp("pki")).issue("laptop")
    pem = Path(identity.cert).read_text()
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == identity.fingerprint
    return pem, der


def test_nginx_escaped_pem(cert: tuple[str, bytes]) -> None:
    pem, der = cert
    assert certificate_fingerprint({"X-SSL-Client-Cert": quote(pem)}) == hashlib.sha256(der).hexdigest()


def test_rfc9440_client_cert(cert: tuple[str, bytes]) -> None:
    _pem, der = cert
    value = ":" + base64.b64encode(der).decode() + ":"
    assert certificate_fingerprint({"Client-Cert": value}) == hashlib.sha256(der).hexdigest()


def test_traefik_pass_tls_client_cert(cert: tuple[str, bytes]) -> None:
    pem, der = cert
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    assert certificate_fingerprint({"X-Forwarded-Tls-Client-Cert": quote(body)}) == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("headers", [{}, {"X-SSL-Client-Cert": "garbage"}, {"Client-Cert": ":bm90IGEgY2VydA==:"},
                                     {"Client-Cert": "%%%"}])
def test_missing_or_unreadable_certificate_is_none(headers: dict[str, str]) -> None:
    assert certificate_fingerprint(headers) is None


@pytest.mark.parametrize(("header", "expected"), [
    ("fr-FR,fr;q=0.9,en;q=0.5", "fr"), ("de-DE, ar;q=0.8, en;q=0.9", "en"), ("ar-MA", "ar"), ("", "en"),
    ("de", "en"), ("fr;q=0, ar", "ar"), ("en;q=abc, fr", "fr")])
def test_preferred_language(header: str, expected: str) -> None:
    assert preferred_language(header, "en") == expected
