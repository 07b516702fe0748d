"""The OpenVPN gate: a client of OpenVPN's management interface started with ``--management-client-auth``.

OpenVPN asks the management client about every new connection (``>CLIENT:CONNECT``) and every TLS
renegotiation (``>CLIENT:REAUTH``) and waits for ``client-auth-nt`` or ``client-deny``; the deny's
client reason reaches the employee's OpenVPN log as ``AUTH_FAILED,<reason>``. Every ``recheck_interval``
seconds the gate re-decides each established client and ends denied ones with ``client-kill``. If the
gate is not running, OpenVPN admits nobody (the connection attempt times out): it fails closed.
(OpenVPN doc/management-notes.txt: client-auth-nt, client-deny, client-kill, >CLIENT: notifications.)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Optional

from gate import decision as tokens
from gate.core import Gate, Verdict
from gate.settings import LANGUAGES

log = logging.getLogger("teleposture.gate.openvpn")

ENV_FINGERPRINT = "tls_digest_sha256_0"
ENV_LANGUAGE = "UV_TELEPOSTURE_LANG"  # the client sets it: `setenv UV_TELEPOSTURE_LANG fr` + `push-peer-info`
REPORT_INTERVAL = 5.0


@dataclass
class ClientEvent:
    kind: str  # CONNECT REAUTH ESTABLISHED DISCONNECT
    cid: int
    kid: Optional[int]
    env: dict[str, str] = field(default_factory=dict)


class NotificationParser:
    """Pure: management-interface lines in, complete ``>CLIENT:`` events (with their ENV block) out."""

    def __init__(self) -> None:
        self._pending: Optional[ClientEvent] = None

    def feed(self, line: str) -> Optional[ClientEvent]:
        if not line.startswith(">CLIENT:"):
            return None
        body = line[len(">CLIENT:"):]
        if body.startswith("ENV,"):
            if self._pending is None:
                return None
            item = body[4:]
            if item == "END":
                done, self._pending = self._pending, None
                return done
            name, _, value = item.partition("=")
            self._pending.env[name] = value
            return None
        kind, _, rest = body.partition(",")
        parts = rest.split(",")
        if kind in ("CONNECT", "REAUTH") and len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            self._pending = ClientEvent(kind, int(parts[0]), int(parts[1]))
        elif kind in ("ESTABLISHED", "DISCONNECT") and parts and parts[0].isdigit():
            self._pending = ClientEvent(kind, int(parts[0]), None)
        return None


# OpenVPN refuses a management command parameter over 256 bytes ("Parameter ... is too long").
MAX_PARAMETER_BYTES = 250


def quote(text: str) -> str:
    """A management-interface argument: one line, at most MAX_PARAMETER_BYTES of UTF-8 once escaped
    (cut at a character boundary), double-quoted and backslash-escaped."""
    flat = " ".join(text.split())
    escaped = flat.replace("\\", "\\\\").replace('"', '\\"')
    while len(escaped.encode("utf-8")) > MAX_PARAMETER_BYTES:
        flat = flat[:-1]
        escaped = flat.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped + '"'


def language(env: dict[str, str], default: str) -> str:
    lang = env.get(ENV_LANGUAGE, "").strip().lower()[:2]
    return lang if lang in LANGUAGES else default


class OpenVPNGate:
    def __init__(self, gate: Gate, address: str, password: Optional[str] = None) -> None:
        self.gate = gate
        self.address = address
        self.password = password
        self.sock: Optional[socket.socket] = None
        self.send_lock = threading.Lock()
        self.clients: dict[int, str] = {}  # established cid -> fingerprint
        self.pending_fingerprints: dict[int, str] = {}  # cid -> fingerprint, between CONNECT and ESTABLISHED
        self.clients_lock = threading.Lock()
        self.workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gate-decide")

    # -- the socket -----------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        if ":" in self.address and not self.address.startswith("/"):
            host, _, port = self.address.rpartition(":")
            return socket.create_connection((host, int(port)), timeout=10)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.address)
        return sock

    def interrupt(self) -> None:
        """Unblock run() (from a signal handler): end the management connection."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def send(self, command: str) -> None:
        with self.send_lock:
            if self.sock is None:
                raise OSError("not connected to the OpenVPN management interface")
            self.sock.sendall(command.encode("utf-8") + b"\n")

    def _lines(self, sock: socket.socket) -> Iterator[str]:
        buffer = b""
        sock.settimeout(None)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
            if buffer.startswith(b"ENTER PASSWORD:"):
                buffer = buffer[len(b"ENTER PASSWORD:"):]
                self.send(self.password or "")
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                yield raw.decode("utf-8", errors="replace").rstrip("\r")

    # -- decisions --------------------------------------------------------------------------------

    def _decide(self, event: ClientEvent) -> None:
        fingerprint = event.env.get(ENV_FINGERPRINT, "")
        with contextlib.suppress(ValueError):
            fingerprint = tokens.normalise_fingerprint(fingerprint)
        name = event.env.get("common_name", "?")
        lang = language(event.env, self.gate.settings.language)
        try:
            verdict = self.gate.decide(fingerprint)
        except ValueError:  # no or malformed certificate digest
            verdict = Verdict(False, "unknown_certificate", None, f"no usable {ENV_FINGERPRINT} in the client's env")
        if verdict.allowed:
            with self.clients_lock:
                # a REAUTH comes from an established client (also one a restarted gate did not know)
                target = self.clients if event.kind == "REAUTH" else self.pending_fingerprints
                target[event.cid] = fingerprint
            self.send(f"client-auth-nt {event.cid} {event.kid}")
        else:
            self.send(f"client-deny {event.cid} {event.kid} {quote(verdict.code + ': ' + verdict.detail)} "
                      f"{quote(verdict.message(lang))}")
        log.info("%s cid=%d cn=%s fingerprint=%s %s %s (%s)", event.kind.lower(), event.cid, name, fingerprint,
                 "ALLOW" if verdict.allowed else "DENY", verdict.code, verdict.detail)
        if fingerprint:
            self.gate.record(fingerprint, event.kind.lower(), verdict)

    def _handle(self, event: ClientEvent) -> None:
        if event.kind in ("CONNECT", "REAUTH"):
            self.workers.submit(self._safe_decide, event)
        elif event.kind == "ESTABLISHED":
            with self.clients_lock:
                fingerprint = self.pending_fingerprints.pop(event.cid, None) or event.env.get(ENV_FINGERPRINT)
                if fingerprint:
                    self.clients[event.cid] = fingerprint
        elif event.kind == "DISCONNECT":
            with self.clients_lock:
                self.clients.pop(event.cid, None)
                self.pending_fingerprints.pop(event.cid, None)

    def _safe_decide(self, event: ClientEvent) -> None:
        try:
            self._decide(event)
        except OSError as exc:
            log.warning("could not answer OpenVPN about cid %d: %s", event.cid, exc)

    def recheck(self) -> int:
        """Re-decide every established client; kill the denied ones. Answers how many were killed."""
        with self.clients_lock:
            connected = dict(self.clients)
        killed = 0
        for cid, fingerprint in connected.items():
            verdict = self.gate.decide(fingerprint)
            if verdict.allowed:
                continue
            log.info("disconnect cid=%d fingerprint=%s DENY %s (%s)", cid, fingerprint, verdict.code, verdict.detail)
            try:
                self.send(f"client-kill {cid}")
            except OSError as exc:
                log.warning("client-kill %d failed: %s", cid, exc)
                continue
            with self.clients_lock:
                self.clients.pop(cid, None)
            self.gate.record(fingerprint, "disconnect", verdict)
            killed += 1
        return killed

    def _periodic(self, stop: threading.Event) -> None:
        next_report = 0.0
        elapsed = 0.0
        while not stop.wait(1.0):
            elapsed += 1.0
            if elapsed >= self.gate.settings.recheck_interval:
                elapsed = 0.0
                try:
                    self.recheck()
                except OSError as exc:
                    log.warning("recheck failed: %s", exc)
            next_report += 1.0
            if next_report >= REPORT_INTERVAL:
                next_report = 0.0
                self.gate.flush_reports()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; reconnects when OpenVPN restarts."""
        periodic = threading.Thread(target=self._periodic, args=(stop,), name="gate-periodic", daemon=True)
        periodic.start()
        while not stop.is_set():
            try:
                sock = self._connect()
            except OSError as exc:
                log.warning("cannot reach the OpenVPN management interface at %s: %s; retrying", self.address, exc)
                stop.wait(2.0)
                continue
            self.sock = sock
            log.info("connected to the OpenVPN management interface at %s", self.address)
            parser = NotificationParser()
            try:
                for line in self._lines(sock):
                    if line.startswith("ERROR:"):
                        log.warning("OpenVPN management: %s", line)
                    event = parser.feed(line)
                    if event is not None:
                        self._handle(event)
            except OSError as exc:
                log.warning("management connection lost: %s", exc)
            finally:
                with self.send_lock:
                    self.sock = None
                sock.close()
                with self.clients_lock:
                    self.clients.clear()
                    self.pending_fingerprints.clear()
            stop.wait(1.0)
        self.workers.shutdown(wait=False)
