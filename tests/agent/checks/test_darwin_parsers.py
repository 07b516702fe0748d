"""macOS parsers: table-driven, one row per output shape macOS prints (and the traps)."""

from __future__ import annotations

import plistlib
from datetime import datetime
from typing import Any, Dict, Optional

import pytest

from agent.checks._host_json import routable_addresses
from agent.checks.antivirus import darwin as av
from agent.checks.base import ParseError
from agent.checks.disk_encryption import darwin as de
from agent.checks.firewall import darwin as fw
from agent.checks.os_identity import darwin as osid
from agent.checks.patches import darwin as pa
from agent.checks.screen_lock import darwin as sl
from agent.checks.vpn import darwin as vpn


def xml(value: Any) -> str:
    return plistlib.dumps(value).decode()


# -- os identity --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "version", "extra"), [
    ("ProductName:\t\tmacOS\nProductVersion:\t\t14.5\nBuildVersion:\t\t23F79\n", "14.5", None),
    ("ProductName:\t\tmacOS\nProductVersion:\t\t13.4.1\nProductVersionExtra:\t(c)\nBuildVersion:\t\t22F770820d\n",
     "13.4.1", "(c)"),
    ("ProductName:\tMac OS X\nProductVersion:\t10.15.7\nBuildVersion:\t19H2026\n", "10.15.7", None),
])
def test_sw_vers(text: str, version: str, extra: Optional[str]) -> None:
    values = osid.parse_sw_vers(text)
    assert values["ProductVersion"] == version
    assert values.get("ProductVersionExtra") == extra


def test_sw_vers_without_version_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="ProductVersion"):
        osid.parse_sw_vers("zsh: command not found: sw_vers\n")


@pytest.mark.parametrize(("overview", "arch", "virtual"), [
    ({"chip_type": "Apple M2", "machine_model": "Mac14,2", "serial_number": "X", "platform_UUID": "U"}, "arm64", False),
    ({"cpu_type": "Quad-Core Intel Core i7", "machine_model": "MacBookPro16,2"}, "x86_64", False),
    ({"chip_type": "Apple M1 (Virtual)", "machine_model": "VirtualMac2,1"}, "arm64", True),
])
def test_hardware_overview(overview: Dict[str, Any], arch: str, virtual: bool) -> None:
    import json
    facts = osid.parse_hardware(json.dumps({"SPHardwareDataType": [overview]}))
    assert facts["architecture"] == arch and facts["virtual"] is virtual


# -- disk encryption ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "state", "percent", "pending"), [
    ("FileVault is On.\n", "on", None, False),
    ("FileVault is Off.\n", "off", None, False),
    ("FileVault is On.\nEncryption in progress: Percent completed = 37.52\n", "encrypting", 37.52, False),
    ("FileVault is On.\nDecryption in progress: Percent completed = 80.1\n", "decrypting", 80.1, False),
    ("FileVault is Off, but will be enabled after the next restart.\n", "off", None, True),
    ("FileVault is Off.\nDeferred enablement appears to be active for user 'jdupont'.\n", "off", None, True),
])
def test_fdesetup_status(text: str, state: str, percent: Optional[float], pending: bool) -> None:
    assert de.parse_fdesetup(text) == {"state": state, "percent": percent, "pending_restart": pending}


def test_fdesetup_unknown_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="FileVault is On"):
        de.parse_fdesetup("Error: Unable to get status.\n")


def volume(filevault: Optional[bool], encryption: Optional[bool], locked: bool = False) -> Dict[str, Any]:
    return {"device": "disk3s5", "name": "Macintosh HD - Data", "filevault": filevault, "encryption": encryption,
            "locked": locked, "roles": ["Data"]}


@pytest.mark.parametrize(("fde", "vol", "state", "encrypted"), [
    ({"state": "on"}, volume(True, True), "encrypted", True),
    # the trap: encrypted at rest by the Secure Enclave, no FileVault password
    ({"state": "off"}, volume(False, True), "not_encrypted", False),
    ({"state": "encrypting"}, volume(True, False), "encrypting", False),
    ({"state": "decrypting"}, None, "decrypting", False),
    (None, volume(True, True), "encrypted", True),
    (None, volume(False, True), "not_encrypted", False),
    ({"state": "on"}, volume(False, True), "unknown", False),  # sources disagree
])
def test_filevault_decision(fde: Optional[Dict[str, Any]], vol: Optional[Dict[str, Any]], state: str,
                            encrypted: bool) -> None:
    facts = de.decide(fde, vol)
    assert facts["system_volume_state"] == state
    assert facts["system_volume_encrypted"] is encrypted
    assert facts["unencrypted_volumes"] == ([] if encrypted else ["/System/Volumes/Data"])


