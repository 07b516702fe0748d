"""VPN on macOS: tunnel interfaces, configured VPN services, routes, known client processes.

Tunnel interfaces are utun*, ipsec*, ppp*, tun*/tap* and gpd* (GlobalProtect). Trap: every Mac has
utun0..utun3 (and more) created by the system for iCloud, Continuity and the like, carrying only an
``fe80::`` link-local IPv6 address: those are not a VPN. A tunnel counts when it is up with an IPv4
address or a routable IPv6 address.

Whether traffic uses the tunnel is a routing question: ``netstat -rn -f inet`` for the default route (the
0/1 + 128.0/1 pair that full-tunnel clients install wins over ``default``) and ``route -n get <address>``
for the first address of each corporate network the policy names.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agent.checks._host_json import parse_interfaces, parse_processes, routable_addresses, running_names
from agent.checks.base import CheckOutcome, ParseError, network_list
from agent.checks.vpn.windows import probe_address
from agent.probes import Host

CHECK = "vpn"

NC_LIST = ["scutil", "--nc", "list"]
NETSTAT = ["netstat", "-rn", "-f", "inet"]
TUNNEL_PREFIXES = (("utun", "utun"), ("ipsec", "ipsec"), ("ppp", "ppp"), ("tun", "tun"), ("tap", "tap"),
                   ("gpd", "globalprotect"), ("wg", "wireguard"))

VPN_CLIENT_PROCESSES: Dict[str, List[str]] = {
    "GlobalProtect": ["PanGPS", "GlobalProtect"],
    "Cisco AnyConnect / Secure Client": ["vpnagentd"],
    "FortiClient": ["FortiClient", "fctservctl2", "FortiClientAgent", "FortiTray"],
    "WireGuard": ["WireGuard", "WireGuardNetworkExtension", "wireguard-go"],
    "Tunnelblick": ["Tunnelblick", "tunnelblickd"],
    "OpenVPN": ["openvpn"],
    "OpenVPN Connect": ["OpenVPN Connect", "ovpnagent"],
    "Ivanti / Pulse Secure": ["dsAccessService", "Pulse Secure"],
    "Zscaler": ["ZscalerTunnel", "Zscaler"],
}

_NC_LINE = re.compile(r'^\s*(\*?)\s*\(([^)]*)\)\s+([0-9A-Fa-f-]{36})\s+(.*?)\s+"(.*)"\s*(?:\[(.*)\])?\s*$')


def tunnel_kind(name: str) -> Optional[str]:
    for prefix, kind in TUNNEL_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return kind
    return None


def parse_nc_list(text: str) -> List[Dict[str, Any]]:
    """``scutil --nc list`` -> configured VPN services {name, status, type, enabled}."""
    services = []
    for line in text.splitlines():
        match = _NC_LINE.match(line)
        if match:
            services.append({"enabled": match.group(1) == "*", "status": match.group(2).strip(),
                             "type": match.group(4).strip(), "name": match.group(5),
                             "kind": (match.group(6) or "").strip()})
    return services


def parse_netstat_default(text: str) -> Optional[str]:
    """Interface of the IPv4 default path in ``netstat -rn -f inet`` (None: no default route)."""
    routes: Dict[str, List[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] in ("Destination", "Routing", "Internet:"):
            continue
        destination, flags, netif = fields[0], fields[2], fields[3]
        if "I" in flags:
            continue  # interface-scoped duplicate, not the primary path
        routes.setdefault(destination, []).append(netif)
    low, high = routes.get("0/1"), routes.get("128.0/1")
    if low and high and low[0] == high[0]:
        return low[0]
    default = routes.get("default")
    return default[0] if default else None


def parse_route_get(text: str) -> Optional[str]:
    """``route -n get <address>`` -> the interface line's value."""
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key.strip() == "interface":
            return value.strip() or None
    return None


def tunnels_from_interfaces(interfaces: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    tunnels = []
    for name in sorted(interfaces):
        kind = tunnel_kind(name)
        if kind is None:
            continue
        info = interfaces[name]
        addresses = routable_addresses(info["addresses"])
        tunnels.append({"name": name, "kind": kind, "up": bool(info["up"]) and bool(addresses),
                        "addresses": addresses})
    return tunnels


def summarise(tunnels: Sequence[Mapping[str, Any]], services: Optional[Sequence[Mapping[str, Any]]],
              clients: Optional[List[str]], default_if: Optional[str], default_known: bool,
              corporate: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The facts; ``services`` / ``clients`` None when their probe failed: unknown, never "none"."""
    up = {t["name"] for t in tunnels if t["up"]}
    return {
        "tunnel_up": bool(up),
        "tunnels": [dict(t) for t in tunnels],
        "vpn_clients": clients,
        "configured_vpn_services": [s["name"] for s in services] if services is not None else None,
        "default_route_interface": default_if,
        "default_route_via_tunnel": (default_if in up) if default_known and default_if else (False if default_known else None),
        "corporate_routes": corporate,
        "corporate_networks_via_tunnel": all(c["via_tunnel"] for c in corporate) if corporate else None,
        "vpn_up_share": None,
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    ifaces = host.interfaces()
    if ifaces.error is not None:
        return CheckOutcome.probe_failed(CHECK, ifaces)
    tunnels = tunnels_from_interfaces(parse_interfaces(ifaces.stdout))
    up = {t["name"] for t in tunnels if t["up"]}
    idle = [t["name"] for t in tunnels if not t["up"]]
    # the headline first: the table shows the first evidence line
    evidence.append("tunnel up: " + (", ".join(f"{t['name']} ({', '.join(t['addresses'])})" for t in tunnels if t["up"])
                                     or "none")
                    + (f"; {', '.join(idle)} without IPv4 or routable address (not a VPN)" if idle else ""))

    services: Optional[List[Dict[str, Any]]] = None
    nc = host.run(NC_LIST)
    if nc.ok:
        services = parse_nc_list(nc.stdout)
        evidence.extend(f"VPN service {s['name']!r} ({s['type']}): {s['status']}" for s in services)
    else:
        evidence.append(f"configured VPN services unknown: {nc.describe_failure()}")

    netstat = host.run(NETSTAT)
    default_if: Optional[str] = None
    if netstat.ok:
        default_if = parse_netstat_default(netstat.stdout)
        evidence.append(f"default route via {default_if or 'none'}")
    else:
        evidence.append(f"default route unknown: {netstat.describe_failure()}")

    corporate: List[Dict[str, Any]] = []
    for network in network_list(params.get("corporate_networks") or []):
        address = probe_address(network)
        route = host.run(["route", "-n", "get", address])
        if route.error is not None:
            return CheckOutcome.error(CHECK, route.failure_message(), evidence)
        # "not in table" (exit 1) means no route at all: not through the tunnel either
        interface = parse_route_get(route.stdout) if route.ok else None
        if route.ok and interface is None:
            raise ParseError(f"route -n get {address}: expected an 'interface:' line, found {route.stdout.strip()[:80]!r}")
        corporate.append({"network": network, "interface": interface, "via_tunnel": interface in up})
        evidence.append(f"route to {network} ({address}) via {interface or 'no route'}")

    clients: Optional[List[str]] = None
    procs = host.processes()
    if procs.error is None:
        clients = running_names(parse_processes(procs.stdout), VPN_CLIENT_PROCESSES)
        if clients:
            evidence.append("VPN clients running: " + ", ".join(clients))
    else:
        evidence.append(f"process list unavailable: {procs.describe_failure()}")

    facts = summarise(tunnels, services, clients, default_if, netstat.ok, corporate)
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
