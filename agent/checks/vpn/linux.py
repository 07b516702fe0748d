"""VPN on linux: collector (probes) and pure parsers.

Probes (no root needed, no traffic sent):

* ``ip -d -j addr show``: every interface with its link type (the kernel's ARPHRD type, the same number
  as ``/sys/class/net/<if>/type``), its ``linkinfo`` kind (tun/tap, wireguard, vti/xfrm ...) and addresses;
* ``/sys/class/net/<if>/tun_flags`` for an interface that has no ``linkinfo`` (old iproute2 / kernels), and
  for one of link type ``none`` that has neither, its ``uevent``: a raw-IP LTE/5G modem (qmi_wwan) is
  ARPHRD_NONE like a tun and only ``DEVTYPE=wwan`` there tells it apart (``DEVTYPE=wireguard``: WireGuard);
* ``ip -j route get <address>``: the kernel's route lookup for one address, which follows policy
  routing (``ip rule``, wg-quick's fwmark tables) and OpenVPN's ``def1`` half-routes, unlike reading
  the ``default`` entry of the main table;
* ``ip -j rule`` and ``ip -j route show table all``: evidence only (which tables exist, which default routes);
* the process list (VPN clients), NetworkManager connections and ``/etc/wireguard``, ``/etc/openvpn``.

A tunnel counts when its kind is a VPN kind, it is administratively up with carrier (``LOWER_UP``) and it
has an IPv4 or a routable (non link-local) IPv6 address. A route "via tunnel" means the kernel sends the
looked-up address out of such an interface: a tunnel that is up but does not carry the corporate
networks does not make ``corporate_networks_via_tunnel`` true.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.checks._host_json import process_rows
from agent.checks._values import load_json
from agent.checks.base import CheckOutcome, ParseError, network_list
from agent.checks.messages import message
from agent.checks.vpn.kinds import counts_as_tunnel, parse_tun_flags, uevent_devtype
from agent.checks.vpn.kinds import routable_address as _routable
from agent.checks.vpn.kinds import tunnel_kind as _kind_of_type
from agent.probes import NOT_FOUND, Host, ProbeResult

CHECK = "vpn"

# Looked up to learn where "the Internet" goes. The first one that no corporate network of the policy
# contains (policies use documentation ranges as placeholders) and no route of this machine more specific
# than a default covers (documentation ranges do get configured: a lab LAN on 192.0.2.0/24, a VPN server's
# host route) is used, so only a default route (or OpenVPN's 0.0.0.0/1 + 128.0.0.0/1 pair) matches it.
# Documentation and benchmarking ranges first, then well-known public resolvers; nothing is sent to them.
DEFAULT_ROUTE_PROBE_ADDRESSES = ("198.51.100.1", "203.0.113.1", "192.0.2.1", "192.88.99.1", "198.18.0.1",
                                 "9.9.9.9", "1.1.1.1", "8.8.8.8")
_DEFAULT_PREFIXES = ("default", "0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "::/0", "::/1", "8000::/1")

IP_TIMEOUT = 5.0

# uevent DEVTYPE of a link-type-none interface that is not a tunnel -> what the evidence calls it
NOT_TUNNEL_DEVTYPES: Dict[str, str] = {"wwan": "mobile broadband modem"}

# process name (lower case) -> VPN client label
VPN_PROCESSES: Dict[str, str] = {
    "openvpn": "openvpn",
    "nm-openvpn-service": "openvpn (NetworkManager)",
    "openvpn3-service-client": "openvpn3",
    "openvpn3-service-netcfg": "openvpn3",
    "wg-quick": "wireguard",
    "wireguard-go": "wireguard",
    "boringtun": "wireguard",
    "boringtun-cli": "wireguard",
    "openconnect": "openconnect",
    "nm-openconnect-service": "openconnect (NetworkManager)",
    "vpnc": "vpnc",
    "nm-vpnc-service": "vpnc (NetworkManager)",
    "charon": "strongswan",
    "charon-systemd": "strongswan",
    "charon-nm": "strongswan (NetworkManager)",
    "starter": "strongswan",
    "pluto": "libreswan",
    "xl2tpd": "l2tp",
    "nm-l2tp-service": "l2tp (NetworkManager)",
    "pptp": "pptp",
    "nm-pptp-service": "pptp (NetworkManager)",
    "sstpc": "sstp",
    "nm-sstp-service": "sstp (NetworkManager)",
    "nm-fortisslvpn-service": "fortinet (NetworkManager)",
    "openfortivpn": "fortinet",
    "forticlient": "forticlient",
    "fortitray": "forticlient",
    "fortivpn": "forticlient",
    "pangps": "globalprotect",
    "pangpa": "globalprotect",
    "globalprotect": "globalprotect",
    "vpnagentd": "anyconnect",
    "vpnui": "anyconnect",
    "csc_ui": "cisco secure client",
    "tailscaled": "tailscale",
    "zerotier-one": "zerotier",
    "netbird": "netbird",
    "nebula": "nebula",
    "nordvpnd": "nordvpn",
    "expressvpnd": "expressvpn",
    "mullvad-daemon": "mullvad",
    "protonvpn": "protonvpn",
}


@dataclass(frozen=True)
class Tunnel:
    name: str
    kind: str
    up: bool
    addresses: Tuple[str, ...]

    @property
    def carries_traffic(self) -> bool:
        return self.up and any(_routable(a) for a in self.addresses)

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "up": self.up, "addresses": list(self.addresses)}


@dataclass(frozen=True)
class RouteAnswer:
    """What ``ip route get`` said for one address: an interface, or no route (with the kernel's words)."""

    address: str
    interface: Optional[str]
    gateway: Optional[str] = None
    no_route: str = ""
    source: Optional[str] = None


@dataclass(frozen=True)
class IpsecPolicy:
    """An outbound kernel IPsec (xfrm) policy: traffic from ``src`` to ``dst`` is sent through ESP/AH
    tunnels to ``peers`` (policy-based IPsec, as strongSwan and libreswan set up by default: no interface)."""

    src: str
    dst: str
    priority: int
    action: str
    peers: Tuple[str, ...]
    local: Tuple[str, ...]

    def covers(self, address: str, source: Optional[str]) -> bool:
        try:
            ip = ipaddress.ip_address(address)
            dst = ipaddress.ip_network(self.dst, strict=False)
            src = ipaddress.ip_network(self.src, strict=False)
        except ValueError:
            return False
        if ip.version != dst.version or ip not in dst:
            return False
        if source is None:
            return src.prefixlen == 0
        try:
            return ipaddress.ip_address(source) in src
        except ValueError:
            return False


@dataclass
class Link:
    name: str
    link_type: str
    info_kind: str
    info_type: str
    flags: Tuple[str, ...]
    addresses: Tuple[str, ...]
    extra: Dict[str, Any] = field(default_factory=dict)


# -- pure parsers ---------------------------------------------------------------

def parse_links(text: str) -> List[Link]:
    """``ip -d -j addr show`` -> links (name, link type, linkinfo kind, flags, addresses)."""
    links: List[Link] = []
    for index, entry in enumerate(load_json(text, "ip -d -j addr show", list)):
        if not isinstance(entry, dict) or not isinstance(entry.get("ifname"), str):
            raise ParseError(f"ip -d -j addr show: entry #{index} has no interface name")
        flags = entry.get("flags") or []
        if not isinstance(flags, list):
            raise ParseError(f"ip -d -j addr show: flags of {entry['ifname']} are not a list")
        linkinfo = entry.get("linkinfo") or {}
        if not isinstance(linkinfo, dict):
            linkinfo = {}
        info_data = linkinfo.get("info_data") or {}
        addresses = []
        for addr in entry.get("addr_info") or []:
            if isinstance(addr, dict) and isinstance(addr.get("local"), str) and addr.get("family") in ("inet", "inet6"):
                addresses.append(f"{addr['local']}/{addr.get('prefixlen', '')}".rstrip("/"))
        links.append(Link(
            name=entry["ifname"],
            link_type=str(entry.get("link_type") or ""),
            info_kind=str(linkinfo.get("info_kind") or ""),
            info_type=str(info_data.get("type") or "") if isinstance(info_data, dict) else "",
            flags=tuple(str(f) for f in flags),
            addresses=tuple(addresses),
        ))
    return links


def tunnel_kind(link: Link, tun_flags: Optional[int] = None, devtype: str = "") -> Optional[str]:
    """The VPN kind of an interface from its type (not its name), or None for other interfaces
    (the mapping is shared with the service's sampler: agent.checks.vpn.kinds). ``devtype``: the
    ``DEVTYPE=`` of its uevent, which stands for the linkinfo kind when ``ip -d`` shows none (as in the sampler)."""
    return _kind_of_type(link.link_type, link.info_kind or devtype, link.info_type, tun_flags)


def link_is_up(link: Link) -> bool:
    # LOWER_UP: carrier. A tun whose VPN process died stays UP but loses it (NO-CARRIER).
    return "UP" in link.flags and "LOWER_UP" in link.flags


def parse_route_get(probe: ProbeResult, address: str) -> RouteAnswer:
    """``ip -j route get ADDRESS`` -> the interface the kernel would use, or no route."""
    if probe.rc != 0:
        message = (probe.stderr or probe.stdout).strip()
        # "RTNETLINK answers: Network is unreachable" (no route), "... No route to host" (unreachable
        # route), "... Invalid argument" (blackhole), "... Permission denied" (prohibit route):
        # the kernel answered, there is no usable route.
        if message.startswith("RTNETLINK answers:") or "unreachable" in message.lower():
            return RouteAnswer(address, None, no_route=message.splitlines()[0])
        raise ParseError(f"ip route get {address}: exited {probe.rc}: {message[:200] or 'no output'}")
    entries = load_json(probe.stdout, f"ip -j route get {address}", list)
    if not entries or not isinstance(entries[0], dict):
        raise ParseError(f"ip -j route get {address}: expected one route object, found {probe.stdout.strip()[:60]!r}")
    route = entries[0]
    route_type = route.get("type")
    if route_type in ("unreachable", "blackhole", "prohibit"):
        return RouteAnswer(address, None, no_route=f"{route_type} route")
    dev = route.get("dev")
    if not isinstance(dev, str) or not dev:
        raise ParseError(f"ip -j route get {address}: the answer names no interface: {json.dumps(route)[:120]}")
    gateway = route.get("gateway")
    source = route.get("prefsrc")
    return RouteAnswer(address, dev, gateway if isinstance(gateway, str) else None,
                       source=source if isinstance(source, str) else None)


def parse_xfrm_policies(text: str) -> List[IpsecPolicy]:
    """``ip xfrm policy list dir out`` (text: iproute2 has no JSON for xfrm) -> outbound policies whose
    selector is a whole network (no protocol/port restriction) and that tunnel traffic to a peer."""
    blocks: List[List[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            blocks.append([line.strip()])
        elif blocks:
            blocks[-1].append(line.strip())
        else:
            raise ParseError(f"ip xfrm policy: expected a 'src NET dst NET' line first, found {line.strip()[:80]!r}")
    policies = []
    for block in blocks:
        head = block[0].split()
        if len(head) < 4 or head[0] != "src" or head[2] != "dst":
            raise ParseError(f"ip xfrm policy: expected 'src NET dst NET', found {block[0][:80]!r}")
        if len(head) > 4:
            continue  # a protocol/port selector protects only part of the traffic
        body = " ".join(block[1:]).split()
        if "dir" not in body or body[body.index("dir") + 1:body.index("dir") + 2] != ["out"]:
            continue  # socket policies, in/fwd
        priority = 0
        if "priority" in body[:-1]:
            try:
                priority = int(body[body.index("priority") + 1])
            except ValueError:
                priority = 0
        action = "block" if "block" in body else "allow"
        peers: List[str] = []
        local: List[str] = []
        for index, line in enumerate(block[1:], start=1):
            words = line.split()
            if words[:1] == ["tmpl"] and "dst" in words and "src" in words:
                details = block[index + 1].split() if index + 1 < len(block) else []
                if details[-2:] == ["mode", "tunnel"]:  # transport mode protects host-to-host traffic only
                    peers.append(words[words.index("dst") + 1])
                    local.append(words[words.index("src") + 1])
        policies.append(IpsecPolicy(head[1], head[3], priority, action, tuple(peers), tuple(local)))
    return policies


def ipsec_policy_for(policies: Sequence[IpsecPolicy], address: str, source: Optional[str]) -> Optional[IpsecPolicy]:
    """The policy the kernel applies to traffic from ``source`` to ``address`` if it tunnels it, else None."""
    matching = sorted((p for p in policies if p.covers(address, source)), key=lambda p: p.priority)
    if matching and matching[0].action == "allow" and matching[0].peers:
        return matching[0]
    return None


def parse_rules(text: str) -> List[str]:
    """``ip -j rule`` -> the non-standard rules as text (policy routing evidence)."""
    rules = []
    for entry in load_json(text, "ip -j rule", list):
        if not isinstance(entry, dict):
            continue
        table = str(entry.get("table", ""))
        if table in ("local", "main", "default") and len(entry) <= 3:
            continue
        words = [str(entry.get("priority", "?")) + ":"]
        if "not" in entry:  # iproute2 prints the flag as "not": null
            words.append("not")
        for key in ("src", "dst", "fwmark", "iif", "oif", "uidrange", "ipproto", "dport"):
            if key in entry:
                words.append(f"{key} {entry[key]}")
        if "suppress_prefixlength" in entry:
            words.append(f"suppress_prefixlength {entry['suppress_prefixlength']}")
        words.append(f"lookup {table}" if table else str(entry.get("action", "")))
        rules.append(" ".join(w for w in words if w))
    return rules


def parse_default_routes(text: str) -> List[str]:
    """``ip -j route show table all`` -> default routes of every table, as text."""
    found = []
    for entry in load_json(text, "ip -j route show table all", list):
        if not isinstance(entry, dict):
            continue
        dst = entry.get("dst")
        if dst in ("default", "0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"):
            table = entry.get("table", "main")
            via = f" via {entry['gateway']}" if entry.get("gateway") else ""
            found.append(f"{dst} dev {entry.get('dev', '?')}{via} table {table}")
    return found


def parse_vpn_processes(text: str) -> List[str]:
    """Host.processes() JSON -> sorted labels of known VPN clients."""
    labels = set()
    for row in process_rows(text):
        candidates = [str(row.get("name") or "")]
        exe = row.get("exe")
        if isinstance(exe, str) and exe:
            candidates.append(os.path.basename(exe))
        cmdline = row.get("cmdline")
        if isinstance(cmdline, list) and cmdline:
            candidates.append(os.path.basename(str(cmdline[0])))
            # wg-quick is a bash script: "bash /usr/bin/wg-quick up wg0"
            if len(cmdline) > 1 and candidates[-1] in ("bash", "sh"):
                candidates.append(os.path.basename(str(cmdline[1])))
        for candidate in candidates:
            label = VPN_PROCESSES.get(candidate.lower())
            if label:
                labels.add(label)
                break
        else:
            # pppd started by a VPN: "pppd pty 'pptp vpn.example.org --nolaunchpppd'", "plugin sstp-pppd-plugin.so"
            words = " ".join(str(w) for w in cmdline).lower() if isinstance(cmdline, list) else ""
            if candidates[0] == "pppd" and any(k in words for k in ("pptp", "l2tp", "sstp", "openfortivpn")):
                labels.add("pppd (vpn)")
    return sorted(labels)


def parse_nmcli_vpn_connections(text: str) -> List[str]:
    """``nmcli -t -f NAME,TYPE connection show`` -> names of VPN/WireGuard profiles."""
    names = []
    for line in text.splitlines():
        # terse mode escapes ':' inside names as '\:'
        name, sep, kind = line.replace("\\:", "\0").rpartition(":")
        if sep and kind.strip() in ("vpn", "wireguard"):
            names.append("networkmanager:" + name.replace("\0", ":"))
    return names


def parse_specific_routes(text: str) -> List[str]:
    """``ip -j route show table all`` -> the destinations of every route more specific than a default
    (on-link networks, host routes, local and broadcast addresses of every table), as CIDR."""
    found: List[str] = []
    for entry in load_json(text, "ip -j route show table all", list):
        if not isinstance(entry, dict):
            continue
        dst = str(entry.get("dst", ""))
        if not dst or dst in _DEFAULT_PREFIXES:
            continue
        try:
            found.append(str(ipaddress.ip_network(dst, strict=False)))
        except ValueError:
            continue  # "multicast ..." and other non-address destinations route nothing we look up
    return sorted(set(found))


def default_route_probe(networks: Sequence[str], specific_routes: Sequence[str] = ()) -> str:
    """The address to look up for the default route: one no corporate network contains and no route more
    specific than a default covers (``specific_routes``, `parse_specific_routes`)."""
    parsed = [ipaddress.ip_network(n, strict=False) for n in list(networks) + list(specific_routes)]
    corporate = [ipaddress.ip_network(n, strict=False) for n in networks]
    for candidate in DEFAULT_ROUTE_PROBE_ADDRESSES:
        address = ipaddress.ip_address(candidate)
        if not any(address in net for net in parsed if net.version == address.version):
            return candidate
    # every candidate is covered by some route: at least keep out of the corporate networks
    for candidate in DEFAULT_ROUTE_PROBE_ADDRESSES:
        address = ipaddress.ip_address(candidate)
        if not any(address in net for net in corporate if net.version == address.version):
            return candidate
    return DEFAULT_ROUTE_PROBE_ADDRESSES[-1]


def first_address(network: str) -> str:
    """The address looked up for a network: its first host (the address itself for a /32 or /128)."""
    net = ipaddress.ip_network(network, strict=False)
    if net.num_addresses == 1:
        return str(net.network_address)
    return str(net.network_address + 1)


def _describe_route(answer: RouteAnswer, tunnels: Mapping[str, Tunnel],
                    ipsec: Optional[IpsecPolicy] = None) -> str:
    if answer.interface is None:
        return f"ip route get {answer.address}: no route ({answer.no_route})"
    via = f" via {answer.gateway}" if answer.gateway else ""
    tunnel = tunnels.get(answer.interface)
    if tunnel and tunnel.carries_traffic:
        what = f"tunnel ({tunnel.kind})"
    elif ipsec is not None:
        what = f"encrypted by the IPsec policy {ipsec.src} -> {ipsec.dst} (tunnel to {', '.join(ipsec.peers)})"
    else:
        what = "not a tunnel"
    return f"ip route get {answer.address}: dev {answer.interface}{via}, {what}"


def build_facts(links: Sequence[Link], tun_flags: Mapping[str, Optional[int]], default_route: RouteAnswer,
                corporate: Sequence[Tuple[str, RouteAnswer]], vpn_clients: Sequence[str],
                configured: Optional[Sequence[str]], ipsec: Sequence[IpsecPolicy] = (),
                devtypes: Optional[Mapping[str, str]] = None,
                ) -> Tuple[Dict[str, Any], List[str], str]:
    """Pure: parsed observations -> (facts, evidence, summary sentence). ``devtypes``: uevent ``DEVTYPE=``
    of the link-type-none interfaces without linkinfo or tun_flags (the only ones whose uevent is read)."""
    tunnels: Dict[str, Tunnel] = {}
    ignored: List[str] = []
    for link in links:
        devtype = (devtypes or {}).get(link.name, "")
        kind = tunnel_kind(link, tun_flags.get(link.name), devtype)
        if kind is None and devtype and not link.info_kind:
            what = NOT_TUNNEL_DEVTYPES.get(devtype, f"{devtype} device")
            ignored.append(f"{link.name}: {what} (DEVTYPE={devtype}), not a tunnel")
        elif kind and not counts_as_tunnel(kind, vpn_clients):
            ignored.append(f"{link.name}: PPP link with no PPP-based VPN client running (dial-up or mobile "
                           "broadband?), not counted as a tunnel")
        elif kind:
            tunnels[link.name] = Tunnel(link.name, kind, link_is_up(link), link.addresses)
    # policy-based IPsec has no interface: each peer its outbound policies tunnel to counts as a tunnel
    for policy in ipsec:
        if policy.action == "allow":
            for peer, local in zip(policy.peers, policy.local):
                name = f"ipsec-policy:{peer}"
                known = tunnels.get(name)
                addresses = tuple(sorted(set((known.addresses if known else ()) + (local,))))
                tunnels[name] = Tunnel(name, "ipsec", True, addresses)
    carrying = [t for t in tunnels.values() if t.carries_traffic]
    evidence = [
        f"tunnel {t.name} ({t.kind}): {'up' if t.up else 'down'}, addresses {', '.join(t.addresses) or 'none'}"
        for t in tunnels.values()
    ] or ["no tunnel interface (tun, tap, wireguard, ppp, ipsec vti/xfrm)"]
    evidence.extend(ignored)
    def ipsec_for(answer: RouteAnswer) -> Optional[IpsecPolicy]:
        return ipsec_policy_for(ipsec, answer.address, answer.source) if answer.interface else None

    def via_tunnel(answer: RouteAnswer) -> bool:
        tunnel = tunnels.get(answer.interface or "")
        return bool(tunnel and tunnel.carries_traffic) or ipsec_for(answer) is not None

    evidence.append(_describe_route(default_route, tunnels, ipsec_for(default_route)))
    routes = []
    for network, answer in corporate:
        routes.append({"network": network, "interface": answer.interface, "via_tunnel": via_tunnel(answer)})
        evidence.append(f"corporate {network}: " + _describe_route(answer, tunnels, ipsec_for(answer)))
    if vpn_clients:
        evidence.append("VPN client processes: " + ", ".join(vpn_clients))
    facts: Dict[str, Any] = {
        "tunnel_up": bool(carrying),
        "tunnels": [t.to_json() for t in tunnels.values()],
        "vpn_clients": list(vpn_clients),
        "configured_vpn_services": None if configured is None else list(configured),
        "default_route_interface": default_route.interface,
        "default_route_via_tunnel": via_tunnel(default_route),
        "corporate_routes": routes,
        "corporate_networks_via_tunnel": all(r["via_tunnel"] for r in routes) if routes else None,
    }
    if not carrying:
        summary = "no VPN tunnel is up"
    else:
        names = ", ".join(t.name for t in carrying)
        outside = [r for r in routes if not r["via_tunnel"]]
        if outside:
            summary = f"tunnel {names} is up but " + "; ".join(
                f"{r['network']} is routed via {r['interface'] or 'no route'}, not through a tunnel" for r in outside)
        elif routes:
            summary = f"tunnel {names} is up and routes every corporate network"
        else:
            summary = f"tunnel {names} is up" + (" and carries the default route" if facts["default_route_via_tunnel"] else "")
    return facts, evidence, summary


# -- collector ------------------------------------------------------------------

class _ProbeFailed(Exception):
    def __init__(self, probe: ProbeResult) -> None:
        super().__init__(probe.describe_failure())
        self.probe = probe


def _route_get(host: Host, address: str) -> RouteAnswer:
    probe = host.run(["ip", "-j", "route", "get", address], timeout=IP_TIMEOUT)
    if probe.error is not None:
        raise _ProbeFailed(probe)
    return parse_route_get(probe, address)


def _configured_services(host: Host, evidence: List[str]) -> Optional[List[str]]:
    found: List[str] = []
    known = True
    for directory, label in (("/etc/wireguard", "wireguard"), ("/etc/openvpn/client", "openvpn"),
                             ("/etc/openvpn", "openvpn")):
        listing = host.listdir(directory)
        if listing.error == NOT_FOUND:
            continue
        if listing.error is not None:
            evidence.append(f"configured VPNs unknown: {listing.describe_failure()}")
            known = False
            continue
        found.extend(f"{label}:{name[:-5]}" for name in listing.stdout.splitlines() if name.endswith(".conf"))
    if host.which("nmcli"):
        nm = host.run(["nmcli", "-t", "-f", "NAME,TYPE", "connection", "show"], timeout=IP_TIMEOUT)
        if nm.ok:
            found.extend(parse_nmcli_vpn_connections(nm.stdout))
        else:
            evidence.append(f"NetworkManager profiles not listed: {nm.describe_failure()}")
    return sorted(set(found)) if known else None


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    raw_networks = params.get("corporate_networks")
    try:
        networks = network_list(raw_networks) if raw_networks is not None else []
    except ValueError as exc:
        return CheckOutcome.error(CHECK, message("vpn_networks_parameter_invalid", parameter="corporate_networks",
                                                 problem=str(exc), found=repr(raw_networks),
                                                 example='["10.0.0.0/8", "2001:db8::/32"]'))

    addr = host.run(["ip", "-d", "-j", "addr", "show"], timeout=IP_TIMEOUT)
    if not addr.ok:
        return CheckOutcome.probe_failed(CHECK, addr)
    links = parse_links(addr.stdout)
    tun_flags: Dict[str, Optional[int]] = {}
    devtypes: Dict[str, str] = {}
    sysfs_evidence: List[str] = []
    for link in links:
        if link.info_kind or link.link_type not in ("none", "ether"):
            continue  # ip -d said what it is: nothing more to read (the common case)
        flags_probe = host.read_text(f"/sys/class/net/{link.name}/tun_flags")
        tun_flags[link.name] = parse_tun_flags(flags_probe.stdout) if flags_probe.error is None else None
        if link.link_type == "none" and tun_flags[link.name] is None:
            # not a tun device: a raw-IP modem (DEVTYPE=wwan) looks like a tunnel in ip -d, its uevent tells
            uevent = host.read_text(f"/sys/class/net/{link.name}/uevent")
            if uevent.error is None:
                devtypes[link.name] = uevent_devtype(uevent.stdout)
            else:
                sysfs_evidence.append(f"{link.name}: link type none without details, counted as a tunnel "
                                      f"(its uevent was not read: {uevent.describe_failure()})")

    # the routing table first: the default-route probe address must not be on a route of its own
    tables = host.run(["ip", "-j", "route", "show", "table", "all"], timeout=IP_TIMEOUT)
    specific: List[str] = []
    probe_evidence: List[str] = []
    if tables.ok:
        try:
            specific = parse_specific_routes(tables.stdout)
        except ParseError as exc:
            probe_evidence.append(f"routes not understood, default-route probe chosen without them: {exc}")
    else:
        probe_evidence.append(f"routes not read, default-route probe chosen without them: {tables.describe_failure()}")
    try:
        default_answer = _route_get(host, default_route_probe(networks, specific))
        corporate = [(network, _route_get(host, first_address(network))) for network in networks]
    except _ProbeFailed as failed:
        return CheckOutcome.probe_failed(CHECK, failed.probe)

    procs = host.processes()
    if procs.error is not None:
        return CheckOutcome.probe_failed(CHECK, procs)
    clients = parse_vpn_processes(procs.stdout)

    extra_evidence: List[str] = []
    configured = _configured_services(host, extra_evidence)
    ipsec: List[IpsecPolicy] = []
    xfrm = host.run(["ip", "xfrm", "policy", "list", "dir", "out"], timeout=IP_TIMEOUT)
    if xfrm.ok:
        ipsec = parse_xfrm_policies(xfrm.stdout)
    else:
        # reading xfrm policies needs CAP_NET_ADMIN: without it, policy-based IPsec is invisible
        extra_evidence.append(f"IPsec policies not read (policy-based IPsec not seen): {xfrm.describe_failure()}")
    facts, evidence, summary = build_facts(links, tun_flags, default_answer, corporate, clients, configured, ipsec,
                                           devtypes)

    # policy routing evidence: wg-quick and some clients route through extra tables selected by rules
    rules = host.run(["ip", "-j", "rule"], timeout=IP_TIMEOUT)
    for probe, parse, label in ((rules, parse_rules, "policy routing rules"),
                                (tables, parse_default_routes, "default routes")):
        if not probe.ok:
            evidence.append(f"{label} not read (evidence only): {probe.describe_failure()}")
            continue
        try:
            lines = parse(probe.stdout)
        except ParseError as exc:
            evidence.append(f"{label} not understood (evidence only): {exc}")
            continue
        if lines:
            evidence.append(f"{label}: " + "; ".join(lines[:8]))
    return CheckOutcome(CHECK, reason=summary, facts=facts,
                        evidence=evidence + probe_evidence + sysfs_evidence + extra_evidence)
