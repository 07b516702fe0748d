"""Sinks: where events go. Webhook (Standard Webhooks signatures), e-mail (SMTP, STARTTLS, auth) and
syslog (RFC 5424 over TCP or TLS, octet-counted framing of RFC 6587, JSON/OCSF or CEF body).

A sender is opened per delivery round and sends events one at a time, in the order given; any failure
raises SinkError with a message for the dead-letter list. Nothing here touches the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets as token_source
import smtplib
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Optional, Protocol

import requests

from server.actions import texts

KINDS = ("webhook", "email", "syslog")
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)


class SinkError(Exception):
    """A delivery that failed; the message says what the other side answered or why it could not be reached."""


@dataclass(frozen=True)
class Sink:
    id: int
    name: str
    kind: str
    config: Mapping[str, Any]
    secret: Optional[str] = None  # decrypted
    filters: Mapping[str, Any] = field(default_factory=dict)


class Sender(Protocol):
    def send(self, uid: str, body_text: str, body: Mapping[str, Any]) -> None: ...

    def flush(self) -> None:
        """Return once everything sent is known to be received (raise SinkError otherwise)."""

    def close(self) -> None: ...


# -- configuration checks (the admin API) ------------------------------------------------------------

def check_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised configuration of a sink; ValueError naming what is wrong."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, found {kind!r}")
    out = dict(config)
    if kind == "webhook":
        url = str(out.get("url") or "")
        if not url.startswith(("https://", "http://")):
            raise ValueError("webhook: `url` must be an http(s) URL")
        out = {"url": url, "timeout": float(out.get("timeout") or 10)}
    elif kind == "email":
        recipients = out.get("to") or []
        if not isinstance(recipients, list) or not all(isinstance(r, str) and "@" in r for r in recipients):
            raise ValueError("email: `to` must be a list of e-mail addresses")
        if not isinstance(out.get("host"), str) or not out["host"]:
            raise ValueError("email: `host` (the SMTP server) is required")
        sender = out.get("from")
        if not isinstance(sender, str) or "@" not in sender:
            raise ValueError("email: `from` must be an e-mail address")
        out = {"host": out["host"], "port": int(out.get("port") or 587), "starttls": bool(out.get("starttls", True)),
               "username": out.get("username") or None, "from": sender, "to": recipients,
               "language": out.get("language") if out.get("language") in ("en", "fr", "ar") else "en",
               "ca_file": out.get("ca_file") or None, "timeout": float(out.get("timeout") or 15)}
    else:
        if not isinstance(out.get("host"), str) or not out["host"]:
            raise ValueError("syslog: `host` is required")
        transport = out.get("transport") or "tcp"
        if transport not in ("tcp", "tls"):
            raise ValueError("syslog: `transport` must be tcp or tls")
        body_format = out.get("format") or "json"
        if body_format not in ("json", "cef"):
            raise ValueError("syslog: `format` must be json (OCSF) or cef")
        out = {"host": out["host"], "port": int(out.get("port") or (6514 if transport == "tls" else 514)),
               "transport": transport, "format": body_format, "ca_file": out.get("ca_file") or None,
               "facility": int(str(out.get("facility") if out.get("facility") is not None else 13)),
               "timeout": float(out.get("timeout") or 10)}
        if not 0 <= out["facility"] <= 23:
            raise ValueError("syslog: `facility` must be 0..23")
    return out


def new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(token_source.token_bytes(24)).decode("ascii")


# -- webhook -----------------------------------------------------------------------------------------

def webhook_signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`` (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhookSender:
    def __init__(self, sink: Sink) -> None:
        if not sink.secret:
            raise SinkError("webhook sink has no signing secret")
        self.sink = sink
        self.session = requests.Session()

    def send(self, uid: str, body_text: str, body: Mapping[str, Any]) -> None:
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": uid, "webhook-timestamp": str(timestamp),
                   "webhook-signature": webhook_signature(str(self.sink.secret), uid, timestamp, body_text),
                   "user-agent": "Teleposture-collector"}
        try:
            response = self.session.post(str(self.sink.config["url"]), data=body_text.encode("utf-8"),
                                         headers=headers, timeout=float(self.sink.config.get("timeout", 10)),
                                         allow_redirects=False)
        except requests.RequestException as exc:
            raise SinkError(f"webhook {self.sink.config['url']} unreachable: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise SinkError(f"webhook answered HTTP {response.status_code}: {response.text[:200]}")

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.session.close()


# -- e-mail ------------------------------------------------------------------------------------------

def email_message(body: Mapping[str, Any], *, sender: str, recipients: list[str], language: str) -> EmailMessage:
    """One message, plain text and HTML, in ``language``."""
    message = EmailMessage()
    message["Subject"] = texts.subject(body, language)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Message-ID"] = make_msgid(idstring=str(body.get("metadata", {}).get("uid", ""))[:40])
    message["X-Teleposture-Event-Id"] = str(body.get("metadata", {}).get("uid", ""))
    rows = texts.lines(body, language)
    plain = "\n".join(f"{label}: {value}" for label, value in rows) + "\n"
    direction = "rtl" if language == "ar" else "ltr"
    cells = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>" for label, value in rows)
    message.set_content(plain)
    message.add_alternative(f'<html lang="{language}" dir="{direction}"><body><h1>{html.escape(message["Subject"])}'
                            f"</h1><table>{cells}</table></body></html>", subtype="html")
    # After add_alternative, which moves Content-* headers into the first part.
    message["Content-Language"] = language
    return message


class EmailSender:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        config = sink.config
        try:
            self.smtp = smtplib.SMTP(str(config["host"]), int(config["port"]), timeout=float(config["timeout"]))
            if config.get("starttls"):
                context = ssl.create_default_context(cafile=config.get("ca_file"))
                self.smtp.starttls(context=context)
            if config.get("username"):
                self.smtp.login(str(config["username"]), sink.secret or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise SinkError(f"SMTP {config['host']}:{config['port']}: {exc}") from exc

    def send(self, uid: str, body_text: str, body: Mapping[str, Any]) -> None:
        info = body.get("unmapped", {}).get("teleposture", {})
        recipients = list(self.sink.config["to"])
        language = str(self.sink.config.get("language") or "en")
        if info.get("action") == "notify_manager" and info.get("recipients"):
            # The org unit's contacts, in the org unit's language (docs/actions.md).
            recipients = list(info["recipients"])
            language = str(info.get("language") or language)
        message = email_message(body, sender=str(self.sink.config["from"]), recipients=recipients, language=language)
        try:
            self.smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise SinkError(f"SMTP refused the message: {exc}") from exc

    def flush(self) -> None:
        return None

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (OSError, smtplib.SMTPException):
            self.smtp.close()


# -- syslog ------------------------------------------------------------------------------------------

SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
PEN = 32473  # the private enterprise number RFC 5612 reserves for documentation


def _cef_header(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cef_ext(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def cef_line(body: Mapping[str, Any]) -> str:
    info = body.get("unmapped", {}).get("teleposture", {})
    severity = {1: 1, 2: 3, 3: 5, 4: 8, 5: 10}.get(int(body.get("severity_id") or 1), 1)
    ext = {"rt": body.get("time"), "externalId": body.get("metadata", {}).get("uid"),
           "dvchost": info.get("hostname"), "deviceExternalId": body.get("device", {}).get("uid"),
           "cs1Label": "rule", "cs1": info.get("rule_id"), "cs2Label": "action", "cs2": info.get("action"),
           "msg": body.get("message")}
    extension = " ".join(f"{key}={_cef_ext(value)}" for key, value in ext.items() if value is not None)
    return (f"CEF:0|Teleposture|Teleposture collector|1|{_cef_header(info.get('type'))}|"
            f"{_cef_header(body.get('message'))}|{severity}|{extension}")


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_frame(body: Mapping[str, Any], body_text: str, *, facility: int, body_format: str,
                 hostname: str) -> bytes:
    """One RFC 5424 message with octet-counting framing (RFC 6587 section 3.4.1)."""
    info = body.get("unmapped", {}).get("teleposture", {})
    severity = SYSLOG_SEVERITY.get(str(info.get("severity") or body.get("severity", "")).lower(), 6)
    stamp = datetime.fromtimestamp(float(body.get("time") or 0) / 1000, tz=timezone.utc)
    timestamp = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    uid = str(body.get("metadata", {}).get("uid", "-"))
    msgid = "".join(ch for ch in str(info.get("type") or "-") if 33 <= ord(ch) <= 126)[:32] or "-"
    structured = f'[teleposture@{PEN} eventId="{_sd_value(uid)}"]'
    text = cef_line(body) if body_format == "cef" else body_text
    # BOM: the MSG is UTF-8 (RFC 5424 section 6.4).
    message = (f"<{facility * 8 + severity}>1 {timestamp} {hostname[:255] or '-'} teleposture - {msgid} "
               f"{structured} ").encode() + b"\xef\xbb\xbf" + text.encode("utf-8")
    return str(len(message)).encode() + b" " + message


class SyslogSender:
    """Frames are buffered and written on ``flush`` over one connection, which then half-closes and waits
    for the receiver to close too: only then were all frames read (a plain TCP write succeeds even when
    the peer is gone). A failed flush fails the whole batch, which is retried (at least once)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.hostname = socket.gethostname()
        self.frames: list[bytes] = []

    def send(self, uid: str, body_text: str, body: Mapping[str, Any]) -> None:
        self.frames.append(syslog_frame(body, body_text, facility=int(self.sink.config["facility"]),
                                        body_format=str(self.sink.config["format"]), hostname=self.hostname))

    def flush(self) -> None:
        if not self.frames:
            return
        config = self.sink.config
        where = f"syslog {config['host']}:{config['port']}"
        try:
            sock = socket.create_connection((str(config["host"]), int(config["port"])), timeout=float(config["timeout"]))
        except OSError as exc:
            raise SinkError(f"{where} unreachable: {exc}") from exc
        try:
            if config["transport"] == "tls":
                context = ssl.create_default_context(cafile=config.get("ca_file"))
                sock = context.wrap_socket(sock, server_hostname=str(config["host"]))
            sock.sendall(b"".join(self.frames))
            closed_by_peer = False
            if isinstance(sock, ssl.SSLSocket):
                try:
                    sock = sock.unwrap()  # our close_notify (after every frame), then the TCP half-close
                except ssl.SSLEOFError:
                    # The receiver read up to our close_notify and closed without its own (rsyslog does).
                    closed_by_peer = True
            if not closed_by_peer:
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"{where}: {exc}") from exc
        finally:
            sock.close()
        self.frames.clear()

    def close(self) -> None:
        self.frames.clear()


def open_sender(sink: Sink) -> Sender:
    if sink.kind == "webhook":
        return WebhookSender(sink)
    if sink.kind == "email":
        return EmailSender(sink)
    if sink.kind == "syslog":
        return SyslogSender(sink)
    raise SinkError(f"unknown sink kind {sink.kind!r}")


def decode(body_text: str) -> dict[str, Any]:
    loaded = json.loads(body_text)
    return loaded if isinstance(loaded, dict) else {}
