"""Disk encryption on linux: collector (probes) and pure parsers.

Which file systems: ``/proc/mounts``, keeping ``/`` and every fixed, writable, real file system
(``/boot`` and ``/boot/efi`` hold no secrets and cannot be encrypted with a plain GRUB; pseudo file
systems, tmpfs, snap squashfs, read-only and removable media are not volumes to judge).

What they sit on: ``lsblk --json`` with explicit columns gives the block-device tree. The device
of each file system is found in it and its ancestry walked up to the disk: the volume is encrypted
when *every* path from it to a disk crosses a ``crypt`` (dm-crypt) node. That covers LVM on LUKS
(lvm -> crypt -> part), LUKS on LVM (crypt -> lvm -> part) and LUKS on a partition alike. The
dm-crypt flavour comes from ``/sys/block/dm-N/dm/uuid`` (``CRYPT-LUKS2-...``). ZFS datasets are
not block devices: their native encryption is asked of ``zfs get``. fscrypt (per-directory
encryption on ext4/f2fs) is reported for what it is: the volume stays unencrypted, method fscrypt.

Never guess: a file system whose device is not in the tree is ``unknown``; when that is ``/``
the whole check is an error, or not applicable for an overlay root (a container).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.checks._values import load_json
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import Host

CHECK = "disk_encryption"

LSBLK_ARGV = ["lsblk", "--json", "--output", "NAME,KNAME,TYPE,FSTYPE,RO,RM,TRAN,MOUNTPOINT"]
REAL_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "bcachefs", "nilfs2",
    "vfat", "exfat", "ntfs", "ntfs3", "fuseblk", "hfsplus",
})
SKIPPED_MOUNTS = ("/boot", "/boot/efi", "/efi")
FSCRYPT_FILESYSTEMS = frozenset({"ext4", "f2fs"})
OVERLAY_FILESYSTEMS = frozenset({"overlay", "aufs", "composefs", "fuse-overlayfs"})
_OCTAL = re.compile(r"[0-7]{3}")
DM_TYPES = frozenset({"lvm", "crypt", "dm", "mpath", "raid", "integrity", "verity"})


# -- /proc/mounts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    source: str
    mountpoint: str
    fstype: str
    options: Tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and _OCTAL.fullmatch(field[i + 1:i + 4]):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> List[Mount]:
    """/proc/mounts: ``source mountpoint fstype options dump pass`` per line."""
    mounts: List[Mount] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 4:
            raise ParseError(f"/proc/mounts line {number}: expected 'source mountpoint fstype options', "
                             f"found {line[:80]!r}")
        mountpoint = _unescape(fields[1])
        if not mountpoint.startswith("/"):
            raise ParseError(f"/proc/mounts line {number}: mount point should be absolute, found {mountpoint!r}")
        mounts.append(Mount(_unescape(fields[0]), mountpoint, fields[2], tuple(fields[3].split(","))))
    if not any(m.mountpoint == "/" for m in mounts):
        raise ParseError("/proc/mounts: expected a mount for '/', found none")
    return mounts


def is_candidate(mount: Mount, system_mount: str = "/") -> Optional[str]:
    """None when the mount is a volume to judge, else why it is skipped."""
    if mount.mountpoint == system_mount:
        return None  # always judged, even read-only (ostree mounts /sysroot read-only)
    if mount.fstype not in REAL_FILESYSTEMS:
        return f"{mount.fstype} is not a disk file system"
    if mount.mountpoint in SKIPPED_MOUNTS or mount.mountpoint.startswith("/boot/"):
        return "boot partition"
    if mount.read_only:
        return "read-only"
    if mount.fstype != "zfs" and not mount.source.startswith("/dev/"):
        return "not backed by a block device"
    if mount.source.startswith("/dev/loop"):
        return "file-backed loop device"
    return None


def select_volumes(mounts: Sequence[Mount], system_mount: str = "/") -> Tuple[List[Mount], List[str]]:
    """The mounts to judge, one per source device ('/' first), and the skip notes."""
    chosen: List[Mount] = []
    notes: List[str] = []
    seen_sources: Dict[str, str] = {}
    ordered = sorted(mounts, key=lambda m: m.mountpoint != system_mount)
    for mount in ordered:
        why = is_candidate(mount, system_mount)
        if why is not None:
            continue
        if mount.source in seen_sources:
            notes.append(f"{mount.mountpoint}: same device as {seen_sources[mount.source]}")
            continue
        seen_sources[mount.source] = mount.mountpoint
        chosen.append(mount)
    return chosen, notes


# -- lsblk ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockNode:
    name: str
    kname: str
    type: str
    fstype: Optional[str]
    read_only: bool
    removable: bool
    transport: Optional[str]
    mountpoint: Optional[str]

    def label(self) -> str:
        return f"{self.name} ({self.type})"


def _flag(value: Any, column: str) -> bool:
    # lsblk < 2.33 writes "0"/"1" strings, newer versions JSON booleans.
    if isinstance(value, bool):
        return value
    if value in ("0", "1", 0, 1):
        return value in ("1", 1)
    if value is None:
        return False
    raise ParseError(f"lsblk: column {column} should be 0/1 or a boolean, found {value!r}")


def _text(value: Any, column: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"lsblk: column {column} should be text, found {type(value).__name__}")
    return value


def parse_lsblk(text: str) -> List[Tuple[BlockNode, ...]]:
    """Every root-to-node path of the lsblk tree (a device with two parents appears twice)."""
    data = load_json(text, "lsblk --json", dict)
    if not isinstance(data.get("blockdevices"), list):
        raise ParseError("lsblk --json: expected an object with a 'blockdevices' list")
    paths: List[Tuple[BlockNode, ...]] = []

    def walk(entry: Any, ancestry: Tuple[BlockNode, ...]) -> None:
        if not isinstance(entry, dict):
            raise ParseError(f"lsblk --json: expected a device object, found {type(entry).__name__}")
        name = _text(entry.get("name"), "NAME")
        if not name:
            raise ParseError("lsblk --json: a device has no NAME")
        node = BlockNode(
            name=name, kname=_text(entry.get("kname"), "KNAME") or name,
            type=_text(entry.get("type"), "TYPE") or "unknown",
            fstype=_text(entry.get("fstype"), "FSTYPE"),
            read_only=_flag(entry.get("ro"), "RO"), removable=_flag(entry.get("rm"), "RM"),
            transport=_text(entry.get("tran"), "TRAN"),
            mountpoint=_text(entry.get("mountpoint"), "MOUNTPOINT"),
        )
        path = ancestry + (node,)
        paths.append(path)
        children = entry.get("children") or []
        if not isinstance(children, list):
            raise ParseError("lsblk --json: 'children' should be a list")
        for child in children:
            walk(child, path)

    for device in data["blockdevices"]:
        walk(device, ())
    return paths


def _names_for(node: BlockNode) -> List[str]:
    names = [f"/dev/{node.kname}", f"/dev/{node.name}"]
    if node.type in DM_TYPES or node.kname.startswith("dm-"):
        names.append(f"/dev/mapper/{node.name}")
    return names


def _lvm_mapper_name(source: str) -> Optional[str]:
    """/dev/VG/LV -> the device-mapper name VG-LV (dashes inside names doubled)."""
    parts = source.split("/")
    if len(parts) != 4 or parts[1] != "dev" or parts[2] in ("mapper", "disk"):
        return None
    return parts[2].replace("-", "--") + "-" + parts[3].replace("-", "--")


def resolve(mount: Mount, paths: Sequence[Tuple[BlockNode, ...]]) -> List[Tuple[BlockNode, ...]]:
    """The tree paths ending at the device of ``mount`` (empty when it cannot be found)."""
    found = [p for p in paths if mount.source in _names_for(p[-1])]
    if not found:
        mapper = _lvm_mapper_name(mount.source)
        if mapper:
            found = [p for p in paths if p[-1].name == mapper]
    if not found:
        # /dev/root and by-uuid names: lsblk itself knows where each device is mounted.
        found = [p for p in paths if p[-1].mountpoint == mount.mountpoint]
    return found


# -- dm-crypt flavour, ZFS ---------------------------------------------------------------------

def crypt_method_from_uuid(uuid_text: str) -> str:
    """/sys/block/dm-N/dm/uuid of a dm-crypt device: CRYPT-<TYPE>-<uuid>-<name>."""
    uuid = uuid_text.strip()
    if not uuid.startswith("CRYPT-"):
        raise ParseError(f"dm uuid of a crypt device should start with CRYPT-, found {uuid[:40]!r}")
    kind = uuid.split("-")[1].upper() if uuid.count("-") >= 1 else ""
    return {
        "LUKS1": "luks1", "LUKS2": "luks2", "PLAIN": "plain-dm-crypt", "BITLK": "bitlocker",
        "TCRYPT": "tcrypt", "LOOPAES": "loop-aes",
    }.get(kind, "dm-crypt")


def parse_zfs_get(text: str) -> Dict[str, str]:
    """``zfs get -H -o property,value encryption,keystatus DATASET``: tab-separated pairs."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ParseError(f"zfs get: expected 'property<TAB>value', found {line[:60]!r}")
        values[fields[0].strip()] = fields[1].strip()
    if "encryption" not in values:
        raise ParseError("zfs get: expected an 'encryption' property, found none")
    return values


