"""The tunnel-kind mapping the VPN check (``ip -d -j addr show``) and the sampler (sysfs) share."""

from __future__ import annotations

import json
from typing import Optional

import pytest

from agent.checks.vpn import kinds, linux

WG_UEVENT = "DEVTYPE=wireguard\nINTERFACE=corp0\nIFINDEX=7\n"
PLAIN_UEVENT = "INTERFACE={name}\nIFINDEX=3\n"

# the same device as `ip -d -j` shows it (link_type, linkinfo kind, info_data type) and as sysfs shows it
# (type, tun_flags or None when absent, uevent); tun_flags values as a 6.x kernel prints them
DEVICES = [
    # name,         ip -d -j                    sysfs                                            kind (check, sampler)
    ("corp0",       ("none", "wireguard", ""),  (65534, None, WG_UEVENT),                        ("wireguard", "wireguard")),
    ("corp1",       ("none", "", ""),           (65534, None, WG_UEVENT),                        ("wireguard", "wireguard")),  # old iproute2
    ("wwan0",       ("none", "", ""),           (65534, None, "DEVTYPE=wwan\nINTERFACE=wwan0\nIFINDEX=4\n"), (None, None)),  # raw-IP modem
    ("tun7",        ("none", "", ""),           (65534, "0x1001\n", None),                       ("tun", "tun")),  # old iproute2
    ("vpn-office",  ("none", "tun", "tun"),     (65534, "0x1801\n", None),                       ("tun", "tun")),
    ("tap9",        ("ether", "tun", "tap"),    (1, "0x1802\n", None),                           ("tap", "tap")),
    ("tun_bridge",  ("ether", "bridge", ""),    (1, None, "DEVTYPE=bridge\nINTERFACE=tun_bridge\n"), (None, None)),
    ("tun_bridge",  ("ether", "bridge", ""),    (1, None, None),                                 (None, None)),  # uevent not read
    ("eth0",        ("ether", "", ""),          (1, None, PLAIN_UEVENT.format(name="eth0")),     (None, None)),
    ("wg0",         ("ether", "veth", ""),      (1, None, None),                                 (None, None)),  # a veth named wg0
    ("lo",          ("loopback", "", ""),       (772, None, None),                               (None, None)),
    ("vx1",         ("ether", "vxlan", ""),     (1, None, "DEVTYPE=vxlan\n"),                    (None, None)),
    ("ppp0",        ("ppp", "", ""),            (512, None, None),                               ("ppp", "ppp")),
    ("xfrm1",       ("none", "xfrm", ""),       (65534, None, PLAIN_UEVENT.format(name="xfrm1")), ("ipsec", "tun")),
    ("gre0",        ("gre", "gre", ""),         (778, None, None),                               (None, None)),
    ("tunl0",       ("ipip", "ipip", ""),       (768, None, None),                               (None, None)),
    ("sit0",        ("sit", "sit", ""),         (776, None, None),                               (None, None)),
]


def _ip_link(name: str, link_type: str, info_kind: str, info_type: str) -> linux.Link:
    entry = {"ifname": name, "link_type": link_type, "flags": ["UP", "LOWER_UP"], "addr_info": []}
    if info_kind:
        entry["linkinfo"] = {"info_kind": info_kind, "info_data": {"type": info_type} if info_type else {}}
    return linux.parse_links(json.dumps([entry]))[0]


@pytest.mark.parametrize(("name", "ip", "sysfs", "expected"), DEVICES, ids=[f"{d[0]}-{d[1][1] or d[1][0]}" for d in DEVICES])
def test_check_and_sampler_classify_the_same_device_alike(name, ip, sysfs, expected) -> None:
    arphrd, tun_flags_text, uevent = sysfs
    # the check reads tun_flags for links without linkinfo, and uevent for those of type none without
    # tun_flags either, as its collector does
    flags = kinds.parse_tun_flags(tun_flags_text) if tun_flags_text and not ip[1] else None
    read_uevent = ip[0] == "none" and not ip[1] and flags is None
    devtype = kinds.uevent_devtype(uevent) if read_uevent and uevent is not None else ""
    check_kind = linux.tunnel_kind(_ip_link(name, *ip), flags, devtype)
    sampler_kind = kinds.sysfs_tunnel_kind(arphrd, tun_flags_text, uevent)
    assert (check_kind, sampler_kind) == expected
    for clients in ([], ["pptp (NetworkManager)"]):
        assert kinds.counts_as_tunnel(check_kind, clients) == kinds.counts_as_tunnel(sampler_kind, clients)


