"""The cheap VPN sampler the service runs every minute.

One sample = the interface list (psutil, through the Host) and the default route (a file read on Linux,
one short command on macOS/Windows). From the samples the service learns:

* what share of the time the machine was online the VPN was up (``vpn_up_share``, sent in the report's
  vpn facts), and
* that the network changed (a tunnel came up or went down, the default route moved), which triggers an
  immediate check cycle.

The full VPN check (routes of the corporate networks, clients, profiles) runs in the check cycle; this
module only needs to be right about "is some tunnel up" and "where does the default route go".

A tunnel counts when it is up with a routable address (a utun with only fe80:: does not count). Which
interfaces are tunnels:

* Linux: by type, as the VPN check decides (``agent.checks.vpn.kinds``, the mapping both share), from
  three sysfs files per interface that is up with a routable address: ``/sys/class/net/<if>/type`` (the
  ARPHRD number), ``tun_flags`` (present on tun/tap devices: IFF_TUN or IFF_TAP) and, for type NONE
  only, ``uevent`` (``DEVTYPE=wireguard``). So a WireGuard interface named ``corp0`` counts and a bridge
  named ``tun_bridge`` does not; a tap counts only when tun_flags says IFF_TAP, a normal NIC never.
  A PPP link counts, as in the check, only while a PPP-based VPN client runs (the process list is read
  only when such a link is up). The check's ``ip -d -j`` and ``ip xfrm`` would cost milliseconds every
  minute; sysfs cannot tell a route-based IPsec ``vti`` from a plain ``ipip`` tunnel (both ARPHRD_TUNNEL)
  and policy-based IPsec has no interface, so those two are left to the check. When an interface's type
  cannot be read (no /sys), the name rule below decides for it.
* macOS and Windows: by name (``utun``/``ipsec``/``ppp`` ..., words of the adapter description), because
  neither has a cheap type source: macOS would need ``ifconfig``/``scutil`` and Windows a WMI or
  PowerShell query, a process start and tens of milliseconds each minute.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from agent.checks.base import ParseError
from agent.checks.vpn.kinds import (
    ARPHRD_ETHER,
    ARPHRD_NONE,
    counts_as_tunnel,
    routable_address,
    sysfs_tunnel_kind,
)
from agent.checks.vpn.linux import parse_vpn_processes
from agent.probes import Host

# Interface names VPN software gives its tunnels (macOS; Linux without /sys) and words in Windows adapter names.
_TUNNEL_NAME = re.compile(r"^(tun|tap|wg|ppp|utun|ipsec|gpd|cscotun|vpn|nordlynx|tailscale|zt)\d*", re.I)
_WINDOWS_TUNNEL_WORDS = ("vpn", "tap-windows", "wireguard", "wintun", "pangp", "anyconnect", "fortinet",
                         "juniper", "openvpn", "tunnel")


_ANY_V4 = ".".join(["0"] * 4)  # the default route's destination (and mask) in `route print`


@dataclass(frozen=True)
class Sample:
    online: bool
    vpn_up: bool
    tunnels: Tuple[str, ...]
    default_route_interface: Optional[str]

    def network_signature(self) -> Tuple[Tuple[str, ...], Optional[str]]:
        return self.tunnels, self.default_route_interface


def is_tunnel_name(name: str, platform: str) -> bool:
    if _TUNNEL_NAME.match(name):
        return True
    if platform == "windows":
        lowered = name.lower()
        return any(word in lowered for word in _WINDOWS_TUNNEL_WORDS)
    return False


def up_with_routable_address(interfaces: Dict[str, Any]) -> List[str]:
    """Interfaces (Host.interfaces() JSON) that are up with a routable address, sorted."""
    found = []
    for name, info in interfaces.items():
        if not isinstance(info, dict) or not info.get("up"):
            continue
        addresses = [a.get("address", "") for a in info.get("addresses") or [] if isinstance(a, dict)]
        if any(routable_address(str(a)) for a in addresses):
            found.append(str(name))
    return sorted(found)


def tunnels_up(interfaces: Dict[str, Any], platform: str) -> List[str]:
    """By name (macOS, Windows): tunnel interfaces that are up with a routable address."""
    return [name for name in up_with_routable_address(interfaces) if is_tunnel_name(name, platform)]


def linux_tunnel_kind(host: Host, name: str) -> Tuple[bool, Optional[str]]:
    """(known, kind) of a Linux interface from sysfs; known is False when its type cannot be read."""
    base = f"/sys/class/net/{name}"
    type_probe = host.read_text(f"{base}/type")
    try:
        arphrd = int(type_probe.stdout.strip()) if type_probe.error is None else None
    except ValueError:
        arphrd = None
    if arphrd is None:
        return False, None
    tun_flags: Optional[str] = None
    if arphrd in (ARPHRD_NONE, ARPHRD_ETHER):  # tun (NONE) and tap (ETHER) devices have tun_flags
        probe = host.read_text(f"{base}/tun_flags")
        tun_flags = probe.stdout if probe.error is None else None
    uevent: Optional[str] = None
    if arphrd == ARPHRD_NONE and tun_flags is None:
        # WireGuard (or xfrm, or a raw-IP modem): DEVTYPE tells; for other types the type alone decides
        probe = host.read_text(f"{base}/uevent")
        uevent = probe.stdout if probe.error is None else None
    return True, sysfs_tunnel_kind(arphrd, tun_flags, uevent)


def _vpn_clients(host: Host) -> List[str]:
    probe = host.processes()
    if probe.error is not None:
        return []  # a PPP link is not shown to be a VPN: not counted, as the check would not
    try:
        return parse_vpn_processes(probe.stdout)
    except ParseError:
        return []


def linux_tunnels_up(host: Host, interfaces: Dict[str, Any]) -> List[str]:
    """By type, as the VPN check decides: tunnel interfaces that are up with a routable address."""
    found = []
    clients: Optional[List[str]] = None
    for name in up_with_routable_address(interfaces):
        known, kind = linux_tunnel_kind(host, name)
        if not known:
            if is_tunnel_name(name, "linux"):
                found.append(name)
            continue
        if kind == "ppp" and clients is None:
            clients = _vpn_clients(host)  # only when a PPP link is up: the process list costs milliseconds
        if counts_as_tunnel(kind, clients or ()):
            found.append(name)
    return found


def parse_proc_net_route(text: str) -> Optional[str]:
    """Interface of the IPv4 default route with the lowest metric in /proc/net/route, or None."""
    best: Optional[Tuple[int, str]] = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, destination, flags, metric, mask = fields[0], fields[1], fields[3], fields[6], fields[7]
        try:
            up = int(flags, 16) & 0x1
            metric_value = int(metric)
        except ValueError:
            continue
        if destination == "00000000" and mask == "00000000" and up:
            if best is None or metric_value < best[0]:
                best = (metric_value, iface)
    return best[1] if best else None


def parse_proc_ipv6_route(text: str) -> Optional[str]:
    """Interface of the IPv6 default route (::/0) in /proc/net/ipv6_route, or None."""
    best: Optional[Tuple[int, str]] = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        if fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            try:
                metric = int(fields[5], 16)
            except ValueError:
                continue
            if best is None or metric < best[0]:
                best = (metric, fields[9])
    return best[1] if best else None


def parse_route_get_default(text: str) -> Optional[str]:
    """macOS `route -n get default`: the `interface:` line."""
    match = re.search(r"^\s*interface:\s*(\S+)", text, re.M)
    return match.group(1) if match else None


def parse_route_print(text: str, interfaces: Dict[str, Any]) -> Optional[str]:
    """Windows `route print -4 0.0.0.0`: the default route's interface address, mapped to its adapter name."""
    best: Optional[Tuple[int, str]] = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0] == fields[1] == _ANY_V4 and fields[4].isdigit():
            if best is None or int(fields[4]) < best[0]:
                best = (int(fields[4]), fields[3])
    if best is None:
        return None
    for name, info in interfaces.items():
        for address in (info.get("addresses") or []) if isinstance(info, dict) else []:
            if isinstance(address, dict) and address.get("address") == best[1]:
                return str(name)
    return best[1]


