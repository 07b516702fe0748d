"""Linux VPN: recorded and constructed routing states parse to the expected facts, interface kinds come
from the interface type and not the name, and bad probe output is an error, never a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.declarations import conform
from agent.checks.vpn import linux
from agent.policy import evaluate, load_policy_text
from agent.probes import (
    NOT_FOUND,
    PERMISSION_DENIED,
    TIMEOUT,
    LiveHost,
    ProbeResult,
    Recording,
    ReplayHost,
)
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["vpn"]


def replay(fixture: str, networks: List[str]) -> Any:
    return replay_fixture(FAMILY, fixture, {"corporate_networks": networks})


# fixture, corporate networks (policy params), expected facts
EXPECTED: List[Any] = [
    pytest.param("debian-12/vpn-openvpn-split-tunnel-routed.json", ["203.0.113.0/24"], {
        "tunnel_up": True, "tunnel_kinds": {"office": "tun"}, "vpn_clients": ["openvpn"],
        "default_route_interface": "vcli", "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "203.0.113.0/24", "interface": "office", "via_tunnel": True}],
        "corporate_networks_via_tunnel": True,
    }, id="debian12-real-openvpn-split-routed"),
    pytest.param("debian-12/vpn-openvpn-full-tunnel.json", ["203.0.113.0/24"], {
        "tunnel_up": True, "tunnel_kinds": {"office": "tun"},
        # OpenVPN def1: the main table's default route stays on vB, 0.0.0.0/1 + 128.0.0.0/1 win
        "default_route_interface": "office", "default_route_via_tunnel": True,
        "corporate_networks_via_tunnel": True,
    }, id="debian12-real-openvpn-full-tunnel-def1"),
    # issue 15: documentation ranges on the LAN itself; the default-route probe is not on-link
    pytest.param("debian-12/vpn-openvpn-full-tunnel-documentation-lan.json", ["203.0.113.0/24"], {
        "tunnel_up": True, "default_route_interface": "office", "default_route_via_tunnel": True,
        "corporate_networks_via_tunnel": True,
    }, id="debian12-real-full-tunnel-documentation-lan"),
    pytest.param("debian-12/vpn-openvpn-split-tunnel-documentation-lan.json", ["203.0.113.0/24"], {
        "tunnel_up": True, "default_route_interface": "vcli", "default_route_via_tunnel": False,
        "corporate_networks_via_tunnel": True,
    }, id="debian12-real-split-tunnel-documentation-lan"),
    pytest.param("debian-12/vpn-tunnel-up-corporate-not-routed.json", ["203.0.113.0/24"], {
        "tunnel_up": True, "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "203.0.113.0/24", "interface": "vcli", "via_tunnel": False}],
        "corporate_networks_via_tunnel": False,
    }, id="debian12-real-tunnel-up-not-routed"),
    pytest.param("debian-12/vpn-no-tunnel.json", ["203.0.113.0/24"], {
        "tunnel_up": False, "tunnel_kinds": {}, "default_route_interface": "vcli", "default_route_via_tunnel": False,
        # a VPN process running (the test's server) is not a tunnel
        "vpn_clients": ["openvpn"], "corporate_networks_via_tunnel": False,
    }, id="debian12-real-no-tunnel"),
    pytest.param("debian-12/vpn-no-tunnel.json", [], {
        "tunnel_up": False, "corporate_routes": [], "corporate_networks_via_tunnel": None,
    }, id="debian12-no-corporate-network-named"),
    pytest.param("debian-12/vpn-ipsec-policy-based.json", ["203.0.113.0/24"], {
        # no interface: the xfrm policy 192.0.2.2/32 -> 203.0.113.0/24 tunnels to peer 192.0.2.1
        "tunnel_up": True, "tunnel_kinds": {"ipsec-policy:192.0.2.1": "ipsec"},
        "default_route_interface": "vcli", "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "203.0.113.0/24", "interface": "vcli", "via_tunnel": True}],
        "corporate_networks_via_tunnel": True,
    }, id="debian12-real-policy-based-ipsec"),
    pytest.param("debian-12/vpn-ipsec-policy-based.json", ["198.51.100.0/24"], {
        "tunnel_up": True,
        "corporate_routes": [{"network": "198.51.100.0/24", "interface": "vcli", "via_tunnel": False}],
        "corporate_networks_via_tunnel": False,
    }, id="debian12-ipsec-policy-not-covering-the-network"),
    pytest.param("ubuntu-24.04/vpn-wireguard-split-tunnel.json", ["10.20.0.0/16"], {
        "tunnel_up": True, "tunnel_kinds": {"wg-office": "wireguard"}, "vpn_clients": [],
        "configured_vpn_services": ["networkmanager:Office OpenVPN: backup", "networkmanager:Office WireGuard"],
        "default_route_interface": "wlp0s20f3", "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "10.20.0.0/16", "interface": "wg-office", "via_tunnel": True}],
        "corporate_networks_via_tunnel": True,
    }, id="ubuntu2404-wireguard-split"),
    pytest.param("ubuntu-22.04/vpn-wireguard-full-tunnel-policy-routing.json", ["10.20.0.0/16"], {
        "tunnel_up": True, "tunnel_kinds": {"wg0": "wireguard"}, "configured_vpn_services": ["wireguard:wg0"],
        "default_route_interface": "wg0", "default_route_via_tunnel": True, "corporate_networks_via_tunnel": True,
    }, id="ubuntu2204-wg-quick-full-policy-routing"),
    pytest.param("fedora-40/vpn-openconnect-partial-corporate-routes.json", ["10.20.0.0/16", "172.16.0.0/12"], {
        "tunnel_up": True, "tunnel_kinds": {"vpn0": "tun", "tun1": "tun", "tun2": "tun"},
        "vpn_clients": ["openconnect", "openconnect (NetworkManager)"],
        "default_route_interface": "wlp2s0", "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "10.20.0.0/16", "interface": "vpn0", "via_tunnel": True},
                             {"network": "172.16.0.0/12", "interface": "wlp2s0", "via_tunnel": False}],
        "corporate_networks_via_tunnel": False,
    }, id="fedora40-openconnect-one-network-not-routed"),
    pytest.param("fedora-41/vpn-lte-modem-no-vpn.json", ["10.20.0.0/16"], {
        # the raw-IP modem is link type none without linkinfo, like a tun: its uevent says DEVTYPE=wwan
        "tunnel_up": False, "tunnel_kinds": {}, "vpn_clients": [],
        "configured_vpn_services": ["networkmanager:Office OpenVPN"],
        "default_route_interface": "wwp0s20f0u6i4", "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "10.20.0.0/16", "interface": "wwp0s20f0u6i4", "via_tunnel": False}],
        "corporate_networks_via_tunnel": False,
    }, id="fedora41-lte-modem-no-vpn"),
    pytest.param("fedora-41/vpn-lte-modem-openvpn-routed.json", ["10.20.0.0/16"], {
        "tunnel_up": True, "tunnel_kinds": {"tun0": "tun"},
        "vpn_clients": ["openvpn", "openvpn (NetworkManager)"],
        "default_route_interface": "wwp0s20f0u6i4", "default_route_via_tunnel": False,
        "corporate_routes": [{"network": "10.20.0.0/16", "interface": "tun0", "via_tunnel": True}],
        "corporate_networks_via_tunnel": True,
    }, id="fedora41-lte-modem-openvpn-split-routed"),
]


@pytest.mark.parametrize(("fixture", "networks", "expected"), EXPECTED)
def test_fixture_parses_to_expected_facts(fixture: str, networks: List[str], expected: Dict[str, Any]) -> None:
    assert Recording.load(FIXTURES / fixture).note
    outcome = replay(fixture, networks)
    assert outcome.state == OK, outcome.reason
    assert conform(FAMILY.spec, outcome.facts) == []
    for name, value in expected.items():
        if name == "tunnel_kinds":
            assert {t["name"]: t["kind"] for t in outcome.facts["tunnels"]} == value
        else:
            assert outcome.facts[name] == value, name


def test_not_routed_reason_names_the_network_and_interface() -> None:
    outcome = replay("debian-12/vpn-tunnel-up-corporate-not-routed.json", ["203.0.113.0/24"])
    assert outcome.reason == "tunnel office is up but 203.0.113.0/24 is routed via vcli, not through a tunnel"


VPN_POLICY = load_policy_text("""\
schema: teleposture/policy/v1
id: lte
version: 1
title: {en: T, fr: T, ar: ت}
rules:
  - id: vpn-corporate-traffic
    check: vpn
    severity: high
    expect: {tunnel_up: true}
    params: {corporate_networks: [10.20.0.0/16]}
    title: {en: T, fr: T, ar: ت}
    remediation: {en: Fix it, fr: Corrigez, ar: أصلحه}
