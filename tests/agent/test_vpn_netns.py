"""A real OpenVPN tunnel between two network namespaces, checked by the real agent command.

Namespace "server" holds the organisation's network 203.0.113.0/24 (RFC 5737) behind an OpenVPN
static-key point-to-point server; namespace "client" is the laptop: its default route goes out over a veth
("the Internet", 192.0.2.0/25) and its OpenVPN client, on an interface deliberately named ``office`` (the
kind must come from the interface type, not a ``tun*`` name), adds a route for the corporate network.
``teleposture-agent check --only vpn`` runs as a separate process inside the client namespace:

* tunnel up and routing 203.0.113.0/24   -> pass (and a datagram to 203.0.113.1 really enters the tunnel);
* tunnel up, 203.0.113.0/24 via the veth -> fail, the reason names the network and the interface;
* tunnel down                            -> fail;
* the service's cheap sampler (sysfs, not ``ip``) sees ``office`` as a tunnel while it is up, and no tunnel after;
* with documentation ranges on the client's own link, a full tunnel (OpenVPN's 0.0.0.0/1 + 128.0.0.0/1) gives
  "default route via office" and a split tunnel "via vcli": the default-route probe address is never on-link.

Only documentation addresses, only inside namespaces this test creates and deletes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import pytest

from benchmarks.openvpn_lab import SERVER_VETH, NetnsPair, sh, wait_for_text

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
DATAGRAMS = 20  # sent per traffic probe: enough to tell "through the tunnel" from its own stray packets
CORPORATE = "203.0.113.0/24"
SERVER_TUN, CLIENT_TUN = "192.0.2.129", "192.0.2.130"  # the tunnel's point-to-point addresses
CLIENT_TUN_DEV, SERVER_TUN_DEV = "office", "corpnet0"


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("ip", "openvpn"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


class Lab(NetnsPair):
    """The namespace pair (the veth is the client's "Internet", 192.0.2.0/25), the organisation's network
    behind the server, and a static-key OpenVPN tunnel between them; everything torn down in close()."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("tpv")
        self.tmp = tmp
        self.client_proc: Any = None
        self.key = tmp / "static.key"
        version = sh("openvpn", "--version", check=False).stdout
        # 2.7 refuses static keys unless told; 2.6 does not know that option
        self.extra = ["--allow-deprecated-insecure-static-crypto"] if " 2.7" in version.split("\n")[0] else []

    def build(self) -> None:
        super().build()
        sh("ip", "-n", self.client, "route", "add", "default", "via", SERVER_VETH)
        # the organisation's network, behind the server
        sh("ip", "-n", self.server, "addr", "add", "203.0.113.1/32", "dev", "lo")
        sh("openvpn", "--genkey", "secret", str(self.key))

    def _openvpn(self, ns: str, log: Path, args: List[str]) -> subprocess.Popen:
        return self.spawn(ns, ["openvpn", "--dev-type", "tun", "--secret", str(self.key), "--cipher", "AES-256-CBC",
                               "--proto", "udp", "--ping", "1", "--verb", "3", "--log", str(log), *self.extra, *args])

    def start_server(self) -> None:
        log = self.tmp / "server.log"
        proc = self._openvpn(self.server, log, ["--dev", SERVER_TUN_DEV, "--ifconfig", SERVER_TUN, CLIENT_TUN,
                                                "--local", SERVER_VETH, "--lport", "1194"])
        wait_for_text(log, ("link local (bound)",), proc, 20)

    def start_client(self, extra_routes: Sequence[str] = ()) -> None:
        log = self.tmp / "client.log"
        if log.exists():
            log.unlink()  # a restart waits for its own "Initialization Sequence Completed"
        self.client_proc = self._openvpn(self.client, log, [
            "--dev", CLIENT_TUN_DEV, "--ifconfig", CLIENT_TUN, SERVER_TUN, "--remote", SERVER_VETH, "1194",
            "--nobind", "--route", "203.0.113.0", "255.255.255.0", *extra_routes])
        wait_for_text(log, ("Initialization Sequence Completed",), self.client_proc, 20)

    def stop_client(self) -> None:
        self.client_proc.terminate()
        self.client_proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sh("ip", "-n", self.client, "link", "show", CLIENT_TUN_DEV,
                                                 check=False).returncode == 0:
            time.sleep(0.05)

    def server_tun_rx(self) -> int:
        out = sh("ip", "netns", "exec", self.server, "cat", f"/sys/class/net/{SERVER_TUN_DEV}/statistics/rx_packets")
        return int(out.stdout.strip())

    def send_datagram_to_corporate(self, count: int = DATAGRAMS) -> None:
        code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range({count}): s.sendto(b'x', ('203.0.113.1', 9))")
        sh("ip", "netns", "exec", self.client, sys.executable, "-c", code)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _require_tools()
    lab = Lab(tmp_path_factory.mktemp("vpn-netns"))
    try:
        lab.build()
        lab.start_server()
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = {
        "schema": "teleposture/policy/v1", "id": "netns-vpn-test", "version": 1,
        "title": {"en": "VPN test", "fr": "Test VPN", "ar": "اختبار VPN"},
        "rules": [{
            "id": "vpn-corporate-traffic", "check": "vpn", "severity": "high", "grace": "0h",
            "expect": {"tunnel_up": True},
            "params": {"corporate_networks": [CORPORATE]},
            "title": {"en": "VPN carries work traffic", "fr": "VPN", "ar": "VPN"},
            "remediation": {"en": "Connect the VPN.", "fr": "Connectez le VPN.", "ar": "اتصل بالشبكة"},
        }],
    }
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_text(json.dumps(policy, ensure_ascii=False), encoding="utf-8")
    return path


def agent_check(lab: Lab, policy: Path, extra: Sequence[str] = ()) -> Tuple[int, Dict[str, Any]]:
    """Run `teleposture-agent check --only vpn --json` as a real process inside the client namespace."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.client, sys.executable, "-m", "agent.cli.main", "check", "--only", "vpn",
         "--policy", str(policy), "--json", "--state-dir", str(lab.tmp / "state"), *extra],
        capture_output=True, text=True, cwd=str(REPO), env=env, timeout=60, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"check did not print JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from exc
    return proc.returncode, report


def sampled_tunnels(lab: Lab) -> List[str]:
    """The tunnels the service's VPN sampler sees inside the client namespace (a separate process: its /sys)."""
    code = "import json; from agent.probes import LiveHost; from agent.service.sampler import take_sample; " \
           "print(json.dumps(take_sample(LiveHost()).tunnels))"
    proc = subprocess.run(["ip", "netns", "exec", lab.client, sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30, check=True)
    return list(json.loads(proc.stdout))


def vpn_result(report: Dict[str, Any]) -> Dict[str, Any]:
    results = [r for r in report["results"] if r["check"] == "vpn"]
    assert len(results) == 1, report["results"]
    return results[0]


def test_tunnel_up_and_routing_the_corporate_network_passes(lab: Lab, policy_file: Path) -> None:
    lab.start_client()
    code, report = agent_check(lab, policy_file)
    facts = report["facts"]["vpn"]["facts"]
    assert report["facts"]["vpn"]["state"] == "ok"
    assert facts["tunnel_up"] is True
    assert {"name": CLIENT_TUN_DEV, "kind": "tun", "up": True} == {
        k: v for k, v in facts["tunnels"][0].items() if k != "addresses"}
    assert f"{CLIENT_TUN}/32" in facts["tunnels"][0]["addresses"]
    assert facts["corporate_routes"] == [{"network": CORPORATE, "interface": CLIENT_TUN_DEV, "via_tunnel": True}]
    assert facts["corporate_networks_via_tunnel"] is True
    assert facts["default_route_interface"] == "vcli" and facts["default_route_via_tunnel"] is False
    assert "openvpn" in facts["vpn_clients"]
    assert vpn_result(report)["status"] == "pass"
    assert code == 0 and report["status"] == "compliant"
    # the facts match what the kernel does: a datagram to the corporate network enters the tunnel
    before = lab.server_tun_rx()
    lab.send_datagram_to_corporate()
    time.sleep(0.3)
    assert lab.server_tun_rx() - before >= DATAGRAMS


def test_tunnel_up_but_corporate_network_not_routed_through_it_fails(lab: Lab, policy_file: Path) -> None:
    sh("ip", "-n", lab.client, "route", "replace", CORPORATE, "via", SERVER_VETH, "dev", "vcli")
    try:
        code, report = agent_check(lab, policy_file)
        facts = report["facts"]["vpn"]["facts"]
        assert facts["tunnel_up"] is True
        assert facts["corporate_routes"] == [{"network": CORPORATE, "interface": "vcli", "via_tunnel": False}]
        assert facts["corporate_networks_via_tunnel"] is False
        result = vpn_result(report)
        assert result["status"] == "fail"
        assert CORPORATE in result["reason"] and "vcli" in result["reason"], result["reason"]
        assert code == 1 and report["status"] == "not_compliant"
        # and indeed the traffic bypasses the tunnel
        before = lab.server_tun_rx()
        lab.send_datagram_to_corporate()
        time.sleep(0.3)
        # (the tunnel carries a stray packet of its own now and then: compare with the datagrams sent)
        assert lab.server_tun_rx() - before < DATAGRAMS // 2
    finally:
        sh("ip", "-n", lab.client, "route", "replace", CORPORATE, "via", SERVER_TUN, "dev", CLIENT_TUN_DEV)


def test_tunnel_down_fails(lab: Lab, policy_file: Path) -> None:
    sampled_up = sampled_tunnels(lab)
    lab.stop_client()
    assert (sampled_up, sampled_tunnels(lab)) == ([CLIENT_TUN_DEV], []), "the sampler disagrees with the kernel"
    code, report = agent_check(lab, policy_file)
    facts = report["facts"]["vpn"]["facts"]
    assert facts["tunnel_up"] is False and facts["tunnels"] == []
    assert facts["corporate_networks_via_tunnel"] is False
    result = vpn_result(report)
    assert result["status"] == "fail"
    assert code == 1 and report["status"] == "not_compliant"


# The client's "Internet" link also carries 198.51.100.0/24 (documentation ranges do get configured: a lab
# LAN, this test machine's eth0 on 192.0.2.0/24): with the corporate network 203.0.113.0/24, every address
# the agent used to look up for the default route (198.51.100.1, then 192.0.2.1) is on-link, and a full
# tunnel read as "default route via vcli".
LAN_EXTRA = "198.51.100.7/24"
TUNNELS = {
    "full-tunnel": (["--route", "0.0.0.0", "128.0.0.0", "--route", "128.0.0.0", "128.0.0.0"], CLIENT_TUN_DEV, True),
    "split-tunnel": ([], "vcli", False),
}


@pytest.mark.parametrize("setup", sorted(TUNNELS))
def test_default_route_probe_is_not_on_link(lab: Lab, policy_file: Path, setup: str) -> None:
    routes, interface, via_tunnel = TUNNELS[setup]
    sh("ip", "-n", lab.client, "addr", "add", LAN_EXTRA, "dev", "vcli")
    try:
        lab.start_client(routes)
        record = lab.tmp / f"{setup}.recording.json"
        code, report = agent_check(lab, policy_file, ["--record", str(record)])
        facts = report["facts"]["vpn"]["facts"]
        assert facts["tunnel_up"] is True and facts["corporate_networks_via_tunnel"] is True
        assert (facts["default_route_interface"], facts["default_route_via_tunnel"]) == (interface, via_tunnel)
        looked_up = [p["target"][-1] for p in json.loads(record.read_text())["probes"]
                     if p["target"][:4] == ["ip", "-j", "route", "get"]]
        # neither the on-link 198.51.100.1 / 192.0.2.1 nor the corporate 203.0.113.1 stands for the Internet
        assert looked_up == ["192.88.99.1", "203.0.113.1"], looked_up
        assert vpn_result(report)["status"] == "pass" and code == 0
        # the kernel agrees: the probe address leaves by the interface the facts name
        route = sh("ip", "-n", lab.client, "-j", "route", "get", "192.88.99.1").stdout
        assert json.loads(route)[0]["dev"] == interface
    finally:
        lab.stop_client()
        sh("ip", "-n", lab.client, "addr", "del", LAN_EXTRA, "dev", "vcli", check=False)
