"""Real receivers the sink tests send to: an HTTP webhook endpoint that verifies Standard Webhooks
signatures with the `standardwebhooks` library (not our code), an aiosmtpd SMTP server, rsyslog."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class WebhookReceiver:
    secret: str
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    down: bool = False  # answer 503 to everything (a receiver "down for a while")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if receiver.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received.append({"id": headers["webhook-id"], "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def types(self, device_id: str | None = None) -> list[str]:
        with self.lock:
            return [r["body"]["metadata"]["event_code"] for r in self.received
                    if device_id is None or r["body"].get("device", {}).get("uid") == device_id]


def self_signed(directory: Any, host: str = "127.0.0.1") -> tuple[str, str]:
    """A throwaway CA-less certificate for ``host`` (IP SAN): (cert path, key path). Trust the cert itself."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory = Path(directory)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


class SmtpReceiver:
    """aiosmtpd on loopback requiring STARTTLS and AUTH (user/password), keeping every message."""

    def __init__(self, directory: Any, user: str = "alerts", password: str = "s3cret-pass") -> None:
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        from benchmarks.loopback import free_port

        self.cert, key = self_signed(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.messages: list[Any] = []
        self.down = False
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                if receiver.down:
                    return "451 4.3.0 try again later"
                import email
                from email import policy as email_policy

                message = email.message_from_bytes(envelope.original_content, policy=email_policy.default)
                receiver.messages.append({"to": list(envelope.rcpt_tos), "message": message})
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
            return AuthResult(success=ok)

        self.port = free_port()
        self.user, self.password = user, password
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True, auth_require_tls=True, authenticator=authenticate,
                                     auth_exclude_mechanism=["CRAM-MD5"])
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class RsyslogReceiver:
    """A real rsyslogd started with its own config: imtcp on a plain port and a TLS port (gtls), every
    message written as received (raw) to a file the test reads."""

    def __init__(self, directory: Any, ports: tuple[int, int] | None = None) -> None:
        import subprocess
        import time
        from pathlib import Path

        from benchmarks.loopback import free_port

        base = Path(directory)
        if (base / "cert.pem").exists():
            self.cert, key = str(base / "cert.pem"), str(base / "key.pem")
        else:
            self.cert, key = self_signed(base)
        self.out = base / "received.log"
        self.plain_port, self.tls_port = ports or (free_port(), free_port())
        self.pidfile = base / "rsyslogd.pid"
        config = base / "rsyslog.conf"
        config.write_text(f"""
global(workDirectory="{base}" defaultNetstreamDriverCAFile="{self.cert}"
       defaultNetstreamDriverCertFile="{self.cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="{self.tls_port}" address="127.0.0.1" name="tls")
module(load="imptcp")
input(type="imptcp" port="{self.plain_port}" address="127.0.0.1" name="plain")
template(name="raw" type="string" string="%inputname% %rawmsg%\\n")
action(type="omfile" file="{self.out}" template="raw" flushOnTXEnd="on" asyncWriting="off")
""")
        self.process = subprocess.Popen(["rsyslogd", "-n", "-f", str(config), "-i", str(self.pidfile)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        import socket

        while time.monotonic() < deadline:
            try:
                for port in (self.plain_port, self.tls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"rsyslogd exited: {self.process.stderr.read().decode()[:500]}"
                                       if self.process.stderr else "rsyslogd exited") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("rsyslogd did not listen")

    def lines(self) -> list[str]:
        return self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.process.kill()
