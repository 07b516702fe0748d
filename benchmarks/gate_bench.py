"""Access-gate figures: decisions verified per second offline, and the connect time the OpenVPN gate adds.

1. verify: compact JWS decisions (Ed25519) verified by gate.decision.verify with the collector's public
   key alone, binding and expiry checked, on one core, for ``--seconds``.
2. connect (root; needs openvpn): a real OpenVPN server and client in network namespaces
   (benchmarks/openvpn_lab.py); the time from starting the client to "Initialization Sequence Completed",
   median of ``--connects`` runs, without a gate and with `teleposture-gate openvpn` asking a real
   collector process (SQLite) on loopback. The difference is what the gate adds.

    .venv/bin/python benchmarks/gate_bench.py [--seconds 3] [--connects 7] [--skip-connect]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import protocol  # noqa: E402
from benchmarks.collector_sim import SimDevice  # noqa: E402
from benchmarks.loopback import serve  # noqa: E402
from benchmarks.openvpn_lab import VpnLab, wait_for_text  # noqa: E402
from gate import decision as tokens  # noqa: E402
from gate.core import Gate  # noqa: E402
from gate.settings import load as load_gate_settings  # noqa: E402
from server import cli  # noqa: E402

FINGERPRINT = "ab" * 32


def verify_rate(seconds: float) -> float:
    key = protocol.generate_private_key()
    now = time.time()
    token = tokens.sign(key, server_key_id="k", device_id="d", device_key_id="dk", decision="allow", since=now,
                        now=now, lifetime=900, fingerprints=[FINGERPRINT],
                        warnings=[{"code": "within_grace", "rule_id": "os-patches"}])
    public = tokens.public_jwk(key.public_key())
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            tokens.verify(token, public, now=now, fingerprint=FINGERPRINT)
        count += 200
    return count / (time.perf_counter() - start)


def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(args))
    if code != 0:
        raise RuntimeError(f"teleposture-server {' '.join(args)} failed")
    return out.getvalue()


def _connect_times(lab: VpnLab, identity: object, runs: int) -> List[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        client = lab.start_client(identity)  # type: ignore[arg-type]
        if client.outcome(timeout=60) != "connected":
            raise RuntimeError(f"client refused:\n{client.text()[-2000:]}")
        times.append(time.perf_counter() - start)
        client.stop()
        time.sleep(0.3)
    return times


def connect_latency(runs: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="tp-gate-bench-") as tmp_text:
        tmp = Path(tmp_text)
        data_dir = tmp / "collector"
        url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
        admin = _cli("--data-dir", str(data_dir), "--database-url", url, "init").strip().splitlines()[-1]
        lines = _cli("--data-dir", str(data_dir), "--database-url", url, "gate-token", "create", "bench"
                     ).strip().splitlines()
        enrol = _cli("--data-dir", str(data_dir), "--database-url", url, "token", "create", "--org-unit", "Bench"
                     ).strip().splitlines()[-1]
        lab = VpnLab(tmp / "lab")
        identity = lab.pki.issue("laptop")
        gate_proc: Optional[subprocess.Popen] = None
        try:
            lab.build()
            lab.start_server(client_auth=False)
            without = _connect_times(lab, identity, runs)
            with serve(data_dir, url) as collector:
                device = SimDevice.numbered(1)
                device.device_id = httpx.post(collector.url + "/api/v1/enroll", json=device.enroll_body(enrol),
                                              timeout=10).json()["device_id"]
                httpx.post(collector.url + "/api/v1/reports", json={"envelopes": [device.report()]}, timeout=10)
                httpx.post(f"{collector.url}/api/v1/admin/devices/{device.device_id}/credentials", timeout=10,
                           headers={"Authorization": f"Bearer {admin}"}, json={"fingerprint": identity.fingerprint})
                (tmp / "token").write_text(lines[-1])
                config = tmp / "gate.toml"
                config.write_text(f'public_key = "{lines[0].rsplit(" ", 1)[-1]}"\ncollector_url = "{collector.url}"\n'
                                  f'allow_http = true\ntoken_file = "{tmp / "token"}"\ncache_dir = "{tmp / "cache"}"\n'
                                  f'management = "{lab.management}"\n')
                lab.start_server(client_auth=True)
                log = tmp / "gate.log"
                with open(log, "wb") as out:
                    gate_proc = subprocess.Popen([str(Path(sys.executable).with_name("teleposture-gate")),
                                                  "--config", str(config), "openvpn"], stdout=out,
                                                 stderr=subprocess.STDOUT)
                wait_for_text(log, ("connected to the OpenVPN management interface",), gate_proc, 20)
                with_gate = _connect_times(lab, identity, runs)
                gate = Gate(load_gate_settings(config, {}))
                decide_times = []
                for _ in range(50):
                    start = time.perf_counter()
                    assert gate.decide(identity.fingerprint).allowed
                    decide_times.append(time.perf_counter() - start)
        finally:
            if gate_proc is not None and gate_proc.poll() is None:
                gate_proc.terminate()
                gate_proc.wait(timeout=10)
            lab.close()
    return statistics.median(without), statistics.median(with_gate), statistics.median(decide_times)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connects", type=int, default=7)
    parser.add_argument("--skip-connect", action="store_true")
    args = parser.parse_args(argv)
    print(f"decisions verified offline: {verify_rate(args.seconds):,.0f}/s (one core, Ed25519 JWS, binding + expiry)")
    if not args.skip_connect:
        if os.geteuid() != 0:
            print("connect latency: skipped (needs root for network namespaces)")
            return 0
        without, with_gate, decide = connect_latency(args.connects)
        print(f"OpenVPN connect, median of {args.connects}: without gate {without * 1000:.0f} ms, "
              f"with gate {with_gate * 1000:.0f} ms, added {(with_gate - without) * 1000:.0f} ms")
        print(f"  of which the gate's decision (fetch from the collector, verify, cache), median of 50: "
              f"{decide * 1000:.1f} ms (the rest is likely OpenVPN's deferred-auth round: the client's first "
              "PUSH_REQUEST waits for the management answer and is repeated a second later)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
