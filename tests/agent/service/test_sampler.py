"""The VPN sampler: tunnel detection, default-route parsers (recorded outputs), share and change detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.probes import ProbeResult, Recording, ReplayHost
from agent.sampler import (
    Sample,
    VpnSampler,
    parse_proc_ipv6_route,
    parse_proc_net_route,
    parse_route_get_default,
    parse_route_print,
    take_sample,
    tunnels_up,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_recorded_default_routes() -> None:
    assert parse_proc_net_route(_read("linux-debian12-proc-net-route.txt")) == "eth0"
    assert parse_proc_ipv6_route(_read("linux-debian12-proc-net-ipv6_route.txt")) == "eth0"
    assert parse_route_get_default(_read("darwin-route-get-default.txt")) == "en1"
    interfaces = {"Ethernet": {"up": True, "addresses": [{"family": "ipv4", "address": "192.168.1.100"}]}}
    assert parse_route_print(_read("windows-route-print.txt"), interfaces) == "Ethernet"


def test_no_default_route() -> None:
    header = _read("linux-debian12-proc-net-route.txt").splitlines()[0]
    assert parse_proc_net_route(header + "\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n") is None
    assert parse_route_get_default("route: writing to routing socket: not in table\n") is None


@pytest.mark.parametrize("name, info, platform, counted", [
    ("tun0", {"up": True, "addresses": [{"address": "10.8.0.2"}]}, "linux", True),
    ("wg0", {"up": True, "addresses": [{"address": "fd42::2"}]}, "linux", True),
    ("utun3", {"up": True, "addresses": [{"address": "fe80::1%utun3"}]}, "darwin", False),  # the utun trap
    ("tun0", {"up": False, "addresses": [{"address": "10.8.0.2"}]}, "linux", False),
    ("eth0", {"up": True, "addresses": [{"address": "192.0.2.2"}]}, "linux", False),
    ("OpenVPN TAP-Windows6", {"up": True, "addresses": [{"address": "10.8.0.6"}]}, "windows", True),
    ("Wi-Fi", {"up": True, "addresses": [{"address": "10.1.1.36"}]}, "windows", False),
])
def test_tunnel_detection(name, info, platform, counted) -> None:
    assert tunnels_up({name: info}, platform) == ([name] if counted else [])


def test_share_and_change_detection() -> None:
    sampler = VpnSampler()
    lan = Sample(True, False, (), "eth0")
    vpn = Sample(True, True, ("tun0",), "tun0")
    offline = Sample(False, False, (), None)
    assert sampler.add(lan) is False  # the first sample is no change
    assert sampler.add(lan) is False
    assert sampler.add(vpn) is True
    assert sampler.add(offline) is True
    assert sampler.add(vpn) is True
    assert sampler.take_share() == 0.5  # 2 of the 4 online samples; offline time does not count
    assert sampler.take_share() is None


def test_take_sample_on_a_replayed_linux_machine() -> None:
    interfaces = {"lo": {"up": True, "mtu": 65536, "addresses": [{"family": "ipv4", "address": "127.0.0.1"}]},
                  "eth0": {"up": True, "mtu": 1500, "addresses": [{"family": "ipv4", "address": "192.0.2.2"}]},
                  "tun0": {"up": True, "mtu": 1500, "addresses": [{"family": "ipv4", "address": "10.8.0.2"}]}}
    recording = Recording(platform="linux", probes={})
    for result in (ProbeResult("interfaces", ("psutil",), stdout=json.dumps(interfaces)),
                   ProbeResult("read", ("/proc/net/route",), stdout=_read("linux-debian12-proc-net-route.txt"))):
        recording.probes[json.dumps([result.kind, list(result.target)])] = result
    sample = take_sample(ReplayHost(recording))
    assert sample == Sample(online=True, vpn_up=True, tunnels=("tun0",), default_route_interface="eth0")


def test_take_sample_on_this_machine_says_the_truth() -> None:
    from agent.probes import LiveHost

    sample = take_sample(LiveHost())
    route_text = Path("/proc/net/route").read_text()
    assert sample.default_route_interface == parse_proc_net_route(route_text) or \
        sample.default_route_interface == parse_proc_ipv6_route(Path("/proc/net/ipv6_route").read_text())