_FSCRYPT_STATUS = re.compile(r'filesystem "(?P<mount>.*)" has (?P<protectors>\d+) protector\S* and (?P<policies>\d+) polic')


def parse_fscrypt_status(text: str) -> int:
    """``fscrypt status MOUNT``: the number of fscrypt policies (encrypted directory trees) on it."""
    match = _FSCRYPT_STATUS.search(text)
    if match is None:
        raise ParseError(f"fscrypt status: expected 'filesystem \"...\" has N protectors and M policies', "
                         f"found {text[:80]!r}")
    return int(match.group("policies"))


# -- judgement -----------------------------------------------------------------------------------

def judge_paths(paths: Sequence[Tuple[BlockNode, ...]], methods: Mapping[str, str]) -> Dict[str, Any]:
    """Encryption of one resolved device: every path to a disk must cross a crypt node."""
    chains = [[node.label() for node in reversed(path)] for path in paths]
    crypt_nodes = [next((n for n in reversed(p) if n.type == "crypt"), None) for p in paths]
    encrypted = all(node is not None for node in crypt_nodes)
    partly = any(node is not None for node in crypt_nodes) and not encrypted
    method = "none"
    if encrypted:
        first = crypt_nodes[0]
        method = methods.get(first.kname, "dm-crypt") if first is not None else "dm-crypt"
    return {
        "encrypted": encrypted,
        "method": "partial-dm-crypt" if partly else method,
        "state": "encrypted" if encrypted else "not_encrypted",
        "chain": chains[0],
        "chains": chains if len(chains) > 1 else None,
        "removable": any(n.removable or n.transport == "usb" for p in paths for n in p),
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    mounts_probe = host.read_text("/proc/mounts")
    if mounts_probe.error is not None:
        return CheckOutcome.probe_failed(CHECK, mounts_probe)
    mounts = parse_mounts(mounts_probe.stdout)
    root = next(m for m in reversed(mounts) if m.mountpoint == "/")
    system_mount = "/"
    if root.fstype in OVERLAY_FILESYSTEMS:
        sysroot = next((m for m in mounts if m.mountpoint == "/sysroot" and m.fstype in REAL_FILESYSTEMS), None)
        if sysroot is None:
            return CheckOutcome.not_applicable(
                CHECK, message("disk_overlay_root", fstype=root.fstype),
                [f"/proc/mounts: {root.source} on / type {root.fstype}"])
        system_mount = "/sysroot"  # ostree systems (Silverblue, CoreOS): / is composefs over /sysroot
    candidates, notes = select_volumes([m for m in mounts if not (m.mountpoint == "/" and system_mount != "/")],
                                       system_mount)

    lsblk = host.run(LSBLK_ARGV, timeout=10)
    if not lsblk.ok:
        return CheckOutcome.probe_failed(CHECK, lsblk)
    paths = parse_lsblk(lsblk.stdout)

    evidence: List[str] = []
    volumes: List[Dict[str, Any]] = []
    methods: Dict[str, str] = {}
    for mount in candidates:
        volume: Dict[str, Any] = {"mount": mount.mountpoint, "device": mount.source, "fstype": mount.fstype}
        if mount.fstype == "zfs":
            volume.update(_judge_zfs(host, mount, evidence))
        else:
            found = resolve(mount, paths)
            if not found:
                volume.update({"encrypted": None, "method": None, "state": "unknown", "chain": []})
                evidence.append(f"{mount.mountpoint} on {mount.source}: device not found in lsblk output")
            else:
                for path in found:
                    for node in path:
                        if node.type == "crypt" and node.kname not in methods:
                            methods[node.kname] = _crypt_method(host, node, path, evidence)
                judged = judge_paths(found, methods)
                if judged.pop("removable") and mount.mountpoint != system_mount:
                    evidence.append(f"{mount.mountpoint} on {mount.source}: removable media, not judged")
                    continue
                if judged["chains"] is None:
                    judged.pop("chains")
                volume.update(judged)
                evidence.append(f"{mount.mountpoint} on {mount.source} ({mount.fstype}): "
                                f"{' <- '.join(volume['chain'])}: {volume['state']}")
        volumes.append(volume)
    _note_fscrypt(host, volumes, evidence)
    evidence.extend(notes)

    system = next((v for v in volumes if v["mount"] == system_mount), None)
    if system is None or system["state"] == "unknown":
        device = root.source if system is None else system["device"]
        return CheckOutcome.error(CHECK, message("disk_device_unresolved", mount=system_mount, device=device),
                                  evidence)
    known = [v for v in volumes if v["encrypted"] is not None]
    unencrypted = [v["mount"] for v in known if not v["encrypted"]]
    all_encrypted: Optional[bool] = False if unencrypted else (True if len(known) == len(volumes) else None)
    facts = {
        "system_volume_encrypted": bool(system["encrypted"]),
        "system_volume_state": system["state"],
        "system_volume_method": system["method"],
        "all_fixed_volumes_encrypted": all_encrypted,
        "unencrypted_volumes": unencrypted,
        "volumes": volumes,
    }
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)