def test_filevault_decision_needs_one_source() -> None:
    with pytest.raises(ParseError):
        de.decide(None, None)
    with pytest.raises(ParseError, match="FileVault flag"):  # older diskutil: Encryption only, no FileVault key
        de.decide(None, volume(None, True))


def test_apfs_list_finds_the_booted_data_volume_not_an_external_one() -> None:
    def vol(device: str, name: str, fv: bool) -> Dict[str, Any]:
        return {"DeviceIdentifier": device, "Name": name, "FileVault": fv, "Encryption": True, "Locked": False,
                "Roles": ["Data"]}
    text = xml({"Containers": [{"Volumes": [vol("disk3s5", "Macintosh HD - Data", True)]},
                               {"Volumes": [vol("disk5s2", "External - Data", False)]}]})
    external, booted = de.parse_apfs_volume(text, "disk5s2"), de.parse_apfs_volume(text, "disk3s5")
    assert external is not None and external["filevault"] is False
    assert booted is not None and booted["filevault"] is True
    assert de.parse_apfs_volume(text, None) is None  # two Data volumes and no booted id: do not guess


# -- vpn ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [
    ("utun4", "utun"), ("utun0", "utun"), ("ipsec0", "ipsec"), ("ppp0", "ppp"), ("gpd0", "globalprotect"),
    ("en0", None), ("utunx", None), ("bridge0", None), ("awdl0", None),
])
def test_tunnel_kind(name: str, kind: Optional[str]) -> None:
    assert vpn.tunnel_kind(name) == kind


@pytest.mark.parametrize(("addresses", "routable"), [
    ([{"address": "fe80::ce81:b1c:bd2c:69e"}], []),  # the every-Mac utun trap
    ([{"address": "fe80::1%utun3"}], []),
    ([{"address": "10.41.7.23"}, {"address": "fe80::1"}], ["10.41.7.23"]),
    ([{"address": "fd7a:115c:a1e0::1"}], ["fd7a:115c:a1e0::1"]),
    ([{"address": "169.254.10.2"}, {"address": "127.0.0.1"}, {"address": "::1"}], []),
    ([{"address": "not-an-ip"}], []),
])
def test_routable_addresses(addresses: Any, routable: Any) -> None:
    assert routable_addresses(addresses) == routable


def test_scutil_nc_list() -> None:
    text = ("Available network connection services in the current set (*=enabled):\n"
            '* (Connected)      5C3E4B9E-1C07-4B88-9A5B-0F3D1A0B7E21 VPN (com.paloaltonetworks.GlobalProtect.client) '
            '"GlobalProtect"                  [VPN/com.paloaltonetworks.GlobalProtect.client]\n'
            '  (Disconnected)   0E3C5A9D-2F4B-4C1E-9A7D-6B8C0D1E2F3A IPSec              "Ancien VPN"   [IPSec]\n')
    services = vpn.parse_nc_list(text)
    assert [(s["name"], s["status"], s["enabled"]) for s in services] == [
        ("GlobalProtect", "Connected", True), ("Ancien VPN", "Disconnected", False)]


NETSTAT_HEADER = "Routing tables\n\nInternet:\nDestination        Gateway            Flags               Netif Expire\n"


@pytest.mark.parametrize(("rows", "interface"), [
    (["default            192.168.1.1        UGScg                 en0"], "en0"),
    # full tunnel: the two halves win over default
    (["0/1                10.8.0.1           UGScg               utun5", "default  192.168.1.1  UGScg  en0",
      "128.0/1            10.8.0.1           UGSc                utun5"], "utun5"),
    # a VPN's default with the physical one scoped (I flag)
    (["default            10.41.0.1          UGScg               utun4", "default 192.168.1.1  UGScIg  en0"], "utun4"),
    (["127                127.0.0.1          UCS                   lo0"], None),
])
def test_default_route(rows: Any, interface: Optional[str]) -> None:
    assert vpn.parse_netstat_default(NETSTAT_HEADER + "\n".join(rows) + "\n") == interface


def test_route_get() -> None:
    text = ("   route to: 203.0.113.1\ndestination: default\n       mask: default\n    gateway: 192.168.1.1\n"
            "  interface: en0\n      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING,GLOBAL>\n")
    assert vpn.parse_route_get(text) == "en0"
    assert vpn.parse_route_get("route: writing to routing socket: not in table\n") is None