@pytest.mark.parametrize(("arphrd", "tun_flags", "uevent", "kind"), [
    (65534, "0x1001", None, "tun"),  # IFF_TUN | IFF_NO_PI
    (1, "0x1002", None, "tap"),  # IFF_TAP | IFF_NO_PI
    (1, "0x0002\n", None, "tap"),
    (1, None, None, None),  # Ethernet without tun_flags: a NIC, whatever its name
    (1, "garbage", None, None),  # unreadable flags do not make a NIC a tap
    (65534, None, "DEVTYPE=wireguard", "wireguard"),
    (65534, None, None, "tun"),  # type NONE with nothing more known: a layer-3 tunnel, as the check says
    (65534, None, "DEVTYPE=wwan\nINTERFACE=wwan0", None),  # raw-IP modem: the kernel says what it is
    (512, None, None, "ppp"),
    (768, None, None, None),  # ipip or vti: sysfs cannot tell, left to the check
    (769, None, None, None),
    (823, None, None, None),
    (772, None, None, None),
    (280, None, None, None),  # ARPHRD_CAN, a type the table does not name
])
def test_sysfs_kind(arphrd: int, tun_flags: Optional[str], uevent: Optional[str], kind: Optional[str]) -> None:
    assert kinds.sysfs_tunnel_kind(arphrd, tun_flags, uevent) == kind


@pytest.mark.parametrize(("uevent", "devtype"), [
    ("DEVTYPE=wwan\nINTERFACE=wwp0s20f0u6i4\nIFINDEX=4\n", "wwan"),
    (WG_UEVENT, "wireguard"),
    (PLAIN_UEVENT.format(name="eth0"), ""),
    ("", ""),
    ("DEVTYPE= wlan \n", "wlan"),
])
def test_uevent_devtype(uevent: str, devtype: str) -> None:
    assert kinds.uevent_devtype(uevent) == devtype


def test_sysfs_link_speaks_iproute2() -> None:
    assert kinds.sysfs_link(65534, None, WG_UEVENT) == ("none", "wireguard", "", None)
    assert kinds.sysfs_link(1, "0x1802", None) == ("ether", "tun", "tap", 0x1802)
    assert kinds.sysfs_link(280, None, None) == ("[280]", "", "", None)


@pytest.mark.parametrize(("kind", "clients", "counted"), [
    ("wireguard", [], True),
    ("tap", [], True),
    ("ppp", [], False),  # dial-up / mobile broadband
    ("ppp", ["openvpn"], False),  # OpenVPN does not run over PPP
    ("ppp", ["pppd (vpn)"], True),
    ("ppp", ["sstp"], True),
    (None, ["pppd (vpn)"], False),
])
def test_counts_as_tunnel(kind: Optional[str], clients: list, counted: bool) -> None:
    assert kinds.counts_as_tunnel(kind, clients) is counted


@pytest.mark.parametrize(("address", "routable"), [
    ("10.8.0.2", True), ("10.8.0.2/24", True), ("fd42::2/64", True), ("2001:db8::5", True),
    ("fe80::1%utun3", False), ("fe80::1/64", False), ("169.254.3.4", False), ("127.0.0.1", False),
    ("::1", False), ("0.0.0.0", False), ("", False), ("not-an-address", False),
])
def test_routable_address(address: str, routable: bool) -> None:
    assert kinds.routable_address(address) is routable
