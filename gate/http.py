"""The reverse-proxy gate: a forward-auth endpoint for nginx ``auth_request``, Traefik ForwardAuth and
Caddy ``forward_auth``.

The proxy terminates mTLS against the collector's device CA and passes the verified client certificate
in a header; the gate identifies the device by the certificate's SHA-256, verifies the collector's
signed decision for it, and answers 200 with ``X-Teleposture-Device`` and ``X-Teleposture-Decision``
or 403 with a page in the browser's language (Accept-Language) saying what to fix.

Certificate headers understood (the first present wins):
  X-SSL-Client-Cert             nginx ``$ssl_client_escaped_cert`` (URL-encoded PEM)
  Client-Cert                   RFC 9440 (``:base64 DER:``), e.g. Caddy ``{http.request.tls.client.certificate_der_base64}``
  X-Forwarded-Tls-Client-Cert   Traefik ``passTLSClientCert`` with ``pem: true`` (URL-encoded base64 DER)

Listen on loopback (or a private interface) only: whoever can reach the gate can claim a certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.ttlcache import TTLCache
from gate.core import Gate, Verdict
from gate.messages import refusal_page
from gate.settings import LANGUAGES

log = logging.getLogger("teleposture.gate.http")

HEADER_DEVICE = "X-Teleposture-Device"
HEADER_DECISION = "X-Teleposture-Decision"


def certificate_fingerprint(headers: Mapping[str, str]) -> Optional[str]:
    """SHA-256 (hex) of the client certificate a proxy passed, or None when there is none or it is unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if lowered.get("x-ssl-client-cert"):
            pem = unquote(lowered["x-ssl-client-cert"]).encode("ascii")
            der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        elif lowered.get("client-cert"):
            der = base64.b64decode(lowered["client-cert"].strip().strip(":"), validate=True)
            x509.load_der_x509_certificate(der)
        elif lowered.get("x-forwarded-tls-client-cert"):
            first = unquote(lowered["x-forwarded-tls-client-cert"]).split(",")[0]
            body = "".join(line for line in first.splitlines() if "-----" not in line)
            der = base64.b64decode(body.strip(), validate=False)
            x509.load_der_x509_certificate(der)
        else:
            return None
    except (ValueError, UnicodeEncodeError, binascii.Error):
        return None
    return hashlib.sha256(der).hexdigest()


def preferred_language(accept_language: str, default: str) -> str:
    """The first of en/fr/ar in an Accept-Language header, by quality then order; ``default`` otherwise."""
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = tag.strip().lower()[:2]
        if lang in LANGUAGES and quality > 0:
            choices.append((-quality, index, lang))
    return min(choices)[2] if choices else default


class ForwardAuth:
    """Verdicts per certificate, remembered for at most ``recheck_interval`` (and never past the decision's
    expiry), so a busy application does not ask the collector on every request."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._memo: TTLCache[str, Verdict] = TTLCache(gate.settings.recheck_interval, max_entries=100_000)
        self._last_outcome: dict[str, bool] = {}
        self._lock = threading.Lock()

    def verdict(self, fingerprint: str) -> Verdict:
        memo = self._memo.get(fingerprint)
        if memo is not None:
            return memo
        verdict = self.gate.decide(fingerprint)
        lifetime = self.gate.settings.recheck_interval
        if verdict.decision is not None:
            lifetime = min(lifetime, max(0.0, verdict.decision.expires_at - self.gate.clock()))
        self._memo.put(fingerprint, verdict, ttl=lifetime)
        with self._lock:
            changed = self._last_outcome.get(fingerprint) != verdict.allowed
            self._last_outcome[fingerprint] = verdict.allowed
        if changed:  # report what changes, not every request
            log.info("request fingerprint=%s %s %s (%s)", fingerprint, "ALLOW" if verdict.allowed else "DENY",
                     verdict.code, verdict.detail)
            self.gate.record(fingerprint, "request", verdict)
        return verdict


class Handler(BaseHTTPRequestHandler):
    server: ForwardAuthServer
    server_version = "teleposture-gate"
    sys_version = ""

    def _answer(self) -> None:
        if self.path.split("?")[0] == "/health":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        auth = self.server.auth
        lang = preferred_language(self.headers.get("Accept-Language", ""), auth.gate.settings.language)
        fingerprint = certificate_fingerprint(dict(self.headers.items()))
        if fingerprint is None:
            verdict = Verdict(False, "no_certificate", None, "no client certificate passed by the proxy")
        else:
            verdict = auth.verdict(fingerprint)
        if verdict.allowed and verdict.decision is not None:
            self._send(200, b"", "text/plain; charset=utf-8", {
                HEADER_DEVICE: verdict.decision.device_id,
                HEADER_DECISION: "allow" if verdict.code == "ok" else verdict.code})
            return
        causes = verdict.decision.causes if verdict.decision is not None and not verdict.decision.allowed else ()
        page = refusal_page(lang, verdict.code, causes).encode("utf-8")
        extra = {HEADER_DECISION: "deny"}
        if verdict.device_id:
            extra[HEADER_DEVICE] = verdict.device_id
        self._send(403, page, "text/html; charset=utf-8", extra)

    def _send(self, status: int, body: bytes, content_type: str, headers: Optional[dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)


class ForwardAuthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], auth: ForwardAuth) -> None:
        super().__init__(address, Handler)
        self.auth = auth


def serve(gate: Gate, host: str, port: int, stop: threading.Event) -> None:
    """Answer forward-auth requests until ``stop`` is set; report gate decisions every few seconds."""
    server = ForwardAuthServer((host, port), ForwardAuth(gate))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
    thread.start()
    log.info("forward-auth gate listening on http://%s:%d", host, server.server_address[1])
    try:
        while not stop.wait(5.0):
            gate.flush_reports()
    finally:
        server.shutdown()
        server.server_close()
        gate.flush_reports()
