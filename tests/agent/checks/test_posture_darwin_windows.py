"""The five checks of baseline v3 on macOS and Windows: parsers on real output formats, traps, and garbage."""

from __future__ import annotations

import json
from typing import Any, Callable, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.base import ParseError
from agent.checks.local_admin import darwin as la_mac
from agent.checks.local_admin import windows as la_win
from agent.checks.remote_access import darwin as ra_mac
from agent.checks.remote_access import windows as ra_win
from agent.checks.secure_boot import darwin as sb_mac
from agent.checks.secure_boot import windows as sb_win
from agent.checks.time_sync import darwin as ts_mac
from agent.checks.time_sync import windows as ts_win
from agent.checks.wifi import darwin as wf_mac
from agent.checks.wifi import windows as wf_win

NETSH_EN = """
There is 1 interface on the system:

    Name                   : Wi-Fi
    Description            : Intel(R) Wi-Fi 6 AX201 160MHz
    GUID                   : 3f2b8c1d-6e4a-4b7f-9c2d-1a0e5f7b3c9d
    Physical address       : 8c:17:59:a2:4e:61
    State                  : connected
    SSID                   : Office : 5G
    BSSID                  : 3c:84:6a:1f:9b:22
    Network type           : Infrastructure
    Radio type             : 802.11ax
    Authentication         : {auth}
    Cipher                 : {cipher}
    Connection mode        : Profile
    Profile                : Office : 5G

    Hosted network status  : Not available
"""
NETSH_DISCONNECTED = """
There are 2 interfaces on the system:

    Name                   : Wi-Fi
    Description            : Intel(R) Wi-Fi 6 AX201 160MHz
    GUID                   : 3f2b8c1d-6e4a-4b7f-9c2d-1a0e5f7b3c9d
    Physical address       : 8c:17:59:a2:4e:61
    State                  : disconnected
    Radio status           : Hardware On
                             Software On

    Name                   : Wi-Fi 2
    Description            : TP-Link Wireless USB Adapter
    GUID                   : 7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6
    Physical address       : 50:3e:aa:12:34:56
    State                  : disconnected

    Hosted network status  : Not available
"""


@pytest.mark.parametrize(("auth", "cipher", "security", "enterprise"), [
    ("WPA2-Personal", "CCMP", "wpa2", False), ("WPA2-Enterprise", "CCMP", "wpa2", True),
    ("WPA3-Personal", "GCMP-256", "wpa3", False), ("WPA-Personal", "TKIP", "wpa", False),
    ("Open", "None", "open", False), ("Open", "WEP", "wep", False),  # TRAP: open authentication, WEP cipher
    ("Shared", "WEP", "wep", False), ("WPA2 - Personnel", "CCMP", "wpa2", False),
    ("WPA2 - Entreprise", "CCMP", "wpa2", True), ("Ouvrir", "Aucun", "open", False),
    ("OWE", "CCMP", "owe", False),
])
def test_netsh_authentication_and_cipher_in_any_language(auth: str, cipher: str, security: str,
                                                          enterprise: bool) -> None:
    interfaces = wf_win.parse_interfaces(NETSH_EN.format(auth=auth, cipher=cipher))
    assert interfaces == [{"name": "Wi-Fi", "connected": True, "ssid": "Office : 5G", "security": security,
                           "enterprise": enterprise}]


def test_netsh_disconnected_interfaces_and_unknown_words() -> None:
    assert [(i["name"], i["connected"]) for i in wf_win.parse_interfaces(NETSH_DISCONNECTED)] == [
        ("Wi-Fi", False), ("Wi-Fi 2", False)]
    assert wf_win.parse_interfaces("There is no wireless interface on the system.\n") == []
    with pytest.raises(ParseError):
        wf_win.parse_interfaces(NETSH_EN.format(auth="Unbekannt", cipher="Keine"))


@pytest.mark.parametrize(("text", "synced", "source"), [
    ("Leap Indicator: 0(no warning)\nStratum: 4 (secondary reference - syncd by (S)NTP)\nPrecision: -23\n"
     "Root Delay: 0.03s\nRoot Dispersion: 7.7s\nReferenceId: 0x14650039 (source IP:  20.101.57.9)\n"
     "Last Successful Sync Time: 11/29/2026 8:12:45 AM\nSource: time.windows.com,0x9\nPoll Interval: 10 (1024s)\n",
     True, "time.windows.com"),
    ("Leap Indicator: 3(not synchronized)\nStratum: 0 (unspecified)\nPrecision: -23\nRoot Delay: 0.0s\n"
     "Root Dispersion: 0.0s\nReferenceId: 0x00000000 (unspecified)\nLast Successful Sync Time: unspecified\n"
     "Source: Local CMOS Clock\nPoll Interval: 10 (1024s)\n", False, "Local CMOS Clock"),
    ("Indicateur de saut : 0(aucun avertissement)\nStrate : 2 (référence secondaire - synchronisée par (S)NTP)\n"
     "Source : dc01.contoso.local\n", True, None),
])
def test_w32tm_status(text: str, synced: bool, source: Any) -> None:
    assert ts_win.parse_w32tm_status(text) == (synced, source)


def test_sc_query_state_is_read_by_number() -> None:
    assert ts_win.parse_sc_state("SERVICE_NAME: w32time\n  TYPE : 30  WIN32\n  ÉTAT : 1  STOPPED\n") is False
    assert ts_win.parse_sc_state("        STATE              : 4  RUNNING\n") is True
    with pytest.raises(ParseError):
        ts_win.parse_sc_state("[SC] OpenService FAILED 1060:\n")


