"""teleposture-gate behind a real nginx (auth_request) in front of a small application, with curl presenting
device certificates issued by the collector's device CA.

Real processes: the collector (`teleposture-server serve`, SQLite), `teleposture-gate http`, nginx (own
config, pid, logs and temp dirs under the test's directory, free ports) and curl. Behaviours of issue 14:
compliant device -> the application answers (and sees the device id); denied device -> 403 page in the
browser's language; revoked device -> 403 (and no new certificate); no or a foreign certificate -> refused at TLS.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks.collector_sim import Posture, SimDevice
from benchmarks.loopback import free_port, serve
from benchmarks.openvpn_lab import Pki, wait_for_text
from tests.server.conftest import init_collector, run_cli

pytestmark = pytest.mark.slow

GATE_BIN = Path(sys.executable).with_name("teleposture-gate")
HOST = "app.example.org"


class App(BaseHTTPRequestHandler):
    """The protected application: says hello to the device nginx vouches for."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = f"hello {self.headers.get('X-Teleposture-Device', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


NGINX_CONF = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {device_ca};
        ssl_verify_client on;

        location / {{
            auth_request /_teleposture;
            auth_request_set $tp_device $upstream_http_x_teleposture_device;
            proxy_set_header X-Teleposture-Device $tp_device;
            error_page 403 = @teleposture_denied;
            proxy_pass http://127.0.0.1:{app_port};
        }}
        location = /_teleposture {{
            internal;
            proxy_pass http://127.0.0.1:{gate_port}/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
        }}
        location @teleposture_denied {{
            # a named location passes the original URI; the gate answers its verdict page on any path
            proxy_pass http://127.0.0.1:{gate_port};
            proxy_method GET;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
        }}
    }}
}}
"""


@dataclass
class DeviceTls:
    device: SimDevice
    cert: Path
    key: Path


@dataclass
class Stack:
    tmp: Path
    url: str
    admin_token: str
    data_dir: Path
    pki: Pki
    port: int

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + "/api/v1/admin" + path, timeout=10,
                             headers={"Authorization": f"Bearer {self.admin_token}"}, **kwargs)

    def report(self, device: SimDevice, posture: Posture) -> None:
        device.posture = posture
        answer = httpx.post(self.url + "/api/v1/reports", json={"envelopes": [device.report()]}, timeout=10)
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text

    def request_certificate(self, device: SimDevice, name: str) -> httpx.Response:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever the laptop says")]))
               .sign(key, hashes.SHA256()))
        key_path = self.tmp / f"{name}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return httpx.post(self.url + "/api/v1/device-certificate", timeout=10,
                          headers=device.signed_headers("POST", "/api/v1/device-certificate"),
                          json={"csr": csr.public_bytes(serialization.Encoding.PEM).decode()})

    def device(self, name: str, posture: Posture) -> DeviceTls:
        code, out, err = run_cli("--data-dir", str(self.data_dir), "token", "create", "--org-unit", "Finance")
        assert code == 0, err
        device = SimDevice.numbered(int(time.time() * 1000) % 100000, prefix=name)
        answer = httpx.post(self.url + "/api/v1/enroll", json=device.enroll_body(out.strip().splitlines()[-1]),
                            timeout=10)
        device.device_id = answer.json()["device_id"]
        self.report(device, posture)
        issued = self.request_certificate(device, name)
        assert issued.status_code == 200, issued.text
        cert = x509.load_pem_x509_certificate(issued.json()["certificate"].encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device.device_id
        assert cert.not_valid_after_utc.timestamp() - time.time() < 7 * 86400 + 60  # short-lived
        (self.tmp / f"{name}.crt").write_text(issued.json()["certificate"])
        return DeviceTls(device, self.tmp / f"{name}.crt", self.tmp / f"{name}.key")

    def curl(self, tls: DeviceTls | None, lang: str = "en") -> tuple[int, str]:
        argv = ["curl", "-sS", "--max-time", "20", "--resolve", f"{HOST}:{self.port}:127.0.0.1",
                "--cacert", str(self.pki.ca), "-H", f"Accept-Language: {lang}",
                "-o", "-", "-w", "\n%{http_code}", f"https://{HOST}:{self.port}/records"]
        if tls is not None:
            argv[1:1] = ["--cert", str(tls.cert), "--key", str(tls.key)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        body, _, status = proc.stdout.rpartition("\n")
        return int(status or 0), body + proc.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert shutil.which("nginx") and shutil.which("curl"), "nginx and curl must be installed (scripts/setup-dev.sh)"
    tmp = tmp_path_factory.mktemp("reverse-proxy-gate")
    data_dir = tmp / "collector"
    database_url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
    admin_token = init_collector(data_dir, database_url)
    code, out, err = run_cli("--data-dir", str(data_dir), "gate-token", "create", "proxy")
    assert code == 0, err
    lines = out.strip().splitlines()
    with contextlib.ExitStack() as cleanup:
        collector = cleanup.enter_context(serve(data_dir, database_url))
        device_ca = httpx.get(collector.url + "/api/v1/gate/device-ca", timeout=10,
                              headers={"Authorization": f"Bearer {lines[-1]}"})
        assert device_ca.status_code == 200 and "BEGIN CERTIFICATE" in device_ca.text
        (tmp / "device-ca.pem").write_text(device_ca.text)

        app = ThreadingHTTPServer(("127.0.0.1", 0), App)
        threading.Thread(target=app.serve_forever, daemon=True).start()
        cleanup.callback(app.shutdown)

        (tmp / "token").write_text(lines[-1])
        (tmp / "token").chmod(0o600)
        gate_port = free_port()
        (tmp / "gate.toml").write_text(
            f'public_key = "{lines[0].rsplit(" ", 1)[-1]}"\ncollector_url = "{collector.url}"\nallow_http = true\n'
            f'token_file = "{tmp / "token"}"\ncache_dir = "{tmp / "cache"}"\nrecheck_interval = "2s"\n')
        gate_log = tmp / "gate.log"
        with open(gate_log, "wb") as log:
            gate = subprocess.Popen([str(GATE_BIN), "--config", str(tmp / "gate.toml"), "http", "--listen",
                                     f"127.0.0.1:{gate_port}"], stdout=log, stderr=subprocess.STDOUT)
        cleanup.callback(gate.wait, 10)
        cleanup.callback(gate.terminate)
        wait_for_text(gate_log, ("forward-auth gate listening",), gate, 20)

        pki = Pki(tmp / "pki")
        server = pki.issue(HOST, server=True, dns=(HOST,))
        port = free_port()
        (tmp / "nginx" / "tmp").mkdir(parents=True)
        conf = tmp / "nginx" / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp / "nginx", port=port, host=HOST, cert=server.cert, key=server.key,
                                          device_ca=tmp / "device-ca.pem", app_port=app.server_address[1],
                                          gate_port=gate_port))
        with open(tmp / "nginx" / "stderr.log", "wb") as nginx_err:
            nginx = subprocess.Popen(["nginx", "-p", str(tmp / "nginx"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=nginx_err)
        cleanup.callback(nginx.wait, 10)
        cleanup.callback(nginx.terminate)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert nginx.poll() is None, (tmp / "nginx" / "stderr.log").read_text()
            time.sleep(0.1)
        yield Stack(tmp, collector.url, admin_token, data_dir, pki, port)


def test_compliant_device_reaches_the_application(stack: Stack) -> None:
    laptop = stack.device("compliant", Posture())
    status, body = stack.curl(laptop)
    assert status == 200, body
    assert body.strip() == f"hello {laptop.device.device_id}"  # the app sees the device nginx vouched for


def test_denied_device_gets_a_403_page_in_its_language(stack: Stack) -> None:
    laptop = stack.device("unencrypted", Posture(disk_encrypted=False))
    status, body = stack.curl(laptop, lang="fr-FR,fr;q=0.9,en;q=0.5")
    assert status == 403, body
    assert '<html lang="fr"' in body and "Accès refusé" in body and "Disque système chiffré" in body
    assert "hello" not in body
    status, body = stack.curl(laptop, lang="ar")
    assert status == 403 and 'dir="rtl"' in body and "تشفير قرص النظام" in body


def test_revoked_device_is_refused_and_gets_no_new_certificate(stack: Stack) -> None:
    laptop = stack.device("revoked", Posture())
    assert stack.curl(laptop)[0] == 200
    assert stack.admin("POST", f"/devices/{laptop.device.device_id}/revoke").status_code == 200
    time.sleep(2.5)  # the gate remembers a verdict for recheck_interval (2 s here, 30 s by default)
    status, body = stack.curl(laptop)
    assert status == 403, body
    assert "revoked" in body
    assert stack.request_certificate(laptop.device, "revoked-renewal").status_code == 403


def test_no_certificate_or_a_foreign_one_is_refused_at_tls(stack: Stack) -> None:
    status, body = stack.curl(None)
    assert status == 400 and "hello" not in body  # nginx: "No required SSL certificate was sent"
    foreign = stack.pki.issue("not-from-the-device-ca")
    status, body = stack.curl(DeviceTls(SimDevice.numbered(1), foreign.cert, foreign.key))
    assert status == 400 and "hello" not in body
