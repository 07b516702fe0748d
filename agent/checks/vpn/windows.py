"""VPN on Windows: VPN-kind network adapters, Windows VPN profiles, routes, known client processes.

A tunnel counts when its adapter is up with an IPv4 or routable IPv6 address. Whether traffic uses it is
a routing question: the default routes (0.0.0.0/0, and the 0.0.0.0/1 + 128.0.0.0/1 pair full-tunnel
clients install) and, per corporate network of the policy, the route Find-NetRoute picks for its first
address. A tunnel that is up while those routes leave through Wi-Fi does not protect the traffic.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agent.checks._host_json import parse_interfaces, parse_processes, routable_addresses, running_names
from agent.checks._windows_ps import (
    as_dict_list,
    parse_ps_json,
    ps_failure,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome, network_list
from agent.probes import Host

CHECK = "vpn"

ADAPTERS_PS = ("Get-NetAdapter -IncludeHidden | Select-Object Name,InterfaceDescription,ifIndex,"
               "@{n='Status';e={[string]$_.Status}},MediaType,ComponentID")
PROFILES_PS = ("@(Get-VpnConnection -AllUserConnection -ErrorAction SilentlyContinue) + "
               "@(Get-VpnConnection -ErrorAction SilentlyContinue) | Select-Object Name,ServerAddress,"
               "@{n='TunnelType';e={[string]$_.TunnelType}},ConnectionStatus,SplitTunneling")
ROUTES_PS = ("Get-NetRoute -AddressFamily IPv4 -ErrorAction SilentlyContinue | Where-Object "
             "{ $_.DestinationPrefix -in @('0.0.0.0/0','0.0.0.0/1','128.0.0.0/1') } | "
             "Select-Object DestinationPrefix,InterfaceAlias,ifIndex,NextHop,RouteMetric,"
             "@{n='InterfaceMetric';e={$_.InterfaceMetric}}")


def find_route_ps(address: str) -> str:
    return (f"Find-NetRoute -RemoteIPAddress '{address}' -ErrorAction SilentlyContinue | "
            "Where-Object { $_.DestinationPrefix } | Select-Object DestinationPrefix,InterfaceAlias,ifIndex,NextHop")


# Adapter descriptions / component ids of VPN clients' virtual adapters, and what kind of tunnel they are.
ADAPTER_KINDS = (
    ("wireguard", "wireguard"),
    ("wintun", "wintun"),
    ("tap-windows", "tap"),
    ("tap0901", "tap"),
    ("openvpn data channel offload", "tun"),
    ("ovpn-dco", "tun"),
    ("anyconnect", "anyconnect"),
    ("cisco secure client", "anyconnect"),
    ("pangp", "globalprotect"),
    ("fortinet", "fortinet"),
    ("fortissl", "fortinet"),
    ("juniper", "pulse"),
    ("pulse secure", "pulse"),
    ("ivanti", "pulse"),
    ("zscaler", "zscaler"),
    ("f5 networks vpn", "f5"),
    ("checkpoint virtual network", "checkpoint"),
    ("sonicwall", "sonicwall"),
    ("wan miniport", "ras"),
    ("ras async adapter", "ras"),
)

VPN_CLIENT_PROCESSES: Dict[str, List[str]] = {
    "GlobalProtect": ["PanGPS.exe", "PanGPA.exe"],
    "Cisco AnyConnect / Secure Client": ["vpnagent.exe", "vpnui.exe"],
    "FortiClient": ["FortiSSLVPNdaemon.exe", "FortiTray.exe", "fortivpn.exe"],
    "WireGuard": ["wireguard.exe"],
    "OpenVPN": ["openvpn.exe", "openvpnserv.exe", "openvpnserv2.exe"],
    "OpenVPN Connect": ["OpenVPNConnect.exe", "ovpnconnector.exe", "agent_ovpnconnect.exe"],
    "Ivanti / Pulse Secure": ["Pulse.exe", "dsAccessService.exe"],
    "Zscaler": ["ZSATunnel.exe"],
    "Check Point": ["TracSrvWrapper.exe"],
}


def adapter_kind(description: str, component_id: str = "") -> Optional[str]:
    text = f"{description} {component_id}".lower()
    for marker, kind in ADAPTER_KINDS:
        if marker in text:
            return kind
    return None


def parse_adapters(text: str) -> List[Dict[str, Any]]:
    """Get-NetAdapter rows of VPN kinds: {name, kind, status}."""
    tunnels = []
    for row in as_dict_list(parse_ps_json(text, "Get-NetAdapter"), "Get-NetAdapter"):
        name = ps_str(row.get("Name"))
        kind = adapter_kind(ps_str(row.get("InterfaceDescription")) or "", ps_str(row.get("ComponentID")) or "")
        if name and kind and kind != "ras":  # WAN miniports are templates; RAS links appear as profiles
            tunnels.append({"name": name, "kind": kind, "status": ps_str(row.get("Status")) or "",
                            "description": ps_str(row.get("InterfaceDescription")) or ""})
    return tunnels


def parse_profiles(text: str) -> List[Dict[str, Any]]:
    """Get-VpnConnection (all-user and per-user) -> {name, server, tunnel_type, connected, split}."""
    profiles = []
    seen = set()
    for row in as_dict_list(parse_ps_json(text, "Get-VpnConnection"), "Get-VpnConnection"):
        name = ps_str(row.get("Name"))
        if not name or name in seen:
            continue
        seen.add(name)
        profiles.append({"name": name, "server": ps_str(row.get("ServerAddress")),
                         "tunnel_type": ps_str(row.get("TunnelType")),
                         "connected": (ps_str(row.get("ConnectionStatus")) or "").lower() == "connected",
                         "split": row.get("SplitTunneling")})
    return profiles


def parse_routes(text: str) -> List[Dict[str, Any]]:
    routes = []
    for row in as_dict_list(parse_ps_json(text, "Get-NetRoute"), "Get-NetRoute"):
        metric = (ps_int(row.get("RouteMetric")) or 0) + (ps_int(row.get("InterfaceMetric")) or 0)
        routes.append({"prefix": ps_str(row.get("DestinationPrefix")) or "",
                       "interface": ps_str(row.get("InterfaceAlias")) or "", "metric": metric})
    return routes


def default_route_interface(routes: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """The interface IPv4 traffic to the internet takes: the 0/1 + 128/1 pair wins over 0/0 (longer prefixes)."""
    halves = {}
    for prefix in ("0.0.0.0/1", "128.0.0.0/1"):
        candidates = sorted((r for r in routes if r["prefix"] == prefix), key=lambda r: r["metric"])
        if candidates:
            halves[prefix] = candidates[0]["interface"]
    if len(halves) == 2 and len(set(halves.values())) == 1:
        return next(iter(halves.values()))
    defaults = sorted((r for r in routes if r["prefix"] == "0.0.0.0/0"), key=lambda r: r["metric"])
    return defaults[0]["interface"] if defaults else None


def parse_find_route(text: str) -> Optional[str]:
    rows = as_dict_list(parse_ps_json(text, "Find-NetRoute"), "Find-NetRoute")
    for row in rows:
        alias = ps_str(row.get("InterfaceAlias"))
        if alias:
            return alias
    return None


def probe_address(network: str) -> str:
    """The address whose route stands for ``network``: its first host address."""
    net = ipaddress.ip_network(network, strict=False)
    return str(net.network_address + 1) if net.num_addresses > 2 else str(net.network_address)


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    adapters_result = run_ps(host, ADAPTERS_PS)
    failure = ps_failure_message(adapters_result, "Get-NetAdapter")
    if failure is not None:
        return CheckOutcome.error(CHECK, failure)
    adapters = parse_adapters(adapters_result.stdout)

    ifaces_result = host.interfaces()
    if ifaces_result.error is not None:
        return CheckOutcome.probe_failed(CHECK, ifaces_result)
    interfaces = parse_interfaces(ifaces_result.stdout)

    profiles: List[Dict[str, Any]] = []
    profiles_known = False
    profiles_result = run_ps(host, PROFILES_PS)
    profiles_failure = ps_failure(profiles_result, "Get-VpnConnection")
    if profiles_failure:
        evidence.append(f"VPN profiles unavailable: {profiles_failure}")
    else:
        profiles = parse_profiles(profiles_result.stdout)
        profiles_known = True

    tunnels: List[Dict[str, Any]] = []
    for adapter in adapters:
        info = interfaces.get(adapter["name"], {"up": False, "addresses": []})
        addresses = routable_addresses(info["addresses"])
        up = adapter["status"].lower() == "up" and bool(addresses)
        tunnels.append({"name": adapter["name"], "kind": adapter["kind"], "up": up, "addresses": addresses})
        evidence.append(f"adapter {adapter['name']} ({adapter['description']}): status {adapter['status']}, "
                        f"addresses {', '.join(addresses) or 'none routable'}")
    for profile in profiles:
        if profile["connected"] and profile["name"] not in {t["name"] for t in tunnels}:
            info = interfaces.get(profile["name"], {"up": True, "addresses": []})
            addresses = routable_addresses(info["addresses"])
            tunnels.append({"name": profile["name"], "kind": (profile["tunnel_type"] or "ras").lower(),
                            "up": True, "addresses": addresses})
        evidence.append(f"VPN profile {profile['name']} ({profile['tunnel_type']}, {profile['server']}): "
                        f"{'connected' if profile['connected'] else 'disconnected'}")
    tunnel_names = {t["name"] for t in tunnels if t["up"]}
    # the headline first: the table shows the first evidence line
    evidence.insert(0, "tunnel up: " + (", ".join(f"{t['name']} ({t['kind']}, {', '.join(t['addresses']) or 'no address'})"
                                                  for t in tunnels if t["up"]) or "none"))

    routes_result = run_ps(host, ROUTES_PS)
    routes_failure = ps_failure(routes_result, "Get-NetRoute")
    default_if: Optional[str] = None
    if routes_failure:
        evidence.append(f"default route unknown: {routes_failure}")
    else:
        default_if = default_route_interface(parse_routes(routes_result.stdout))
        evidence.append(f"default route via {default_if or 'none'}")

    corporate: List[Dict[str, Any]] = []
    networks = network_list(params.get("corporate_networks") or [])
    for network in networks:
        address = probe_address(network)
        route = run_ps(host, find_route_ps(address))
        route_failure = ps_failure_message(route, f"Find-NetRoute {address}")
        if route_failure is not None:
            return CheckOutcome.error(CHECK, route_failure, evidence)
        interface = parse_find_route(route.stdout)
        corporate.append({"network": network, "interface": interface, "via_tunnel": interface in tunnel_names})
        evidence.append(f"route to {network} ({address}) via {interface or 'no route'}")

    procs = host.processes()
    clients: Optional[List[str]] = None  # unknown unless the process list was read
    if procs.error is None:
        clients = running_names(parse_processes(procs.stdout), VPN_CLIENT_PROCESSES)
    else:
        evidence.append(f"process list unavailable: {procs.describe_failure()}")

    facts = {
        "tunnel_up": bool(tunnel_names),
        "tunnels": tunnels,
        "vpn_clients": clients,
        # a failed listing is unknown (null), never "no profile"
        "configured_vpn_services": [p["name"] for p in profiles] if profiles_known else None,
        "default_route_interface": default_if,
        "default_route_via_tunnel": (default_if in tunnel_names) if default_if is not None else None,
        "corporate_routes": corporate,
        "corporate_networks_via_tunnel": all(c["via_tunnel"] for c in corporate) if corporate else None,
        "vpn_up_share": None,
    }
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