def test_windows_admin_direct_nested_and_unknown() -> None:
    members = [{"Name": "PC\\Administrator", "ObjectClass": "User"}, {"Name": "CONTOSO\\Helpdesk", "ObjectClass": "Group"},
               {"Name": "CONTOSO\\jdupont", "ObjectClass": "User"}]
    assert la_win.judge("CONTOSO\\jdupont", members, None)["is_admin"] is True
    nested = members[:2]
    assert la_win.judge("CONTOSO\\jdupont", nested, ["S-1-5-32-544", "S-1-1-0"])["is_admin"] is True
    assert la_win.judge("CONTOSO\\jdupont", nested, ["S-1-5-32-545"])["is_admin"] is False
    # the token could not be obtained (no domain controller): a group in Administrators may contain the user
    assert la_win.judge("CONTOSO\\jdupont", nested, None)["is_admin"] is None
    assert la_win.judge("CONTOSO\\jdupont", members[:1], None)["is_admin"] is False


def test_windows_secure_boot_legacy_and_denied() -> None:
    legacy = sb_win.parse_secure_boot(json.dumps({"SecureBoot": None, "Category": "NotImplemented",
                                                  "FirmwareType": "Legacy", "Registry": None}))
    assert legacy["firmware"] == "legacy"
    denied = sb_win.parse_secure_boot(json.dumps({"SecureBoot": None, "Category": "PermissionDenied",
                                                  "FirmwareType": "UEFI", "Registry": 1}))
    assert denied["state"] is None and denied["registry"] == 1


def test_windows_firewall_ports_and_ranges() -> None:
    assert ra_win._allows(3389, {"3389"}) and ra_win._allows(5901, {"5900-5910"}) and ra_win._allows(22, {"Any"})
    assert not ra_win._allows(445, {"5353", "RPCEPMap"})


def test_lsof_launchd_sockets_and_airplay() -> None:
    sockets = ra_mac.parse_lsof("COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME\n"
                                "launchd 1 root 41u IPv6 0x5c 0t0 TCP *:22 (LISTEN)\n"
                                "ControlCe 498 jd 9u IPv4 0x5c 0t0 TCP *:7000 (LISTEN)\n"
                                "ARDAgent 700 jd 9u IPv4 0x5c 0t0 TCP 127.0.0.1:3283 (LISTEN)\n")
    assert [(s["process"], s["port"]) for s in sockets] == [("launchd", 22), ("ControlCe", 7000), ("ARDAgent", 3283)]
    with pytest.raises(ParseError):
        ra_mac.parse_lsof("lsof: WARNING: can't stat() nfs file system\n")


@pytest.mark.parametrize(("text", "firmware", "policy"), [
    ("iBridge:\n\n    Controller Information:\n\n      Model Name: Apple T2 Security Chip\n"
     "      Secure Boot: Medium Security\n", "apple_t2", "medium"),
    ("Controller:\n\n    Controller Information:\n\n      Model Name: Apple Silicon\n      Boot Policy:\n"
     "        Secure Boot: Permissive Security\n", "apple_silicon", "permissive"),
    ("", "apple_intel", None),
])
def test_ibridge(text: str, firmware: str, policy: Any) -> None:
    assert sb_mac.parse_ibridge(text) == (firmware, policy)


@pytest.mark.parametrize(("mode", "security", "enterprise"), [
    ("spairport_security_mode_none", "open", False), ("spairport_security_mode_wep", "wep", False),
    ("spairport_security_mode_wpa2_personal", "wpa2", False), ("spairport_security_mode_wpa2_enterprise", "wpa2", True),
    ("spairport_security_mode_wpa3_transition", "wpa2", False), ("spairport_security_mode_wpa3_personal", "wpa3", False),
    ("spairport_security_mode_owe", "owe", False),
])
def test_airport_security_modes(mode: str, security: str, enterprise: bool) -> None:
    assert wf_mac.security_mode(mode) == (security, enterprise)


def test_macos_dseditgroup_and_sntp_and_systemsetup() -> None:
    assert la_mac.parse_checkmember("yes jdupont is a member of admin\n") is True
    assert la_mac.parse_checkmember("no jdupont is NOT a member of admin\n") is False
    assert ts_mac.parse_sntp("+0.004281 +/- 0.018304 time.apple.com 17.253.53.207\n") == pytest.approx(0.004281)
    assert ts_mac.parse_switch("Network Time: Off\n", "Network Time") is False
    with pytest.raises(ParseError):
        ts_mac.parse_switch("You need administrator access to run this tool... exiting!\n", "Network Time")
    with pytest.raises(ParseError):
        la_mac.parse_checkmember("Group not found.\n")


TEXT_PARSERS: List[Callable[[str], Any]] = [
    wf_win.parse_interfaces, ts_win.parse_w32tm_status, ts_win.parse_sc_state, la_win.parse_admin,
    sb_win.parse_secure_boot, ra_win.parse_listen, ra_mac.parse_lsof, sb_mac.parse_ibridge, wf_mac.parse_airport,
    la_mac.parse_checkmember, ts_mac.parse_sntp, lambda t: ts_mac.parse_switch(t, "Network Time"),
]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.sampled_from(["User", "Members", "TokenGroups", "Listen", "LocalPort",
                                                               "AllowedPorts", "SecureBoot", "SPAirPortDataType",
                                                               "spairport_airport_interfaces", "Name"]),
                                             children, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=300), json_values.map(json.dumps)))
def test_garbage_is_a_parse_error_or_a_value_never_a_crash(text: str) -> None:
    for parse in TEXT_PARSERS:
        try:
            parse(text)
        except ParseError as exc:
            assert "expected" in str(exc), str(exc)
