"""What counts as a remote-access listener, shared by the platform collectors (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Iterable, List, Optional, Tuple

# Well-known ports of remote-login and file-sharing services.
PORTS: Dict[int, str] = {22: "ssh", 23: "telnet", 139: "smb", 445: "smb", 3283: "apple_remote_desktop",
                         3389: "rdp", 5900: "vnc", 5901: "vnc", 5902: "vnc", 5903: "vnc"}
# Processes that are remote-access servers whatever port they chose.
PROCESSES: Dict[str, str] = {
    "sshd": "ssh", "dropbear": "ssh", "xrdp": "rdp", "gnome-remote-de": "rdp", "gnome-remote-desktop-daemon": "rdp",
    "krdp": "rdp", "termservice": "rdp", "xvnc": "vnc", "x11vnc": "vnc", "vino-server": "vnc", "krfb": "vnc",
    "tigervnc": "vnc", "vncserver": "vnc", "winvnc": "vnc", "tvnserver": "vnc", "screensharingd": "vnc",
    "ardagent": "apple_remote_desktop", "smbd": "smb", "telnetd": "telnet", "in.telnetd": "telnet",
}


def reachable(address: str) -> Optional[bool]:
    """False for loopback addresses only; wildcards (0.0.0.0, ::, *) and any other address are reachable."""
    text = address.strip().strip("[]").split("%", 1)[0]
    if text in ("*", ""):  # ss and netstat write a wildcard this way; 0.0.0.0 and :: parse below
        return True
    try:
        return not ipaddress.ip_address(text).is_loopback
    except ValueError:
        return None


def service_for(port: int, process: Optional[str]) -> Optional[str]:
    name = (process or "").lower()
    if name in PROCESSES:
        return PROCESSES[name]
    return PORTS.get(port)


def summarise(listeners: Iterable[Dict[str, Any]]) -> Tuple[bool, List[str]]:
    """(exposed, sorted service names) from listeners; a firewall known to refuse a service hides it."""
    names = sorted({item["service"] for item in listeners
                    if item.get("reachable") is not False and item.get("firewall_allows") is not False})
    return bool(names), names
