"""The VPN sampler: tunnel detection (by type on Linux, by name elsewhere), default-route parsers (recorded
outputs), share and change detection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from agent.probes import NOT_FOUND, Host, ProbeResult, Recording, RecordingHost, ReplayHost
from agent.service.sampler import (
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
    ("utun4", {"up": True, "addresses": [{"address": "10.8.0.2"}]}, "darwin", True),
    ("ppp0", {"up": True, "addresses": [{"address": "fd42::2"}]}, "darwin", True),
    ("utun3", {"up": True, "addresses": [{"address": "fe80::1%utun3"}]}, "darwin", False),  # the utun trap
    ("utun4", {"up": False, "addresses": [{"address": "10.8.0.2"}]}, "darwin", False),
    ("en0", {"up": True, "addresses": [{"address": "192.0.2.2"}]}, "darwin", False),
    ("tun0", {"up": True, "addresses": [{"address": "10.8.0.2"}]}, "linux", True),  # Linux without /sys only
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


def _iface(*addresses: str, up: bool = True) -> Dict[str, Any]:
    return {"up": up, "mtu": 1500, "addresses": [{"family": "ipv6" if ":" in a else "ipv4", "address": a}
                                                  for a in addresses]}


def _linux_recording(interfaces: Dict[str, Any], sysfs: Dict[str, Optional[str]],
                     processes: Optional[List[Dict[str, Any]]] = None) -> Recording:
    """A Linux machine: psutil interfaces, /proc/net/route and sysfs files (path -> text, None: absent)."""
    recording = Recording(platform="linux", probes={})
    results = [ProbeResult("interfaces", ("psutil",), stdout=json.dumps(interfaces)),
               ProbeResult("read", ("/proc/net/route",), stdout=_read("linux-debian12-proc-net-route.txt"))]
    for path, text in sysfs.items():
        results.append(ProbeResult("read", (path,), stdout=text) if text is not None else
                       ProbeResult("read", (path,), rc=None, error=NOT_FOUND))
    if processes is not None:
        results.append(ProbeResult("processes", ("psutil",), stdout=json.dumps(processes)))
    for result in results:
        recording.probes[json.dumps([result.kind, list(result.target)])] = result
    return recording


def _sysfs(name: str, arphrd: int, tun_flags: Optional[str] = None, devtype: str = "") -> Dict[str, Optional[str]]:
    base = f"/sys/class/net/{name}"
    uevent = (f"DEVTYPE={devtype}\n" if devtype else "") + f"INTERFACE={name}\nIFINDEX=9\n"
    return {f"{base}/type": f"{arphrd}\n", f"{base}/tun_flags": tun_flags, f"{base}/uevent": uevent}


class CountingHost(ReplayHost):
    """Remembers what was asked, to show the sampler stays cheap."""

    def __init__(self, recording: Recording) -> None:
        super().__init__(recording)
        self.asked: List[str] = []

    def read_text(self, path: str) -> ProbeResult:
        self.asked.append(path)
        return super().read_text(path)

    def processes(self) -> ProbeResult:
        self.asked.append("processes")
        return super().processes()


# the traps: names that lie both ways, a tap, a NIC, loopback, a tunnel that is down, one with only fe80::
LINUX_MACHINE = {
    "lo": (_iface("127.0.0.1", "::1"), _sysfs("lo", 772)),
    "eth0": (_iface("192.0.2.2", "fe80::2"), _sysfs("eth0", 1)),
    "corp0": (_iface("10.66.0.2"), _sysfs("corp0", 65534, devtype="wireguard")),  # WireGuard, not named wg*
    "vpn-office": (_iface("10.8.0.6"), _sysfs("vpn-office", 65534, tun_flags="0x1801\n")),  # OpenVPN tun
    "tap9": (_iface("10.9.0.2"), _sysfs("tap9", 1, tun_flags="0x1802\n")),  # OpenVPN tap
    "tun_bridge": (_iface("192.0.2.129"), _sysfs("tun_bridge", 1, devtype="bridge")),  # a bridge, no tunnel
    "wg1": (_iface("fe80::5"), _sysfs("wg1", 65534, devtype="wireguard")),  # link-local only
    "tun7": (_iface("10.7.0.2", up=False), _sysfs("tun7", 65534, tun_flags="0x1001\n")),  # down
}


def test_take_sample_on_linux_classifies_by_type_not_name() -> None:
    recording = _linux_recording({name: info for name, (info, _) in LINUX_MACHINE.items()},
                                 {path: text for _, files in LINUX_MACHINE.values() for path, text in files.items()})
    host = CountingHost(recording)
    sample = take_sample(host)
    assert sample == Sample(online=True, vpn_up=True, tunnels=("corp0", "tap9", "vpn-office"),
                            default_route_interface="eth0")
    # cheap: sysfs only for interfaces up with a routable address; uevent only where tun_flags are absent
    # on a type-NONE device; no process list without a PPP link
    sysfs_read = sorted(p for p in host.asked if p.startswith("/sys/"))
    assert sysfs_read == sorted([
        "/sys/class/net/eth0/type", "/sys/class/net/eth0/tun_flags",
        "/sys/class/net/corp0/type", "/sys/class/net/corp0/tun_flags", "/sys/class/net/corp0/uevent",
        "/sys/class/net/vpn-office/type", "/sys/class/net/vpn-office/tun_flags",
        "/sys/class/net/tap9/type", "/sys/class/net/tap9/tun_flags",
        "/sys/class/net/tun_bridge/type", "/sys/class/net/tun_bridge/tun_flags",
    ])
    assert "processes" not in host.asked


def test_only_the_nic_and_loopback_is_no_vpn() -> None:
    machine = {k: LINUX_MACHINE[k] for k in ("lo", "eth0", "tun_bridge")}
    recording = _linux_recording({name: info for name, (info, _) in machine.items()},
                                 {path: text for _, files in machine.values() for path, text in files.items()})
    assert take_sample(ReplayHost(recording)) == Sample(online=True, vpn_up=False, tunnels=(),
                                                        default_route_interface="eth0")


@pytest.mark.parametrize(("processes", "counted"), [
    ([{"name": "ModemManager", "exe": "/usr/sbin/ModemManager", "cmdline": ["/usr/sbin/ModemManager"]},
      {"name": "pppd", "exe": "/usr/sbin/pppd", "cmdline": ["/usr/sbin/pppd", "call", "provider"]}], False),
    ([{"name": "pppd", "exe": "/usr/sbin/pppd",
       "cmdline": ["/usr/sbin/pppd", "pty", "pptp vpn.example.org --nolaunchpppd"]}], True),
    (None, False),  # process list unavailable: a PPP link is not shown to be a VPN
])
def test_ppp_counts_as_the_vpn_check_counts_it(processes: Optional[List[Dict[str, Any]]], counted: bool) -> None:
    recording = _linux_recording({"ppp0": _iface("10.64.12.7")}, _sysfs("ppp0", 512), processes)
    assert take_sample(ReplayHost(recording)).tunnels == (("ppp0",) if counted else ())


def test_linux_without_sysfs_falls_back_to_names() -> None:
    recording = _linux_recording({"tun0": _iface("10.8.0.2"), "eth0": _iface("192.0.2.2")}, {})
    assert take_sample(ReplayHost(recording)).tunnels == ("tun0",)


def test_recorded_sample_replays_identically(tmp_path: Path) -> None:
    from agent.probes import LiveHost

    recorder = RecordingHost(LiveHost())
    live = take_sample(recorder)
    path = tmp_path / "sample.json"
    recorder.recording.save(path)
    assert take_sample(ReplayHost(Recording.load(path))) == live


def test_other_platforms_do_not_read_sysfs() -> None:
    class NoSysfs(Host):
        platform = "darwin"

        def interfaces(self) -> ProbeResult:
            return ProbeResult("interfaces", ("psutil",), stdout=json.dumps({"utun4": _iface("10.8.0.2")}))

        def run(self, argv, timeout=5.0, cache_on=()) -> ProbeResult:
            return ProbeResult("run", tuple(argv), stdout=_read("darwin-route-get-default.txt"))

        def read_text(self, path: str) -> ProbeResult:
            raise AssertionError(f"read {path} on macOS")

    assert take_sample(NoSysfs()) == Sample(True, True, ("utun4",), "en1")


def test_take_sample_on_this_machine_says_the_truth() -> None:
    from agent.probes import LiveHost

    sample = take_sample(LiveHost())
    route_text = Path("/proc/net/route").read_text()
    assert sample.default_route_interface == parse_proc_net_route(route_text) or \
        sample.default_route_interface == parse_proc_ipv6_route(Path("/proc/net/ipv6_route").read_text())
