"""Windows parsers: PowerShell JSON readers and the decisions made from it, one row per shape."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import pytest

from agent.checks._windows_ps import parse_ps_json, ps_bool, ps_date, ps_failure
from agent.checks.antivirus import windows as av
from agent.checks.base import ParseError
from agent.checks.disk_encryption import windows as de
from agent.checks.firewall import windows as fw
from agent.checks.os_identity import windows as osid
from agent.checks.patches import windows as pa
from agent.checks.screen_lock import windows as sl
from agent.checks.vpn import windows as vpn
from agent.probes import NOT_FOUND, TIMEOUT, ProbeResult


def js(value: Any) -> str:
    return json.dumps(value, indent=4, separators=(",", ":  "))


# -- PowerShell JSON ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "epoch"), [
    ("/Date(1700000000000)/", 1700000000.0),
    ({"value": "/Date(1731542400000)/", "DateTime": "mercredi 13 novembre 2024 00:00:00"}, 1731542400.0),
    ("2024-06-04T08:06:27.1234567+02:00", 1717481187.123456),
    ("2024-06-04T06:06:27Z", 1717481187.0),
    ("2024-06-04T06:06:27.5Z", 1717481187.5),
    ("/Date(-62135596800000)/", None),  # DateTime.MinValue: never
    ("12/31/1600 4:00:00 PM", None),
    (None, None), (42, None),
])
def test_ps_date(value: Any, epoch: Optional[float]) -> None:
    assert ps_date(value) == epoch


@pytest.mark.parametrize(("value", "result"), [
    (True, True), (False, False), (1, True), (0, False), ("True", True), ("false", False), ("", None), (None, None),
])
def test_ps_bool(value: Any, result: Optional[bool]) -> None:
    assert ps_bool(value) is result


def test_ps_json_reading() -> None:
    assert parse_ps_json("", "x") is None  # the pipeline produced no object
    assert parse_ps_json("\ufeff{\"a\":  1}\r\n", "x") == {"a": 1}
    with pytest.raises(ParseError, match="ConvertTo-Json"):
        parse_ps_json("Get-Thing : something went wrong", "x")


def run_result(stderr: str = "", rc: Optional[int] = 0, error: Optional[str] = None) -> ProbeResult:
    return ProbeResult("run", ("powershell.exe", "-Command", "x"), stderr=stderr, rc=rc, error=error, duration=300.0)


@pytest.mark.parametrize(("result", "needle"), [
    (run_result("Get-CimInstance : Access denied \r\n    + CategoryInfo : PermissionDenied: (...)", 1), "access denied"),
    (run_result("Get-CimInstance : Accès refusé.\r\n    + FullyQualifiedErrorId : HRESULT 0x80041003,...", 1),
     "access denied"),
    (run_result("The term 'Get-BitLockerVolume' is not recognized as the name of a cmdlet\r\n"
                "    + CategoryInfo : ObjectNotFound: ... CommandNotFoundException", 1), "not available"),
    (run_result("Get-CimInstance : Invalid namespace \r\n + FullyQualifiedErrorId : HRESULT 0x8004100e", 1),
     "not available"),
    (run_result(rc=None, error=TIMEOUT), "timed out after 300.0s"),
    (run_result(rc=None, error=NOT_FOUND), "command not found"),
    (run_result("boom", 1), "exited with status 1"),
])
def test_ps_failure_names_the_probe_and_the_cause(result: ProbeResult, needle: str) -> None:
    reason = ps_failure(result, "Get-BitLockerVolume")
    assert reason is not None and reason.startswith("Get-BitLockerVolume") and needle in reason


def test_ps_success_is_no_failure() -> None:
    assert ps_failure(run_result(), "x") is None


# -- os identity --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("product", "build", "ubr", "name", "edition"), [
    ("Windows 10 Pro", "19045", 5131, "Windows 10 Pro", "Pro"),
    ("Windows 10 Enterprise", "22631", 4460, "Windows 11 Enterprise", "Enterprise"),  # 11 still says 10
    ("Windows 10 Pro", "26100", 2314, "Windows 11 Pro", "Pro"),
    ("Windows 10 Home", "22000", None, "Windows 11 Home", "Home"),
])
def test_windows_version(product: str, build: str, ubr: Optional[int], name: str, edition: str) -> None:
    version = osid.parse_version(js({"ProductName": product, "EditionID": "x", "CurrentBuild": build, "UBR": ubr,
                                     "DisplayVersion": "23H2"}))
    assert (version.os_name, version.os_edition, version.os_build_number) == (name, edition, int(build))
    assert version.os_build == (f"{build}.{ubr}" if ubr is not None else build)
    assert version.os_version == f"10.0.{build}"


def test_windows_version_without_build_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="CurrentBuild"):
        osid.parse_version(js({"ProductName": "Windows 10 Pro"}))


def test_hardware_identity() -> None:
    facts = osid.parse_hardware(js({"ComputerSystem": {"DNSHostName": "VM1", "Manufacturer": "VMware, Inc.",
                                                       "Model": "VMware20,1", "SystemType": "x64-based PC"},
                                    "BIOS": {"SerialNumber": "To be filled by O.E.M."}, "MachineGuid": "g"}))
    assert facts["virtual"] is True and facts["serial"] is None and facts["architecture"] == "x86_64"


# -- BitLocker ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "protection", "lock", "state"), [
    ("FullyEncrypted", "On", "Unlocked", "encrypted"),
    ("FullyEncrypted", "Off", "Unlocked", "suspended"),  # the trap
    ("FullyEncrypted", "Unknown", "Unlocked", "unknown"),
    ("FullyEncrypted", "Unknown", "Locked", "locked"),
    ("EncryptionInProgress", "Off", "Unlocked", "encrypting"),
    ("EncryptionSuspended", "Off", "Unlocked", "encrypting"),
    ("EncryptionPaused", "Off", "Unlocked", "encrypting"),
    ("DecryptionSuspended", "Off", "Unlocked", "decrypting"),
    ("FullyEncryptedWipeInProgress", "On", "Unlocked", "encrypted"),
    ("DecryptionInProgress", "Off", "Unlocked", "decrypting"),
    ("FullyDecrypted", "Off", "Unlocked", "not_encrypted"),
    ("SomethingNew", "On", "Unlocked", "unknown"),
])
def test_volume_state(status: str, protection: str, lock: str, state: str) -> None:
    assert de.volume_state(status, protection, lock) == state


def test_cim_numeric_codes_mean_the_same() -> None:
    rows = [{"DriveLetter": "C:", "VolumeType": 0, "ConversionStatus": 1, "ProtectionStatus": 0, "EncryptionMethod": 7},
            {"DriveLetter": "D:", "VolumeType": 1, "ConversionStatus": 1, "ProtectionStatus": 1, "EncryptionMethod": 6},
            {"DriveLetter": "E:", "VolumeType": 2, "ConversionStatus": 0, "ProtectionStatus": 0, "EncryptionMethod": 0}]
    facts = de.facts_from_volumes(de.parse_volumes(js(rows), "Win32_EncryptableVolume"))
    assert facts["system_volume_state"] == "suspended"
    assert facts["system_volume_method"] == "bitlocker-xts-aes-256"
    assert facts["unencrypted_volumes"] == ["C:"]  # the USB stick (E:) is not a fixed volume
    assert [v["mount"] for v in facts["volumes"]] == ["C:", "D:"]


def test_no_system_volume_is_a_parse_error() -> None:
    rows = [{"MountPoint": "D:", "VolumeType": "Data", "VolumeStatus": "FullyEncrypted", "ProtectionStatus": "On"}]
    with pytest.raises(ParseError, match="expected an operating-system volume"):
        de.facts_from_volumes(de.parse_volumes(js(rows)))


# -- firewall -----------------------------------------------------------------------------------------

def profiles(domain: Any, private: Any, public: Any, action: Any = "NotConfigured") -> str:
    return js([{"Name": n, "Enabled": e, "DefaultInboundAction": action}
               for n, e in (("Domain", domain), ("Private", private), ("Public", public))])


@pytest.mark.parametrize(("text", "enabled", "inbound"), [
    (profiles("True", "True", "True"), True, "drop"),
    (profiles(1, 1, 1, 4), True, "drop"),  # numeric GpoBoolean / Action
    (profiles("NotConfigured", "True", "True"), True, "drop"),
    (profiles("True", "True", "False"), False, "mixed"),  # one profile off is off
    (profiles(0, 0, 0), False, "accept"),
    (profiles("True", "True", "True", "Allow"), True, "accept"),
])
def test_firewall_profiles(text: str, enabled: bool, inbound: str) -> None:
    facts = fw.facts_from_profiles(fw.parse_profiles(text))
    assert facts["enabled"] is enabled and facts["inbound_policy"] == inbound


def test_missing_profile_is_a_parse_error() -> None:
    text = js([{"Name": "Domain", "Enabled": "True"}, {"Name": "Private", "Enabled": "True"}])
    with pytest.raises(ParseError, match="Public"):
        fw.facts_from_profiles(fw.parse_profiles(text))


# -- screen lock --------------------------------------------------------------------------------------

def settings(desktop: Optional[Dict[str, Any]], policy: Optional[Dict[str, Any]], inactivity: Optional[int],
             user: Optional[str] = "CORP\\jdupont") -> str:
    return js({"User": user, "Sid": "S-1-5-21-1", "Desktop": desktop, "UserPolicy": policy,
               "MachinePolicy": {"InactivityTimeoutSecs": inactivity} if inactivity is not None else None})


@pytest.mark.parametrize(("text", "enabled", "seconds", "enforced"), [
    (settings({"ScreenSaveActive": "1", "ScreenSaverIsSecure": "1", "ScreenSaveTimeOut": "600"}, None, None),
     True, 600, False),
    (settings({"ScreenSaveActive": "1", "ScreenSaverIsSecure": "0", "ScreenSaveTimeOut": "600"}, None, None),
     False, 0, False),  # a screen saver without password does not lock
    (settings({"ScreenSaveActive": "1", "ScreenSaverIsSecure": "0", "ScreenSaveTimeOut": "900"},
              {"ScreenSaverIsSecure": "1", "ScreenSaveTimeOut": "300"}, None), True, 300, True),  # GPO wins
    (settings({"ScreenSaveActive": "0"}, None, 900), True, 900, True),  # machine inactivity limit alone
    (settings(None, None, None), False, 0, False),
])
def test_screen_lock_settings(text: str, enabled: bool, seconds: int, enforced: bool) -> None:
    facts = sl.parse_settings(text)
    assert facts is not None
    assert (facts["lock_enabled"], facts["idle_delay_seconds"], facts["enforced_by_policy"]) == (enabled, seconds, enforced)


def test_nobody_at_the_console() -> None:
    assert sl.parse_settings(settings(None, None, None, user=None)) is None


# -- anti-malware -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "enabled", "up_to_date"), [
    (397568, True, True),  # 0x61100: Windows Defender on, up to date (idera's example)
    (393472, False, True),  # 0x60100: off (passive)
    (397584, True, False),  # 0x61110: on, signatures out of date
    (266240, True, True),  # 0x41000: third party on
    (262144, False, True),
])
def test_security_center_product_state(state: int, enabled: bool, up_to_date: bool) -> None:
    decoded = av.decode_product_state(state)
    assert (decoded["enabled"], decoded["up_to_date"]) == (enabled, up_to_date)


def defender(**values: Any) -> str:
    base = {"AMServiceEnabled": True, "AntivirusEnabled": True, "RealTimeProtectionEnabled": True,
            "AntivirusSignatureLastUpdated": "/Date(1700000000000)/", "AntivirusSignatureAge": 0,
            "AMProductVersion": "4.18.24090.11", "AMRunningMode": "Normal"}
    base.update(values)
    return js(base)


@pytest.mark.parametrize(("text", "running", "realtime", "age"), [
    (defender(), True, True, 1.0),
    (defender(RealTimeProtectionEnabled=False), True, False, 1.0),
    (defender(AMRunningMode="Passive Mode", AntivirusEnabled=False), False, False, 1.0),
    (defender(AntivirusSignatureLastUpdated=None, AntivirusSignatureAge=3), True, True, 3.0),
    (defender(AntivirusSignatureLastUpdated=None, AntivirusSignatureAge=65535), True, True, None),
])
def test_defender_status(text: str, running: bool, realtime: bool, age: Optional[float]) -> None:
    product = av.parse_defender(text, now=1700000000.0 + 86400)
    assert product is not None
    assert (product["running"], product["realtime"], product["signature_age_days"]) == (running, realtime, age)


def test_products_merge_keeps_the_freshest_running_signatures() -> None:
    defender_off = av.parse_defender(defender(AMRunningMode="Passive Mode"), now=1700000000.0)
    center = av.parse_security_center(js([{"displayName": "Windows Defender", "productState": 393472},
                                          {"displayName": "ESET Endpoint Security", "productState": 266240}]))
    facts = av.merge_products(defender_off, center, ["CrowdStrike Falcon"])
    assert facts["running"] is True and facts["realtime_protection"] is True
    assert facts["signature_age_days"] is None  # nothing running publishes an age
    assert [p["name"] for p in facts["products"]] == ["Microsoft Defender Antivirus", "ESET Endpoint Security",
                                                      "CrowdStrike Falcon"]
    assert av.merge_products(None, [], [])["running"] is False


# -- vpn ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("description", "kind"), [
    ("WireGuard Tunnel", "wireguard"), ("TAP-Windows Adapter V9", "tap"), ("Wintun Userspace Tunnel", "wintun"),
    ("Cisco AnyConnect Secure Mobility Client Virtual Miniport Adapter for Windows x64", "anyconnect"),
    ("PANGP Virtual Ethernet Adapter Secure", "globalprotect"), ("Fortinet SSL VPN Virtual Ethernet Adapter", "fortinet"),
    ("Intel(R) Wi-Fi 6E AX211 160MHz", None), ("WAN Miniport (IKEv2)", "ras"),
])
def test_adapter_kind(description: str, kind: Optional[str]) -> None:
    assert vpn.adapter_kind(description) == kind


@pytest.mark.parametrize(("routes", "interface"), [
    ([{"prefix": "0.0.0.0/0", "interface": "Wi-Fi", "metric": 35}], "Wi-Fi"),
    ([{"prefix": "0.0.0.0/0", "interface": "Wi-Fi", "metric": 35},
      {"prefix": "0.0.0.0/0", "interface": "Ethernet 3", "metric": 3}], "Ethernet 3"),
    ([{"prefix": "0.0.0.0/0", "interface": "Wi-Fi", "metric": 35},
      {"prefix": "0.0.0.0/1", "interface": "OpenVPN", "metric": 300},
      {"prefix": "128.0.0.0/1", "interface": "OpenVPN", "metric": 300}], "OpenVPN"),  # longer prefixes win
    ([], None),
])
def test_default_route_interface(routes: List[Dict[str, Any]], interface: Optional[str]) -> None:
    assert vpn.default_route_interface(routes) == interface


@pytest.mark.parametrize(("network", "address"), [
    ("203.0.113.0/24", "203.0.113.1"), ("10.0.0.0/8", "10.0.0.1"), ("192.0.2.7/32", "192.0.2.7"),
    ("2001:db8::/32", "2001:db8::1"),
])
def test_probe_address(network: str, address: str) -> None:
    assert vpn.probe_address(network) == address


# -- updates ------------------------------------------------------------------------------------------

def test_pending_updates_security_by_severity_or_category() -> None:
    rows = [{"Title": "2024-11 Cumulative Update (KB5046617)", "MsrcSeverity": "Critical", "KB": "5046617",
             "Categories": ["6964aab4-c5b5-43bd-a17d-ffb4346a8e1d"]},
            {"Title": "Mise à jour de sécurité (KB5046540)", "MsrcSeverity": None, "KB": "5046540",
             "Categories": [pa.SECURITY_CATEGORY]},
            {"Title": "Security Intelligence Update - KB2267602", "MsrcSeverity": None, "KB": "2267602",
             "Categories": [pa.DEFINITION_CATEGORY]},
            {"Title": "Intel driver", "MsrcSeverity": "", "KB": "", "Categories": []}]
    assert pa.parse_pending(js(rows)) == {"pending_updates": 3, "pending_security_updates": 2,
                                          "pending_security_packages": ["KB5046617", "KB5046540"]}
    assert pa.parse_pending("")["pending_updates"] == 0


def test_history_counts_successful_installs_not_signatures() -> None:
    rows = [{"Date": "/Date(1731600000000)/", "Title": "Security Intelligence Update - KB2267602", "ResultCode": 2,
             "Operation": 1},
            {"Date": "/Date(1731500000000)/", "Title": "Cumulative Update (KB5046617)", "ResultCode": 4, "Operation": 1},
            {"Date": "/Date(1731400000000)/", "Title": "Some update (KB1)", "ResultCode": 2, "Operation": 2},
            {"Date": "/Date(1731300000000)/", "Title": "Cumulative Update (KB5044284)", "ResultCode": 2, "Operation": 1}]
    assert pa.parse_history(js(rows)) == 1731300000.0


@pytest.mark.parametrize(("state", "automatic", "reboot"), [
    ({}, True, False),
    ({"NoAutoUpdate": 1}, False, False),
    ({"AUOptions": 2}, False, False),  # notify only
    ({"AUOptions": 4, "CbsRebootPending": True}, True, True),
    ({"WuauservStartType": "Disabled"}, False, False),
    ({"PendingFileRenameOperations": True}, True, True),
])
def test_update_state(state: Dict[str, Any], automatic: bool, reboot: bool) -> None:
    parsed = pa.parse_state(js(state))
    assert parsed["automatic_updates"] is automatic and parsed["reboot_required"] is reboot
