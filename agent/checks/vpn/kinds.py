"""Which Linux interfaces are VPN tunnels, by type: the one mapping the VPN check and the sampler share.

Pure functions, no I/O. The vocabulary is iproute2's: a link type is the name ``ip`` prints for the
kernel's ARPHRD number (``none``, ``ether``, ``ppp``, ``ipip`` ...), an info kind is the ``linkinfo`` kind
of ``ip -d`` (``tun``, ``wireguard``, ``vti``, ``xfrm`` ...). The VPN check gets both from ``ip -d -j addr
show``; the sampler, which must stay cheap, gets them from sysfs (:func:`sysfs_link`): the type number in
``/sys/class/net/<if>/type``, ``tun_flags`` (tun/tap devices only) and ``DEVTYPE=`` in ``uevent``.
"""

from __future__ import annotations

import ipaddress
from typing import Collection, Dict, Optional, Tuple

from agent.checks._host_json import routable_ip

# linkinfo info_kind -> tunnel kind. GRE/IPIP/SIT are plain (unencrypted) tunnels and the kernel
# creates fallback devices (gre0, tunl0, sit0) for them: they are not VPN tunnels.
_INFO_KIND = {
    "wireguard": "wireguard",
    "vti": "ipsec",
    "vti6": "ipsec",
    "xfrm": "ipsec",
    "ppp": "ppp",
}
# link_type (ARPHRD) names iproute2 prints -> kind, for interfaces without linkinfo
_LINK_TYPE = {"ppp": "ppp"}
IFF_TUN = 0x0001
IFF_TAP = 0x0002

ARPHRD_ETHER = 1  # also a tap device
ARPHRD_PPP = 512
ARPHRD_NONE = 65534  # layer-3 devices without a link header: tun, WireGuard, xfrm
# ARPHRD numbers (linux/if_arp.h) -> the link type names iproute2 prints for them
ARPHRD_NAMES: Dict[int, str] = {
    ARPHRD_ETHER: "ether",
    ARPHRD_PPP: "ppp",
    519: "rawip",
    768: "ipip",  # ARPHRD_TUNNEL: ipip and vti alike
    769: "tunnel6",  # ip6tnl and vti6 alike
    772: "loopback",
    776: "sit",
    778: "gre",
    823: "gre6",
    ARPHRD_NONE: "none",
}

# clients that carry their tunnel over a PPP link (ppp0): without one of them a PPP link is dial-up or
# mobile broadband, not a VPN, and must not pass for one (it may even carry the default route)
PPP_VPN_CLIENTS = frozenset({"l2tp", "l2tp (NetworkManager)", "pptp", "pptp (NetworkManager)", "sstp",
                             "sstp (NetworkManager)", "fortinet", "fortinet (NetworkManager)", "pppd (vpn)"})


def parse_tun_flags(text: str) -> Optional[int]:
    """``/sys/class/net/<if>/tun_flags`` (``0x1001``) -> int, None when unreadable."""
    try:
        return int(text.strip(), 16)
    except ValueError:
        return None


def uevent_devtype(text: str) -> str:
    """``DEVTYPE=`` of ``/sys/class/net/<if>/uevent`` (``wwan``, ``wireguard`` ...), "" when it prints none."""
    devtype = ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVTYPE":
            devtype = value.strip()
    return devtype


def tunnel_kind(link_type: str, info_kind: str = "", info_type: str = "",
                tun_flags: Optional[int] = None) -> Optional[str]:
    """The VPN kind of an interface from its type (not its name), or None for other interfaces."""
    if info_kind == "tun":
        return "tap" if info_type == "tap" else "tun"
    if info_kind in _INFO_KIND:
        return _INFO_KIND[info_kind]
    if info_kind:
        return None
    if link_type in _LINK_TYPE:
        return _LINK_TYPE[link_type]
    if tun_flags is not None:
        return "tap" if tun_flags & IFF_TAP else "tun"
    if link_type == "none":
        # ARPHRD_NONE without details: a layer-3 tunnel device (tun or WireGuard on an old iproute2).
        # A raw-IP modem (qmi_wwan) is ARPHRD_NONE too: callers pass its DEVTYPE=wwan as info_kind.
        return "tun"
    return None


def counts_as_tunnel(kind: Optional[str], vpn_clients: Collection[str]) -> bool:
    """A VPN kind counts, except PPP without a PPP-based VPN client running (dial-up, mobile broadband)."""
    if kind == "ppp":
        return bool(PPP_VPN_CLIENTS & set(vpn_clients))
    return kind is not None


def sysfs_link(arphrd: int, tun_flags_text: Optional[str], uevent_text: Optional[str],
               ) -> Tuple[str, str, str, Optional[int]]:
    """sysfs -> what ``ip -d`` would say: (link_type, info_kind, info_type, tun_flags) for :func:`tunnel_kind`.

    ``arphrd``: the number in ``/sys/class/net/<if>/type``; ``tun_flags_text``: its ``tun_flags`` (None:
    absent, not a tun/tap device); ``uevent_text``: its ``uevent`` (None: not read). A tun/tap device is
    ``tun`` with ``info_type`` tun or tap from IFF_TAP; otherwise the kernel's ``DEVTYPE=`` (``wireguard``,
    ``vxlan``, ``bridge``, ``wwan`` ...), where it prints one, stands for the linkinfo kind.
    """
    link_type = ARPHRD_NAMES.get(arphrd, f"[{arphrd}]")  # iproute2 prints unknown types as [N]
    flags = parse_tun_flags(tun_flags_text) if tun_flags_text is not None else None
    if flags is not None:
        return link_type, "tun", "tap" if flags & IFF_TAP else "tun", flags
    return link_type, uevent_devtype(uevent_text or ""), "", None


def sysfs_tunnel_kind(arphrd: int, tun_flags_text: Optional[str], uevent_text: Optional[str]) -> Optional[str]:
    """:func:`tunnel_kind` of an interface described by sysfs (see :func:`sysfs_link`)."""
    return tunnel_kind(*sysfs_link(arphrd, tun_flags_text, uevent_text))


def routable_address(address: str) -> bool:
    """:func:`routable_ip` for one address in ``10.8.0.2/24`` or ``fe80::1%utun3`` form."""
    try:
        ip = ipaddress.ip_address(address.split("/")[0].split("%")[0])
    except ValueError:
        return False
    return routable_ip(ip)