def _note_fscrypt(host: Host, volumes: List[Dict[str, Any]], evidence: List[str]) -> None:
    """fscrypt encrypts directories, not volumes: say so on clear ext4/f2fs volumes that use it."""
    clear = [v for v in volumes if v.get("encrypted") is False and v["fstype"] in FSCRYPT_FILESYSTEMS]
    if not clear or not host.which("fscrypt"):
        return
    for volume in clear:
        probe = host.run(["fscrypt", "status", volume["mount"]], timeout=10)
        if not probe.ok:
            continue  # "not setup for use with fscrypt": nothing to report
        policies = parse_fscrypt_status(probe.stdout)
        if policies:
            volume["method"] = "fscrypt"
            volume["fscrypt_policies"] = policies
            evidence.append(f"{volume['mount']}: {policies} fscrypt-encrypted directory tree(s); fscrypt protects "
                            "those directories only, not the volume")


def _crypt_method(host: Host, node: BlockNode, path: Tuple[BlockNode, ...], evidence: List[str]) -> str:
    probe = host.read_text(f"/sys/block/{node.kname}/dm/uuid")
    if probe.ok:
        return crypt_method_from_uuid(probe.stdout)
    evidence.append(probe.describe_failure())
    # Fall back on the signature lsblk saw on the device below the mapping.
    index = path.index(node)
    below = path[index - 1] if index > 0 else None
    if below is not None and below.fstype == "crypto_LUKS":
        return "luks"
    return "dm-crypt"


def _judge_zfs(host: Host, mount: Mount, evidence: List[str]) -> Dict[str, Any]:
    probe = host.run(["zfs", "get", "-H", "-o", "property,value", "encryption,keystatus", mount.source],
                     timeout=10)
    if not probe.ok:
        evidence.append(probe.describe_failure())
        return {"encrypted": None, "method": None, "state": "unknown", "chain": [mount.source]}
    values = parse_zfs_get(probe.stdout)
    cipher = values["encryption"]
    encrypted = cipher not in ("off", "-", "")
    state = "not_encrypted"
    if encrypted:
        state = "encrypted" if values.get("keystatus", "available") == "available" else "locked"
    evidence.append(f"{mount.mountpoint} on ZFS dataset {mount.source}: encryption={cipher} "
                    f"keystatus={values.get('keystatus', '-')}")
    return {"encrypted": encrypted, "method": f"zfs-native-{cipher}" if encrypted else "none",
            "state": state, "chain": [mount.source]}