# -- patches ------------------------------------------------------------------------------------------

CATALINA = """Software Update Tool

Finding available software
Software Update found the following new or updated software:
* Label: Command Line Tools beta 5 for Xcode-11.0
    Title: Command Line Tools beta 5 for Xcode, Version: 11.0, Size: 224804K, Recommended: YES,
* Label: macOS Catalina Developer Beta-6
    Title: macOS Catalina Public Beta, Version: 5, Size: 3084292K, Recommended: YES, Action: restart,
* Label: BridgeOSUpdateCustomer
    Title: BridgeOSUpdateCustomer, Version: 10.15.0.1.1.1560926689, Size: 390674K, Recommended: YES, Action: shut down,
- Label: iCal-1.0.2
    Title: iCal, Version: 1.0.2, Size: 6520K,"""


@pytest.mark.parametrize(("text", "os_version", "pending", "security"), [
    ("Software Update Tool\n\nFinding available software\n\nNo new software available.\n", "14.5", 0, []),
    # salt's published capture: the two betas (seed programs) are not counted, nothing security-relevant
    (CATALINA, "10.15", 2, []),
    ("* Label: macOS Sonoma 14.6.1-23G93\n\tTitle: macOS Sonoma 14.6.1, Version: 14.6.1, Size: 1512345KiB, "
     "Recommended: YES, Action: restart,\n* Label: macOS Sequoia 15.0.1-24A348\n\tTitle: macOS Sequoia 15.0.1, "
     "Version: 15.0.1, Size: 6612345KiB, Recommended: YES, Action: restart,\n", "14.6", 2,
     ["macOS Sonoma 14.6.1-23G93"]),
    ("* Label: macOS Ventura 13.4.1 (c)-22F770820d\n\tTitle: macOS Ventura 13.4.1 (c), Version: 13.4.1 (c), "
     "Size: 88123KiB, Recommended: YES, Action: restart,\n", "13.4.1", 1, ["macOS Ventura 13.4.1 (c)-22F770820d"]),
    ("* Label: Safari18.1.1VenturaAuto-18.1.1\n\tTitle: Safari, Version: 18.1.1, Size: 151234KiB, "
     "Recommended: YES,\n", "13.7.1", 1, ["Safari18.1.1VenturaAuto-18.1.1"]),
])
def test_softwareupdate_list(text: str, os_version: str, pending: int, security: Any) -> None:
    facts = pa.parse_list(text, os_version)
    assert facts["pending_updates"] == pending
    assert facts["pending_security_packages"] == security
    assert facts["pending_security_updates"] == len(security)


@pytest.mark.parametrize(("label", "title", "prerelease"), [
    ("macOS Sequoia 15.2 beta 3-24C5073e", "macOS Sequoia 15.2 beta 3", True),
    ("macOS Sequoia 15.1-24B5070a", "macOS Sequoia 15.1", True),  # a beta build number without the word
    ("macOS Sonoma 14.5 RC-23F79", "macOS Sonoma 14.5 RC", True),
    ("macOS Catalina Developer Beta-6", "macOS Catalina Public Beta", True),
    ("macOS Ventura 13.4.1 (c)-22F770820d", "macOS Ventura 13.4.1 (c)", False),  # a Rapid Security Response
    ("macOS Sequoia 15.2-24C101", "macOS Sequoia 15.2", False),
])
def test_betas_offered_to_seed_members_are_not_pending_patches(label: str, title: str, prerelease: bool) -> None:
    assert pa.is_prerelease(label, title) is prerelease


@pytest.mark.parametrize(("text", "program"), [
    ("Currently enrolled in: (null)\n\nProgram: 0\nBuild is seed: NO\nCatalogURL: (null)\n", "none"),
    ("Currently enrolled in: PublicSeed\n\nProgram: 3\nBuild is seed: YES\nCatalogURL: https://swscan.apple.com/"
     "content/catalogs/others/index-10.14beta-10.14-10.13.merged-1.sucatalog.gz\nNSShowFeedbackMenu: YES\n", "PublicSeed"),
])
def test_seedutil(text: str, program: str) -> None:
    assert pa.parse_seedutil(text) == program


def test_seedutil_garbage_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        pa.parse_seedutil("seedutil: must be run as root\n")


