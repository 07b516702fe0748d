"""Pure readers for the JSON the Host gives for processes and network interfaces."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from agent.checks._values import load_json


def process_rows(text: str) -> List[Dict[str, Any]]:
    """``Host.processes()`` as recorded: its objects ({pid, name, exe, cmdline, username}; anything else in
    the list is skipped). Empty output is an empty list."""
    return [row for row in load_json(text or "[]", "process list", list) if isinstance(row, dict)]


def parse_processes(text: str) -> List[Dict[str, Any]]:
    """Rows of ``Host.processes()``: dicts with at least a string ``name``."""
    out = []
    for row in process_rows(text):
        name = row.get("name")
        exe = row.get("exe")
        out.append({"name": name if isinstance(name, str) else "", "exe": exe if isinstance(exe, str) else ""})
    return out


def parse_interfaces(text: str) -> Dict[str, Dict[str, Any]]:
    """``Host.interfaces()``: name -> {up: bool, addresses: [{family, address}]}."""
    data = load_json(text or "{}", "interface list", dict)
    out: Dict[str, Dict[str, Any]] = {}
    for name, info in data.items():
        if not isinstance(info, dict):
            continue
        addresses = []
        for addr in info.get("addresses") or []:
            if isinstance(addr, dict) and isinstance(addr.get("address"), str):
                addresses.append({"family": str(addr.get("family", "")), "address": addr["address"]})
        out[str(name)] = {"up": bool(info.get("up")), "addresses": addresses}
    return out


def routable_ip(ip: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
    """Not loopback, unspecified or link-local: fe80::/10 exists on every interface (a utun with only that
    is no VPN), and 169.254/16 means no DHCP answer, not a tunnel address."""
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local)


def routable_addresses(addresses: Sequence[Mapping[str, Any]]) -> List[str]:
    """The routable (:func:`routable_ip`) addresses of ``Host.interfaces()`` entries, without %scope."""
    out = []
    for addr in addresses:
        text = str(addr.get("address", "")).split("%")[0]
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if routable_ip(ip):
            out.append(text)
    return out


def running_names(processes: Sequence[Mapping[str, Any]], known: Mapping[str, Sequence[str]]) -> List[str]:
    """Product names from ``known`` (product -> process names, case-insensitive) that have a process running."""
    seen = set()
    for proc in processes:
        name = str(proc.get("name", "")).lower()
        exe_base = str(proc.get("exe", "")).replace("\\", "/").rsplit("/", 1)[-1].lower()
        seen.add(name)
        if exe_base:
            seen.add(exe_base)
    found = []
    for product, names in known.items():
        if any(n.lower() in seen for n in names):
            found.append(product)
    return found


def iso_utc(epoch: Optional[float]) -> Optional[str]:
    """RFC 3339 UTC text for epoch seconds (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def days_between(earlier: Optional[float], now: float) -> Optional[float]:
    """Whole-ish days from ``earlier`` to ``now`` (two decimals), never negative; None when unknown."""
    if earlier is None:
        return None
    return round(max(0.0, now - earlier) / 86400.0, 2)