""", "lte.yaml")


@pytest.mark.parametrize(("fixture", "status", "summary"), [
    ("fedora-41/vpn-lte-modem-no-vpn.json", "fail", "no VPN tunnel is up"),
    ("fedora-41/vpn-lte-modem-openvpn-routed.json", "pass", "tunnel tun0 is up and routes every corporate network"),
])
def test_laptop_on_lte_is_judged_by_its_tunnel_not_its_modem(fixture: str, status: str, summary: str) -> None:
    outcome = replay(fixture, ["10.20.0.0/16"])
    assert outcome.reason == summary
    assert "wwp0s20f0u6i4: mobile broadband modem (DEVTYPE=wwan), not a tunnel" in outcome.evidence
    assert ("corporate 10.20.0.0/16: ip route get 10.20.0.1: dev wwp0s20f0u6i4 via 100.71.18.202, not a tunnel"
            in outcome.evidence) is (status == "fail")
    [result] = evaluate(VPN_POLICY, {"vpn": outcome.to_json()}, "linux", Recording.load(FIXTURES / fixture).recorded_at)
    assert result.status == status


class ReadLog(ReplayHost):
    """A replay that remembers which files the collector read."""

    def __init__(self, recording: Recording) -> None:
        super().__init__(recording)
        self.reads: List[str] = []

    def read_text(self, path: str) -> ProbeResult:
        self.reads.append(path)
        return super().read_text(path)


@pytest.mark.parametrize(("fixture", "network", "reads"), [
    # only the link-type-none interface without linkinfo or tun_flags costs a uevent read
    ("fedora-41/vpn-lte-modem-openvpn-routed.json", "10.20.0.0/16", ["/sys/class/net/wlp0s20f3/tun_flags",
                                                                      "/sys/class/net/wwp0s20f0u6i4/tun_flags",
                                                                      "/sys/class/net/wwp0s20f0u6i4/uevent"]),
    # the common cycle: ip -d names every interface's kind, nothing more is read than before
    ("ubuntu-24.04/vpn-wireguard-split-tunnel.json", "10.20.0.0/16", ["/sys/class/net/wlp0s20f3/tun_flags"]),
    ("debian-12/vpn-openvpn-split-tunnel-routed.json", "203.0.113.0/24", []),
])
def test_sysfs_is_read_only_where_ip_cannot_tell(fixture: str, network: str, reads: List[str]) -> None:
    host = ReadLog(Recording.load(FIXTURES / fixture))
    outcome = run_collector(FAMILY, host, {"corporate_networks": [network]})
    assert outcome.state == OK, outcome.reason
    assert host.reads == reads


def test_link_type_none_without_any_detail_still_counts_and_says_why() -> None:
    # tun_flags present (a tun on an old iproute2): a tunnel, and its uevent is not read
    recording = Recording.load(FIXTURES / "fedora-41/vpn-lte-modem-no-vpn.json")
    for key, probe in list(recording.probes.items()):
        if probe.target == ("/sys/class/net/wwp0s20f0u6i4/tun_flags",):
            recording.probes[key] = ProbeResult("read", probe.target, stdout="0x1001\n")
    host = ReadLog(recording)
    outcome = run_collector(FAMILY, host, {"corporate_networks": ["10.20.0.0/16"]})
    assert {t["name"]: t["kind"] for t in outcome.facts["tunnels"]} == {"wwp0s20f0u6i4": "tun"}
    assert "/sys/class/net/wwp0s20f0u6i4/uevent" not in host.reads
    # uevent unreadable: the type alone decides (a tunnel), and the evidence says the uevent was not read
    host = edited("fedora-41/vpn-lte-modem-no-vpn.json", ("/sys/class/net/wwp0s20f0u6i4/uevent",),
                  ProbeResult("read", (), rc=None, error=PERMISSION_DENIED))
    outcome = run_collector(FAMILY, host, {"corporate_networks": ["10.20.0.0/16"]})
    assert outcome.facts["tunnel_up"] is True
    assert any(line.startswith("wwp0s20f0u6i4: link type none without details, counted as a tunnel (its uevent "
                               "was not read: ") for line in outcome.evidence)


def test_tunnels_without_carrier_or_only_link_local_do_not_count() -> None:
    outcome = replay("fedora-40/vpn-openconnect-partial-corporate-routes.json", ["10.20.0.0/16"])
    tunnels = {t["name"]: t for t in outcome.facts["tunnels"]}
    assert tunnels["tun2"]["up"] is False  # NO-CARRIER: its client died
    assert tunnels["tun1"]["up"] is True and all(a.startswith("fe80:") for a in tunnels["tun1"]["addresses"])
    only_trap = replay("fedora-40/vpn-openconnect-partial-corporate-routes.json", [])
    assert only_trap.facts["tunnel_up"] is True  # vpn0 counts; now prove tun1/tun2 alone would not
    recording = Recording.load(FIXTURES / "fedora-40/vpn-openconnect-partial-corporate-routes.json")
    key = next(k for k, p in recording.probes.items() if p.target[:3] == ("ip", "-d", "-j"))
    links = [link for link in json.loads(recording.probes[key].stdout) if link["ifname"] != "vpn0"]
    recording.probes[key] = ProbeResult("run", recording.probes[key].target, stdout=json.dumps(links))
    assert run_collector(FAMILY, ReplayHost(recording), {}).facts["tunnel_up"] is False


# real `ip xfrm policy list dir out` output (iproute2 6.1; policies added in a namespace)
XFRM_OUT = "\n".join([
    "src 0.0.0.0/0 dst 10.7.0.0/16 ",
    "\tdir out priority 5 ptype main ",
    "\ttmpl src 192.0.2.2 dst 192.0.2.9",
    "\t\tproto esp reqid 4 mode transport",
    "src 0.0.0.0/0 dst 10.8.0.0/16 ",
    "\tdir out action block priority 0 ptype main ",
    "src 192.0.2.2/32 dst 198.51.100.0/24 proto tcp dport 443 ",
    "\tdir out priority 1000 ptype main ",
    "\ttmpl src 192.0.2.2 dst 192.0.2.1",
    "\t\tproto esp reqid 2 mode tunnel",
    "src 192.0.2.2/32 dst 203.0.113.0/24 ",
    "\tdir out priority 375423 ptype main ",
    "\ttmpl src 192.0.2.2 dst 192.0.2.1",
    "\t\tproto esp reqid 1 mode tunnel",
    "",
])


def test_xfrm_policies() -> None:
    policies = linux.parse_xfrm_policies(XFRM_OUT)
    # the port-restricted policy protects only part of the traffic: left out
    assert [(p.dst, p.action, p.peers) for p in policies] == [
        ("10.7.0.0/16", "allow", ()), ("10.8.0.0/16", "block", ()), ("203.0.113.0/24", "allow", ("192.0.2.1",))]
    assert linux.ipsec_policy_for(policies, "203.0.113.1", "192.0.2.2") is policies[2]
    assert linux.ipsec_policy_for(policies, "203.0.113.1", "192.0.2.77") is None  # another source address
    assert linux.ipsec_policy_for(policies, "10.7.0.1", "192.0.2.2") is None  # transport mode: not a tunnel
    assert linux.ipsec_policy_for(policies, "10.8.0.1", "192.0.2.2") is None  # blocked, not tunnelled
    assert linux.ipsec_policy_for(policies, "198.51.100.1", "192.0.2.2") is None


@pytest.mark.parametrize("text", ["\tdir out", "garbage here", "src 1.2.3.4"])
def test_xfrm_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        linux.parse_xfrm_policies(text)


# -- kinds from the interface type -------------------------------------------------------------------------

def link(name: str, link_type: str, info_kind: str = "", info_type: str = "") -> linux.Link:
    return linux.Link(name=name, link_type=link_type, info_kind=info_kind, info_type=info_type,
                      flags=("UP", "LOWER_UP"), addresses=())


@pytest.mark.parametrize(("entry", "tun_flags", "kind"), [
    (link("corp", "none", "tun", "tun"), None, "tun"),
    (link("eth9", "ether", "tun", "tap"), None, "tap"),
    (link("office", "none", "wireguard"), None, "wireguard"),
    (link("ipsec0", "none", "xfrm"), None, "ipsec"),
    (link("vti-hq", "ipip", "vti"), None, "ipsec"),
    (link("ppp0", "ppp"), None, "ppp"),
    (link("anything", "ether"), 0x1002, "tap"),  # old iproute2: no linkinfo, /sys tun_flags says IFF_TAP
    (link("anything", "none"), 0x1001, "tun"),
    (link("wg0", "none"), None, "tun"),  # ARPHRD_NONE without details: a layer-3 tunnel
    (link("tun0", "ether", "veth"), None, None),  # named like a tunnel, but a veth
    (link("vpn", "ether", "bridge"), None, None),
    (link("gre0", "gre", "gre"), None, None),  # kernel fallback device, plain GRE is not a VPN
    (link("tunl0", "ipip", "ipip"), None, None),
    (link("eth0", "ether"), None, None),
])
def test_kind_comes_from_type_not_name(entry: linux.Link, tun_flags: Optional[int], kind: Optional[str]) -> None:
    assert linux.tunnel_kind(entry, tun_flags) == kind


@pytest.mark.parametrize(("entry", "devtype", "kind"), [
    (link("wwan0", "none"), "wwan", None),  # qmi_wwan raw-IP modem
    (link("tun0", "none"), "wwan", None),  # named like a tunnel, still a modem
    (link("corp", "none"), "wireguard", "wireguard"),  # WireGuard on an iproute2 without linkinfo
    (link("wg0", "none"), "", "tun"),  # uevent without DEVTYPE: the type alone decides, as in the sampler
    (link("office", "none", "tun", "tun"), "wwan", "tun"),  # ip -d's linkinfo wins over a uevent
])
def test_uevent_devtype_stands_for_the_missing_linkinfo(entry: linux.Link, devtype: str, kind: Optional[str]) -> None:
    assert linux.tunnel_kind(entry, None, devtype) == kind


def test_modem_carrying_every_route_is_not_a_tunnel() -> None:
    modem = linux.Link(name="wwan0", link_type="none", info_kind="", info_type="",
                       flags=("POINTOPOINT", "MULTICAST", "NOARP", "UP", "LOWER_UP"), addresses=("100.71.18.201/30",))
    route = linux.RouteAnswer("198.51.100.1", "wwan0", "100.71.18.202")
    corporate = [("10.20.0.0/16", linux.RouteAnswer("10.20.0.1", "wwan0", "100.71.18.202"))]
    before, _, _ = linux.build_facts([modem], {"wwan0": None}, route, corporate, [], [])
    assert before["tunnel_up"] is True  # without its uevent the check cannot tell: the trap
    facts, evidence, summary = linux.build_facts([modem], {"wwan0": None}, route, corporate, [], [],
                                                 devtypes={"wwan0": "wwan"})
    assert (facts["tunnel_up"], facts["default_route_via_tunnel"], facts["corporate_networks_via_tunnel"]) == (
        False, False, False)
    assert summary == "no VPN tunnel is up"
    assert "wwan0: mobile broadband modem (DEVTYPE=wwan), not a tunnel" in evidence
    _, other, _ = linux.build_facts([modem], {}, route, [], [], [], devtypes={"wwan0": "gadget"})
    assert "wwan0: gadget device (DEVTYPE=gadget), not a tunnel" in other


def test_ppp_counts_only_with_a_ppp_based_vpn_client() -> None:
    ppp = linux.Link(name="ppp0", link_type="ppp", info_kind="", info_type="", flags=("UP", "LOWER_UP"),
                     addresses=("10.64.12.7/32",))
    route = linux.RouteAnswer("198.51.100.1", "ppp0")
    modem, _, _ = linux.build_facts([ppp], {}, route, [], [], [])
    assert modem["tunnel_up"] is False and modem["tunnels"] == [] and modem["default_route_via_tunnel"] is False
    l2tp, _, _ = linux.build_facts([ppp], {}, route, [], ["l2tp (NetworkManager)"], [])
    assert l2tp["tunnel_up"] is True and l2tp["default_route_via_tunnel"] is True


@pytest.mark.parametrize(("rows", "labels"), [
    ([{"name": "openvpn", "exe": "/usr/sbin/openvpn", "cmdline": ["/usr/sbin/openvpn", "--config", "x.conf"]}], ["openvpn"]),
    ([{"name": "bash", "exe": "/usr/bin/bash", "cmdline": ["bash", "/usr/bin/wg-quick", "up", "wg0"]}], ["wireguard"]),
    ([{"name": "PanGPS", "exe": "/opt/paloaltonetworks/globalprotect/PanGPS", "cmdline": []}], ["globalprotect"]),
    ([{"name": "vpnagentd", "exe": "/opt/cisco/anyconnect/bin/vpnagentd", "cmdline": ["/opt/cisco/anyconnect/bin/vpnagentd"]}], ["anyconnect"]),
    ([{"name": "charon", "exe": "/usr/lib/ipsec/charon", "cmdline": []}, {"name": "FortiClient", "exe": "", "cmdline": []}],
     ["forticlient", "strongswan"]),
    ([{"name": "nm-openvpn-serv", "exe": "/usr/libexec/nm-openvpn-service", "cmdline": []}], ["openvpn (NetworkManager)"]),
    ([{"name": "sshd", "exe": "/usr/sbin/sshd", "cmdline": ["sshd: /usr/sbin/sshd -D"]}], []),
    ([{"name": "pppd", "exe": "/usr/sbin/pppd", "cmdline": ["/usr/sbin/pppd", "pty", "pptp vpn.example.org --nolaunchpppd"]}],
     ["pppd (vpn)"]),
    ([{"name": "pppd", "exe": "/usr/sbin/pppd", "cmdline": ["/usr/sbin/pppd", "call", "provider"]}], []),
])
def test_vpn_client_processes(rows: List[Dict[str, Any]], labels: List[str]) -> None:
    assert linux.parse_vpn_processes(json.dumps(rows)) == labels


@pytest.mark.parametrize(("stdout", "stderr", "rc", "interface"), [
    ('[{"dst":"10.1.2.3","dev":"wg0","prefsrc":"10.66.0.2","flags":[],"uid":0,"cache":[]}]', "", 0, "wg0"),
    ("", "RTNETLINK answers: Network is unreachable\n", 2, None),
    ("", "RTNETLINK answers: No route to host\n", 2, None),
    ('[{"type":"blackhole","dst":"10.1.2.3","flags":[],"uid":0,"cache":[]}]', "", 0, None),
])
def test_route_get(stdout: str, stderr: str, rc: int, interface: Optional[str]) -> None:
    probe = ProbeResult("run", ("ip", "-j", "route", "get", "10.1.2.3"), stdout=stdout, stderr=stderr, rc=rc)
    assert linux.parse_route_get(probe, "10.1.2.3").interface == interface


@pytest.mark.parametrize(("networks", "address"), [
    ([], "198.51.100.1"),
    (["10.0.0.0/8"], "198.51.100.1"),
    (["203.0.113.0/24", "198.51.100.0/24"], "192.0.2.1"),  # the baseline's placeholders
    (["0.0.0.0/0"], "8.8.8.8"),
])
def test_default_route_probe_avoids_corporate_networks(networks: List[str], address: str) -> None:
    assert linux.default_route_probe(networks) == address


# `ip -j route show table all` of this machine (eth0 192.0.2.2/24, iproute2 6.1) under an OpenVPN full tunnel
# (def1: 0.0.0.0/1 + 128.0.0.0/1 via tun0, a host route to the VPN server via the LAN gateway)
FULL_TUNNEL_TABLES = json.dumps([
    {"dst": "0.0.0.0/1", "gateway": "10.8.0.1", "dev": "tun0", "flags": []},
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []},
    {"dst": "10.8.0.0/24", "dev": "tun0", "protocol": "kernel", "scope": "link", "prefsrc": "10.8.0.6", "flags": []},
    {"dst": "128.0.0.0/1", "gateway": "10.8.0.1", "dev": "tun0", "flags": []},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "192.0.2.2", "flags": []},
    {"dst": "198.51.100.7", "gateway": "192.0.2.1", "dev": "eth0", "flags": []},
    {"type": "local", "dst": "192.0.2.2", "dev": "eth0", "table": "local", "protocol": "kernel", "scope": "host",
     "prefsrc": "192.0.2.2", "flags": []},
    {"type": "broadcast", "dst": "192.0.2.255", "dev": "eth0", "table": "local", "protocol": "kernel",
     "scope": "link", "prefsrc": "192.0.2.2", "flags": []},
    {"type": "multicast", "dst": "ff00::/8", "dev": "eth0", "table": "local", "protocol": "kernel", "metric": 256,
     "flags": [], "pref": "medium"},
])


def test_specific_routes_leave_out_the_defaults() -> None:
    routes = linux.parse_specific_routes(FULL_TUNNEL_TABLES)
    assert routes == ["10.8.0.0/24", "192.0.2.0/24", "192.0.2.2/32", "192.0.2.255/32", "198.51.100.7/32",
                      "ff00::/8"]


@pytest.mark.parametrize(("networks", "extra", "address"), [
    # issue 15: the LAN is 192.0.2.0/24; with the baseline's placeholders 203.0.113.0/24 and 198.51.100.0/24
    # the old choice, 192.0.2.1, is on-link and a full tunnel read as "default route via eth0"
    (["203.0.113.0/24", "198.51.100.0/24"], [], "192.88.99.1"),
    ([], [], "198.51.100.1"),  # a host route to 198.51.100.7 does not cover .1
    ([], ["198.51.100.0/24", "203.0.113.0/25"], "192.88.99.1"),
    (["192.88.99.0/24"], ["198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24"], "9.9.9.9"),
])
def test_default_route_probe_avoids_on_link_addresses(networks: List[str], extra: List[str], address: str) -> None:
    specific = linux.parse_specific_routes(FULL_TUNNEL_TABLES) + extra
    assert linux.default_route_probe(networks, specific) == address


@pytest.mark.parametrize(("network", "address"), [
    ("10.20.0.0/16", "10.20.0.1"), ("192.0.2.7/32", "192.0.2.7"), ("2001:db8::/32", "2001:db8::1"),
])
def test_first_address(network: str, address: str) -> None:
    assert linux.first_address(network) == address


def test_bad_corporate_networks_param_is_a_clear_error() -> None:
    outcome = replay("debian-12/vpn-no-tunnel.json", ["not-a-network"])
    assert outcome.state == ERROR
    assert "corporate_networks" in (outcome.reason or "") and "not-a-network" in (outcome.reason or "")


# -- failures and garbage ------------------------------------------------------------------------------------

def edited(fixture: str, prefix: tuple, result: ProbeResult) -> ReplayHost:
    recording = Recording.load(FIXTURES / fixture)
    for key, probe in list(recording.probes.items()):
        if probe.target[:len(prefix)] == prefix:
            recording.probes[key] = ProbeResult(probe.kind, probe.target, stdout=result.stdout, stderr=result.stderr,
                                                rc=result.rc, error=result.error, timed_out=result.timed_out,
                                                duration=result.duration)
    return ReplayHost(recording)


@pytest.mark.parametrize(("prefix", "error", "named"), [
    (("ip", "-d", "-j"), NOT_FOUND, "ip -d -j addr show: command not found"),
    (("ip", "-d", "-j"), PERMISSION_DENIED, "ip -d -j addr show: permission denied"),
    (("ip", "-j", "route", "get"), TIMEOUT, "ip -j route get 198.51.100.1: timed out"),
    (("psutil",), PERMISSION_DENIED, "processes psutil: permission denied"),
])
def test_failed_probe_is_an_error_naming_it(prefix: tuple, error: str, named: str) -> None:
    host = edited("debian-12/vpn-openvpn-split-tunnel-routed.json", prefix,
                  ProbeResult("run", prefix, rc=None, error=error, timed_out=error == TIMEOUT, duration=5.0))
    outcome = run_collector(FAMILY, host, {"corporate_networks": ["203.0.113.0/24"]})
    assert outcome.state == ERROR
    assert named in (outcome.reason or "")


@settings(max_examples=80, deadline=None)
@given(text=st.one_of(st.text(max_size=200), st.sampled_from(["", "[]", "{}", "[1]", '[{"ifname": 3}]', "null",
                                                               '[{"ifname":"x","flags":"UP"}]'])),
       target=st.sampled_from([("ip", "-d", "-j"), ("ip", "-j", "route", "get"), ("psutil",), ("ip", "-j", "rule"),
                               ("ip", "xfrm", "policy")]))
def test_garbage_output_is_an_error_or_ok_never_a_crash(text: str, target: tuple) -> None:
    host = edited("debian-12/vpn-openvpn-split-tunnel-routed.json", target, ProbeResult("run", target, stdout=text))
    outcome = run_collector(FAMILY, host, {"corporate_networks": ["203.0.113.0/24"]})
    assert outcome.state in (OK, ERROR)
    if outcome.state == ERROR:
        assert outcome.reason
    else:
        assert conform(FAMILY.spec, outcome.facts) == []


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=3000))
def test_truncated_link_list_is_an_error(cut: int) -> None:
    recording = Recording.load(FIXTURES / "debian-12/vpn-openvpn-split-tunnel-routed.json")
    key = next(k for k, p in recording.probes.items() if p.target[:3] == ("ip", "-d", "-j"))
    full = recording.probes[key].stdout
    recording.probes[key] = ProbeResult("run", recording.probes[key].target, stdout=full[:cut])
    outcome = run_collector(FAMILY, ReplayHost(recording), {"corporate_networks": ["203.0.113.0/24"]})
    if cut < len(full.strip()):
        assert outcome.state == ERROR and "ip -d -j addr show" in (outcome.reason or "")


def test_parsers_raise_parse_error_on_non_json() -> None:
    for parser in (linux.parse_links, linux.parse_rules, linux.parse_default_routes, linux.parse_vpn_processes):
        with pytest.raises(ParseError):
            parser("RTNETLINK answers: Operation not permitted")


# -- this machine ------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")
def test_this_machine_tells_the_truth() -> None:
    outcome = run_collector(FAMILY, LiveHost(), {"corporate_networks": ["10.0.0.0/8"]})
    assert outcome.state == OK, outcome.reason
    facts = outcome.facts
    names = {p.name for p in Path("/sys/class/net").iterdir()}
    for tunnel in facts["tunnels"]:
        assert tunnel["name"] in names
    # every interface of ARPHRD_NONE/PPP type on this machine is reported as a tunnel, whatever its name,
    # except a raw-IP modem (its uevent says DEVTYPE=wwan)
    sysfs = Path("/sys/class/net")
    expected = {n for n in names if (sysfs / n / "type").read_text().strip() in ("65534", "512")
                and "DEVTYPE=wwan" not in (sysfs / n / "uevent").read_text()}
    assert expected <= {t["name"] for t in facts["tunnels"]}
    assert facts["default_route_interface"] is None or facts["default_route_interface"] in names


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")
def test_recording_of_this_machine_replays_identically(tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "vpn.json",
                                  params={"corporate_networks": ["10.0.0.0/8", "2001:db8::/32"]})
