"""A small in-test collector speaking protocol v1 on loopback, for unit-level fault tests only.

It implements just enough (enrol, reports with the seq dedupe rule, signed policy) to drive the agent,
and can be told to misbehave: answer 500, 429 with Retry-After, garbage, or answer slowly. The acceptance
tests use the real collector process (tests/agent/service/test_integration.py).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from agent import protocol
from agent.policy import baseline


class FakeCollector:
    def __init__(self) -> None:
        self.server_key = protocol.generate_private_key()
        self.server_key_b64 = protocol.public_key_b64(self.server_key)
        self.devices: Dict[str, Any] = {}
        self.highest: Dict[str, int] = {}
        self.accepted: List[int] = []
        self.payloads: List[Dict[str, Any]] = []
        self.duplicates: List[int] = []
        self.requests: List[str] = []
        self.faults: List[Dict[str, Any]] = []  # consumed one per request to /api/v1/reports
        self.reject_seqs: set = set()
        self.actions: Optional[List[Dict[str, Any]]] = None  # the ladders accepted answers carry, when set
        policy = baseline().to_json()
        self.bundle = protocol.sign_policy_bundle(self.server_key, policy)
        self.etag = '"1"'
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def set_policy(self, bundle: Dict[str, Any], etag: str) -> None:
        self.bundle, self.etag = bundle, etag

    def _handler(self) -> type:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _send(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                return json.loads(raw)

            def do_POST(self) -> None:  # noqa: N802
                fake.requests.append(f"POST {self.path}")
                if self.path == "/api/v1/enroll":
                    body = self._body()
                    device_id = f"dev-{len(fake.devices) + 1}"
                    fake.devices[device_id] = protocol.load_public_key(body["public_key"])
                    self._send(200, {"device_id": device_id, "server_key": fake.server_key_b64,
                                     "policy": fake.bundle, "intervals": {}})
                    return
                if self.path != "/api/v1/reports":
                    self._send(404, {"detail": "not found"})
                    return
                fault = fake.faults.pop(0) if fake.faults else None
                if fault:
                    if fault.get("sleep"):
                        time.sleep(fault["sleep"])
                    if fault.get("status"):
                        self._send(fault["status"], fault.get("body", {"detail": "fault"}).encode()
                                   if isinstance(fault.get("body"), str) else fault.get("body", {"detail": "x"}),
                                   fault.get("headers"))
                        return
                body = self._body()
                results = []
                with fake.lock:
                    for raw in body["envelopes"]:
                        env = protocol.Envelope.from_json(raw)
                        key = fake.devices.get(env.device_id)
                        if key is None:
                            results.append({"status": "rejected", "reason": "unknown device: enrol it first"})
                            continue
                        try:
                            payload = protocol.open_envelope(env, key)
                        except protocol.ProtocolError as exc:
                            results.append({"status": "rejected", "reason": str(exc)})
                            continue
                        seq = payload["seq"]
                        if seq in fake.reject_seqs:
                            results.append({"status": "rejected", "reason": "test rejects this seq"})
                        elif seq <= fake.highest.get(env.device_id, 0):
                            fake.duplicates.append(seq)
                            results.append({"status": "duplicate"})
                        else:
                            fake.highest[env.device_id] = seq
                            fake.accepted.append(seq)
                            fake.payloads.append(payload)
                            results.append({"status": "accepted"} if fake.actions is None
                                           else {"status": "accepted", "actions": fake.actions})
                self._send(200, {"results": results})

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(f"GET {self.path}")
                if self.path != "/api/v1/policy":
                    self._send(404, {"detail": "not found"})
                    return
                device = self.headers.get(protocol.HEADER_DEVICE, "")
                try:
                    protocol.check_request_signature(
                        fake.devices[device], "GET", self.path, self.headers.get(protocol.HEADER_TIMESTAMP, ""),
                        self.headers.get(protocol.HEADER_SIGNATURE, ""))
                except (KeyError, protocol.ProtocolError) as exc:
                    self._send(401, {"detail": str(exc)})
                    return
                if self.headers.get("If-None-Match") == fake.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self._send(200, fake.bundle, {"ETag": fake.etag})

        return Handler