def default_route_interface(host: Host, interfaces: Dict[str, Any]) -> Optional[str]:
    if host.platform == "linux":
        v4 = host.read_text("/proc/net/route")
        found = parse_proc_net_route(v4.stdout) if v4.ok else None
        if found is None:
            v6 = host.read_text("/proc/net/ipv6_route")
            found = parse_proc_ipv6_route(v6.stdout) if v6.ok else None
        return found
    if host.platform == "darwin":
        result = host.run(["route", "-n", "get", "default"], timeout=5.0)
        return parse_route_get_default(result.stdout) if result.ok else None
    if host.platform == "windows":
        result = host.run(["route", "print", "-4", _ANY_V4], timeout=5.0)
        return parse_route_print(result.stdout, interfaces) if result.ok else None
    return None


def take_sample(host: Host) -> Sample:
    probe = host.interfaces()
    try:
        interfaces = json.loads(probe.stdout) if probe.error is None else {}
    except ValueError:
        interfaces = {}
    if not isinstance(interfaces, dict):
        interfaces = {}
    if host.platform == "linux":
        tunnels = linux_tunnels_up(host, interfaces)
    else:
        tunnels = tunnels_up(interfaces, host.platform)
    route = default_route_interface(host, interfaces)
    return Sample(online=route is not None or bool(tunnels), vpn_up=bool(tunnels), tunnels=tuple(tunnels),
                  default_route_interface=route)


class VpnSampler:
    """Counts samples between two reports; thread-safe (the scheduler samples and reports on different threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._online = 0
        self._vpn_up = 0
        self._last: Optional[Sample] = None

    def add(self, sample: Sample) -> bool:
        """Record a sample; True if the network changed since the previous one."""
        with self._lock:
            changed = self._last is not None and self._last.network_signature() != sample.network_signature()
            self._last = sample
            if sample.online:
                self._online += 1
                if sample.vpn_up:
                    self._vpn_up += 1
            return changed

    def take_share(self) -> Optional[float]:
        """Share (0..1) of online samples with the VPN up since the last call; None if never online."""
        with self._lock:
            share = None if self._online == 0 else round(self._vpn_up / self._online, 4)
            self._online = self._vpn_up = 0
            return share

    @property
    def last(self) -> Optional[Sample]:
        with self._lock:
            return self._last