# A published macOS 26 listing (major upgrade, point release, Rapid Security Response, Safari) and a
# Background Security Improvement, in the format softwareupdate prints since macOS 10.15.
TAHOE = ("Software Update Tool\n\nFinding available software\nSoftware Update found the following new or updated software:\n"
         "* Label: macOS 27-26A428\n\tTitle: macOS 27, Version: 27, Size: 11728377KiB, Recommended: YES, Action: restart, \n"
         "* Label: macOS Tahoe 26.7.1-25H300\n\tTitle: macOS Tahoe 26.7.1, Version: 26.7.1, Size: 1843200KiB, "
         "Recommended: YES, Action: restart, \n"
         "* Label: macOS Tahoe 26.7.1 (a)-25H300a\n\tTitle: macOS Tahoe 26.7.1 (a), Version: 26.7.1 (a), Size: 90112KiB, "
         "Recommended: YES, Action: restart, \n"
         "* Label: Safari27.0TahoeAuto-27.0\n\tTitle: Safari, Version: 27.0, Size: 190512KiB, Recommended: YES, \n"
         "* Label: macOS Background Security Improvement (a)-25D771280a\n        Title: macOS Background Security "
         "Improvement (a), Version: 26.3.1 (a), Size: 208896KiB, Recommended: YES, Action: restart,\n")


def test_softwareupdate_list_macos_26() -> None:
    facts = pa.parse_list(TAHOE, "26.7")
    assert facts["pending_updates"] == 5
    assert facts["pending_security_packages"] == [
        "macOS Tahoe 26.7.1-25H300", "macOS Tahoe 26.7.1 (a)-25H300a", "Safari27.0TahoeAuto-27.0",
        "macOS Background Security Improvement (a)-25D771280a"]  # the upgrade to macOS 27 is not one


def test_softwareupdate_list_error_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="No new software available"):
        pa.parse_list("Software Update Tool\n\nFinding available software\nCan't connect\n", "14.5")


@pytest.mark.parametrize(("local", "managed", "automatic"), [
    ({}, None, True),  # Apple's defaults
    ({"AutomaticCheckEnabled": False}, None, False),
    ({"CriticalUpdateInstall": False}, None, False),
    ({"CriticalUpdateInstall": False}, {"CriticalUpdateInstall": True}, True),  # a profile wins
    ({}, {"ConfigDataInstall": False}, False),
])
def test_software_update_preferences(local: Dict[str, Any], managed: Optional[Dict[str, Any]], automatic: bool) -> None:
    assert pa.parse_prefs(xml(local), xml(managed) if managed is not None else None)["automatic_updates"] is automatic


def test_install_history_ignores_data_files_and_developer_tools() -> None:
    def entry(name: str, when: str, process: str = "softwareupdated") -> Dict[str, Any]:
        return {"date": datetime.fromisoformat(when), "displayName": name, "displayVersion": "1", "processName": process}
    text = xml([entry("macOS Sonoma 14.5", "2024-05-14T18:11:27"), entry("XProtectPlistConfigData", "2024-06-09T00:00:00"),
                entry("Command Line Tools for Xcode", "2024-06-08T00:00:00"),
                entry("Some App", "2024-06-07T00:00:00", process="installer"),
                entry("Safari", "2024-06-05T02:41:09")])
    newest = pa.parse_install_history(text)
    assert newest is not None and newest["name"] == "Safari 1"
    assert pa.parse_install_history(xml([])) is None


# -- firewall -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "state"), [
    ("Firewall is enabled. (State = 1)\n", 1),
    ("Firewall is disabled. (State = 0)\n", 0),
    ("Firewall is blocking all non-essential incoming connections. (State = 2)\n", 2),
    ("Firewall is enabled.\n", 1),
    ("Firewall is disabled.\n", 0),
])
def test_global_state(text: str, state: int) -> None:
    assert fw.parse_global_state(text) == state


@pytest.mark.parametrize(("text", "value"), [
    ("Stealth mode enabled\n", True), ("Stealth mode disabled\n", False),
    ("Firewall stealth mode is on\n", True), ("Firewall stealth mode is off\n", False),
    ("Block all DISABLED! \n", False), ("Block all ENABLED! \n", True),
    ("Firewall has block all state set to disabled.\n", False), ("???\n", None),
])
def test_switches(text: str, value: Optional[bool]) -> None:
    assert fw.parse_switch(text) is value


def test_alf_preference_fallback() -> None:
    assert fw.parse_alf_defaults("1\n") == 1
    with pytest.raises(ParseError, match="0, 1 or 2"):
        fw.parse_alf_defaults("The domain/default pair does not exist\n")


