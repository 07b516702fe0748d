"""Linux disk encryption: recorded layouts parse to the expected facts, bad output is an error,
and on this machine the check tells the truth (read independently from sysfs)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, NOT_APPLICABLE, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.disk_encryption import linux
from agent.probes import LiveHost, ProbeResult, Recording, ReplayHost
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["disk_encryption"]


def replay(relative: str) -> Any:
    return replay_fixture(FAMILY, relative)


def summary(facts: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "system": (facts["system_volume_encrypted"], facts["system_volume_state"], facts["system_volume_method"]),
        "all": facts["all_fixed_volumes_encrypted"],
        "unencrypted": facts["unencrypted_volumes"],
        "volumes": [(v["mount"], v["device"], v["encrypted"], v["method"]) for v in facts["volumes"]],
    }


EXPECTED = [
    ("debian-12/disk_encryption-unencrypted-vm.json", {
        "system": (False, "not_encrypted", "none"), "all": False, "unencrypted": ["/"],
        "volumes": [("/", "/dev/vda", False, "none")]}),
    ("debian-12/disk_encryption-lvm-on-luks.json", {
        "system": (True, "encrypted", "luks2"), "all": True, "unencrypted": [],
        "volumes": [("/", "/dev/mapper/debian--vg-root", True, "luks2"),
                    ("/home", "/dev/mapper/debian--vg-home", True, "luks2")]}),
    ("debian-12/disk_encryption-luks-on-lvm.json", {
        "system": (True, "encrypted", "luks2"), "all": False, "unencrypted": ["/srv/scratch"],
        "volumes": [("/", "/dev/mapper/root", True, "luks2"), ("/home", "/dev/mapper/home", True, "luks1"),
                    ("/srv/scratch", "/dev/mapper/vg0-scratch", False, "none")]}),
    ("ubuntu-22.04/disk_encryption-lvm-on-luks.json", {
        "system": (True, "encrypted", "luks2"), "all": True, "unencrypted": [],
        "volumes": [("/", "/dev/mapper/vgubuntu-root", True, "luks2")]}),
    ("ubuntu-24.04/disk_encryption-lvm-on-luks.json", {
        "system": (True, "encrypted", "luks2"), "all": True, "unencrypted": [],
        "volumes": [("/", "/dev/mapper/ubuntu--vg-ubuntu--lv", True, "luks2")]}),
    ("ubuntu-24.04/disk_encryption-unencrypted.json", {
        "system": (False, "not_encrypted", "none"), "all": False, "unencrypted": ["/", "/data"],
        "volumes": [("/", "/dev/nvme0n1p2", False, "none"), ("/data", "/dev/sda1", False, "none")]}),
    ("fedora-40/disk_encryption-luks-on-partition.json", {
        "system": (True, "encrypted", "luks2"), "all": True, "unencrypted": [],
        "volumes": [("/", "/dev/mapper/luks-3f6e2a1b-7c4d-4e5f-8a9b-0c1d2e3f4a5b", True, "luks2")]}),
]


@pytest.mark.parametrize(("fixture", "expected"), EXPECTED, ids=[e[0].replace(".json", "") for e in EXPECTED])
def test_recorded_layouts(fixture: str, expected: Dict[str, Any]) -> None:
    outcome = replay(fixture)
    assert outcome.state == OK, outcome.reason
    assert summary(outcome.facts) == expected


def test_lvm_on_luks_chain_walks_up_to_the_disk() -> None:
    outcome = replay("ubuntu-22.04/disk_encryption-lvm-on-luks.json")
    root = outcome.facts["volumes"][0]
    assert root["chain"] == ["vgubuntu-root (lvm)", "nvme0n1p3_crypt (crypt)", "nvme0n1p3 (part)", "nvme0n1 (disk)"]
    # the USB stick and the snap squashfs are not volumes to judge
    assert [v["mount"] for v in outcome.facts["volumes"]] == ["/"]
    assert any("removable" in line for line in outcome.evidence)


def test_luks_on_lvm_chain_has_crypt_above_lvm() -> None:
    outcome = replay("debian-12/disk_encryption-luks-on-lvm.json")
    assert outcome.facts["volumes"][0]["chain"][:2] == ["root (crypt)", "vg0-root (lvm)"]


def test_container_overlay_root_is_not_applicable_not_a_guess() -> None:
    outcome = replay("debian-12/disk_encryption-container-overlay.json")
    assert outcome.state == NOT_APPLICABLE
    assert "overlay" in (outcome.reason or "") and outcome.facts == {}


# -- constructed cases for traps the fixtures do not cover ----------------------------------------

def _host(mounts: str, tree: Any, extra: Optional[List[ProbeResult]] = None) -> ReplayHost:
    probes = [ProbeResult("read", ("/proc/mounts",), stdout=mounts),
              ProbeResult("run", tuple(linux.LSBLK_ARGV), stdout=json.dumps({"blockdevices": tree}))]
    rec = Recording(platform="linux", probes={})
    for p in probes + (extra or []):
        rec.probes[json.dumps([p.kind, list(p.target)], ensure_ascii=False)] = p
    return ReplayHost(rec)


def _node(name: str, kname: str, type_: str, mount: Optional[str] = None, children: Any = None,
          fstype: Optional[str] = None) -> Dict[str, Any]:
    node: Dict[str, Any] = {"name": name, "kname": kname, "type": type_, "fstype": fstype, "ro": "0", "rm": "0",
                            "tran": None, "mountpoint": mount}
    if children:
        node["children"] = children
    return node


def test_dev_root_resolves_through_lsblk_mountpoint_and_old_string_flags() -> None:
    # Old kernels name the root device /dev/root; lsblk < 2.33 writes flags as "0"/"1".
    tree = [_node("sda", "sda", "disk", children=[_node("sda1", "sda1", "part", "/", fstype="ext4")])]
    outcome = run_collector(FAMILY, _host("/dev/root / ext4 rw 0 0\n", tree))
    assert outcome.state == OK
    assert outcome.facts["volumes"][0]["chain"] == ["sda1 (part)", "sda (disk)"]
    assert outcome.facts["system_volume_encrypted"] is False


def test_logical_volume_spanning_clear_and_encrypted_pvs_is_not_encrypted() -> None:
    lv = _node("vg-root", "dm-2", "lvm", "/", fstype="ext4")
    tree = [
        _node("sda", "sda", "disk", children=[_node("sda2", "sda2", "part", children=[
            _node("sda2_crypt", "dm-0", "crypt", children=[lv])])]),
        _node("sdb", "sdb", "disk", children=[_node("sdb1", "sdb1", "part", children=[lv])]),
    ]
    uuid = ProbeResult("read", ("/sys/block/dm-0/dm/uuid",), stdout="CRYPT-LUKS2-abc-sda2_crypt\n")
    outcome = run_collector(FAMILY, _host("/dev/mapper/vg-root / ext4 rw 0 0\n", tree, [uuid]))
    assert outcome.state == OK
    volume = outcome.facts["volumes"][0]
    assert volume["encrypted"] is False and volume["method"] == "partial-dm-crypt"
    assert len(volume["chains"]) == 2


def test_lvm_path_form_resolves_to_the_mapper_name() -> None:
    tree = [_node("sda", "sda", "disk", children=[_node("sda3", "sda3", "part", children=[
        _node("my--vg-root", "dm-0", "lvm", None, fstype="ext4")])])]
    outcome = run_collector(FAMILY, _host("/dev/my-vg/root / ext4 rw 0 0\n", tree))
    assert outcome.state == OK and outcome.facts["volumes"][0]["chain"][0] == "my--vg-root (lvm)"


def test_ostree_root_judges_the_read_only_sysroot() -> None:
    # Silverblue/CoreOS: / is composefs, the real file system is /sysroot (mounted read-only).
    tree = [_node("vda", "vda", "disk", children=[_node("vda3", "vda3", "part", children=[
        _node("luks-1", "dm-0", "crypt", "/sysroot", fstype="btrfs")])])]
    mounts = "composefs / overlay ro,relatime 0 0\n/dev/mapper/luks-1 /sysroot btrfs ro,relatime 0 0\n"
    uuid = ProbeResult("read", ("/sys/block/dm-0/dm/uuid",), stdout="CRYPT-LUKS2-0011-luks-1\n")
    outcome = run_collector(FAMILY, _host(mounts, tree, [uuid]))
    assert outcome.state == OK, outcome.reason
    assert outcome.facts["volumes"][0]["mount"] == "/sysroot" and outcome.facts["system_volume_encrypted"] is True


def test_fscrypt_directories_do_not_make_the_volume_encrypted() -> None:
    tree = [_node("sda", "sda", "disk", children=[_node("sda2", "sda2", "part", "/", fstype="ext4")])]
    extra = [ProbeResult("run", ("__which__", "fscrypt"), stdout="/usr/bin/fscrypt"),
             ProbeResult("run", ("fscrypt", "status", "/"),
                         stdout='ext4 filesystem "/" has 1 protector and 1 policy.\n'
                                "All users can create fscrypt metadata on this filesystem.\n")]
    outcome = run_collector(FAMILY, _host("/dev/sda2 / ext4 rw 0 0\n", tree, extra))
    assert outcome.state == OK
    assert outcome.facts["system_volume_encrypted"] is False and outcome.facts["system_volume_method"] == "fscrypt"
    assert outcome.facts["volumes"][0]["fscrypt_policies"] == 1


@pytest.mark.parametrize(("text", "policies"), [
    ('ext4 filesystem "/" has 1 protector(s) and 0 policy(ies)\n', 0),
    ('ext4 filesystem "/mnt/disk" has 2 protectors and 2 policies\n', 2),
    ('ext4 filesystem "/" has 1 protector and 1 policy.\n', 1),
], ids=["fscrypt-0.2", "plural", "singular"])
def test_fscrypt_status_formats(text: str, policies: int) -> None:
    assert linux.parse_fscrypt_status(text) == policies


def test_root_device_missing_from_lsblk_is_an_error_not_a_guess() -> None:
    tree = [_node("sda", "sda", "disk")]
    outcome = run_collector(FAMILY, _host("/dev/nvme9n1p2 / ext4 rw 0 0\n", tree))
    assert outcome.state == ERROR
    assert "/dev/nvme9n1p2" in (outcome.reason or "") and "refusing to guess" in (outcome.reason or "")


def test_missing_lsblk_is_an_error_naming_the_probe() -> None:
    rec = Recording(platform="linux", probes={})
    mounts = ProbeResult("read", ("/proc/mounts",), stdout="/dev/sda1 / ext4 rw 0 0\n")
    rec.probes[json.dumps(["read", ["/proc/mounts"]])] = mounts
    missing = ProbeResult("run", tuple(linux.LSBLK_ARGV), rc=None, error="not_found")
    rec.probes[json.dumps(["run", list(linux.LSBLK_ARGV)])] = missing
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state == ERROR and (outcome.reason or "").startswith("lsblk --json")
    assert "command not found" in (outcome.reason or "")


@pytest.mark.parametrize(("uuid", "method"), [
    ("CRYPT-LUKS2-0123456789abcdef-root", "luks2"),
    ("CRYPT-LUKS1-0123456789abcdef-home", "luks1"),
    ("CRYPT-PLAIN-swap", "plain-dm-crypt"),
    ("CRYPT-BITLK-0123-usb", "bitlocker"),
    ("CRYPT-SUBDEV-x", "dm-crypt"),
], ids=["luks2", "luks1", "plain", "bitlocker", "other"])
def test_crypt_flavour_from_dm_uuid(uuid: str, method: str) -> None:
    assert linux.crypt_method_from_uuid(uuid + "\n") == method


def test_mount_points_with_spaces_are_unescaped() -> None:
    mounts = linux.parse_mounts("/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040data ext4 rw 0 0\n")
    assert mounts[1].mountpoint == "/mnt/my data"


def test_zfs_dataset_encryption_parsed() -> None:
    assert linux.parse_zfs_get("encryption\taes-256-gcm\nkeystatus\tavailable\n")["encryption"] == "aes-256-gcm"
    with pytest.raises(ParseError):
        linux.parse_zfs_get("NAME PROPERTY VALUE\n")


# -- garbage never crashes ------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (linux.parse_lsblk, linux.parse_mounts, linux.parse_zfs_get, linux.parse_fscrypt_status):
        try:
            parse(text)
        except ParseError:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.sampled_from(["", "{", '{"blockdevices": [{"name": 1}]}',
                                                         '{"blockdevices": "x"}', '{"blockdevices": [{}]}'])))
def test_garbage_lsblk_output_is_an_error_outcome(text: str) -> None:
    rec = Recording.load(FIXTURES / "ubuntu-22.04/disk_encryption-lvm-on-luks.json")
    key = json.dumps(["run", list(linux.LSBLK_ARGV)], ensure_ascii=False)
    rec.probes[key] = ProbeResult("run", tuple(linux.LSBLK_ARGV), stdout=text)
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state in (ERROR, OK)
    if outcome.state == OK:  # only a well-formed tree can give facts, and then / must have resolved
        assert outcome.facts["volumes"][0]["mount"] == "/"


# -- this machine ---------------------------------------------------------------------------------

def _root_source() -> str:
    source = ""
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "/":
                source = fields[0]
    return source


def _sysfs_encrypted(device: str) -> bool:
    """Independent of lsblk: walk /sys/class/block/<dev>/slaves and look for CRYPT- dm uuids."""
    name = os.path.basename(os.path.realpath(device))
    seen = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        uuid_path = f"/sys/class/block/{current}/dm/uuid"
        if os.path.exists(uuid_path):
            with open(uuid_path, encoding="utf-8") as handle:
                if handle.read().startswith("CRYPT-"):
                    return True
        slaves = f"/sys/class/block/{current}/slaves"
        if os.path.isdir(slaves):
            todo.extend(os.listdir(slaves))
    return False


@pytest.mark.skipif(not os.path.exists("/proc/mounts"), reason="needs a Linux host")
def test_this_machine_tells_the_truth() -> None:
    source = _root_source()
    outcome = run_collector(FAMILY, LiveHost())
    if not source.startswith("/dev/"):
        assert outcome.state in (NOT_APPLICABLE, ERROR)
        return
    assert outcome.state == OK, outcome.reason
    root = outcome.facts["volumes"][0]
    assert root["mount"] == "/" and root["device"] == source
    assert outcome.facts["system_volume_encrypted"] is _sysfs_encrypted(source)
    if not outcome.facts["system_volume_encrypted"]:
        assert "/" in outcome.facts["unencrypted_volumes"]
        assert any(source in line and "not_encrypted" in line for line in outcome.evidence)


def test_recording_of_this_machine_replays_identically(tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "rec.json")