# -- screen lock --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "required", "delay"), [
    ("2024-06-10 09:14:27.512 sysadminctl[4821:118843] screenLock delay is immediate\n", True, 0),
    ("2024-06-10 09:14:27.512 sysadminctl[4821:118843] screenLock delay is 300 seconds\n", True, 300),
    ("2024-06-10 09:14:27.512 sysadminctl[4821:118843] screenLock is off\n", False, None),
    ("sysadminctl[812:9120] screenLock delay is 300.000000 seconds\n", True, 300),
    ("sysadminctl[812:9120] screenLock delay is -1.000000 seconds\n", False, None),  # off, on some releases
    ("sysadminctl[812:9120] screenLock delay is off\n", False, None),
])
def test_sysadminctl_screen_lock(text: str, required: bool, delay: Optional[int]) -> None:
    assert sl.parse_screen_lock(text) == {"password_required": required, "delay": delay}


@pytest.mark.parametrize(("lock", "managed", "idle", "display", "enabled", "seconds"), [
    ({"password_required": True, "delay": 0}, {}, 300, 600, True, 300),
    ({"password_required": True, "delay": 5}, {}, 1200, 600, True, 605),  # display sleeps first
    ({"password_required": True, "delay": 0}, {}, 0, 0, False, 0),  # never idles: never locks
    ({"password_required": False, "delay": None}, {}, 300, 600, False, 0),
    ({"password_required": False, "delay": None}, {"askForPassword": 1, "askForPasswordDelay": 5, "idleTime": 300},
     1200, 1200, True, 305),  # the configuration profile decides
])
def test_screen_lock_decision(lock: Dict[str, Any], managed: Dict[str, Any], idle: int, display: int,
                              enabled: bool, seconds: int) -> None:
    facts = sl.decide("jdupont", lock, managed, idle, display)
    assert facts["lock_enabled"] is enabled and facts["idle_delay_seconds"] == seconds
    assert facts["enforced_by_policy"] is bool(managed)


def test_sudo_only_when_the_agent_is_someone_else() -> None:
    assert sl.as_user("jdupont", "jdupont", ["pmset", "-g"]) == ["pmset", "-g"]
    assert sl.as_user("jdupont", "root", ["pmset", "-g"]) == ["sudo", "-n", "-H", "-u", "jdupont", "pmset", "-g"]


def test_display_sleep() -> None:
    assert sl.parse_display_sleep(" displaysleep         10\n sleep 1\n") == 600
    assert sl.parse_display_sleep(" displaysleep         0\n") == 0
    assert sl.parse_display_sleep("nothing\n") is None


# -- anti-malware -------------------------------------------------------------------------------------

def test_xprotect_version_and_summary() -> None:
    assert av.parse_xprotect_version(xml({"CFBundleShortVersionString": "5278"})) == "5278"
    with pytest.raises(ParseError):
        av.parse_xprotect_version(xml({"CFBundleName": "XProtect"}))
    facts = av.summarise({"version": "5278", "age": 0.8}, ["CrowdStrike Falcon"])
    assert facts["running"] is True and facts["signature_age_days"] == 0.8
    assert [p["kind"] for p in facts["products"]] == ["builtin", "edr"]
    assert av.summarise(None, [])["running"] is False


IOREG = """+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000209, registered, matched, active, busy 0 (1153 ms), retain 37>
    {
      "IOPolledInterface" = "AppleARMWatchdogTimerHibernateHandler is not serializable"
      "#address-cells" = <02000000>
      "model" = <"MacBookPro18,3">
      "compatible" = <"J314sAP","MacBookPro18,3","AppleARM">
      "IOPlatformUUID" = "6F1E2D3C-4B5A-5968-8776-A5B4C3D2E1F0"
      "IOPlatformSerialNumber" = "H4XXXXXXQ6"
      "platform-name" = <"t6000">
    }
"""


def test_ioreg_fallback_identity() -> None:
    facts = osid.parse_ioreg(IOREG)
    assert facts == {"hardware_model": "MacBookPro18,3", "serial": "H4XXXXXXQ6",
                     "machine_id": "6F1E2D3C-4B5A-5968-8776-A5B4C3D2E1F0", "virtual": False}
    with pytest.raises(ParseError, match="IOPlatformUUID"):
        osid.parse_ioreg("")


def test_defender_details_join_its_product_entry() -> None:
    facts = av.summarise({"version": "5278", "age": 9.5}, [av.DEFENDER],
                         {av.DEFENDER: {"realtime": False, "signature_age_days": 0.08, "version": "101.24092.0004"}})
    defender = facts["products"][1]
    assert (defender["realtime"], defender["signature_age_days"]) == (False, 0.08)
    assert facts["signature_age_days"] == 0.08  # the freshest running product counts
