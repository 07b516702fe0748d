"""Simulated laptops for the collector's tests and load benchmark.

A `SimDevice` has its own Ed25519 key, enrols through the real API and produces realistic signed
reports: facts shaped like the agent's check outcomes (agent.checks declarations), the agent's own
results from agent.policy.evaluate, and a per-device strictly increasing seq. `Posture` holds the
few switches that decide compliance, so a test or the load generator can flip a check on purpose.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

from agent import protocol
from agent.policy import Policy, baseline, evaluate

AGENT_VERSION = "0.1.0"


@dataclass(frozen=True)
class Posture:
    disk_encrypted: bool = True
    vpn_up: bool = True
    pending_security_updates: int = 0
    days_since_last_update: float = 2.0
    automatic_updates: bool = True
    reboot_required: bool = False
    firewall_enabled: bool = True
    screen_lock: bool = True
    idle_delay_seconds: int = 300
    antivirus_running: bool = True
    signature_age_days: float = 0.5

    def flipped(self, rng: random.Random) -> Posture:
        """The same posture with one switch changed (the 'a fraction of checks changing' of the load)."""
        choice = rng.choice(["disk_encrypted", "vpn_up", "pending_security_updates", "firewall_enabled",
                             "screen_lock", "antivirus_running", "reboot_required"])
        if choice == "pending_security_updates":
            return replace(self, pending_security_updates=0 if self.pending_security_updates else 3)
        return replace(self, **{choice: not getattr(self, choice)})


def _outcome(facts: Dict[str, Any], evidence: List[str]) -> Dict[str, Any]:
    return {"state": "ok", "reason": None, "facts": facts, "evidence": evidence}


def linux_facts(hostname: str, machine_id: str, serial: str, posture: Posture) -> Dict[str, Any]:
    """Facts as the Linux collectors report them (names, types and row shapes from agent/checks/*/spec.py)."""
    tunnel = [{"name": "tun0", "kind": "tun", "up": True, "addresses": ["10.8.0.6/24"]}] if posture.vpn_up else []
    routes = [{"network": net, "interface": "tun0" if posture.vpn_up else "wlp2s0", "via_tunnel": posture.vpn_up}
              for net in ("203.0.113.0/24", "198.51.100.0/24")]
    return {
        "os_identity": _outcome({"platform": "linux", "os_name": "Debian GNU/Linux", "os_id": "debian",
                                 "os_version": "12", "kernel": "6.1.0-28-amd64", "architecture": "x86_64",
                                 "hostname": hostname, "machine_id": machine_id, "serial": serial,
                                 "hardware_model": "Latitude 7440", "virtual": False,
                                 "os_support_phase": "extended", "os_support_release": "Debian 12 (bookworm)",
                                 "os_support_ends": "2028-06-30", "os_regular_support_ends": "2026-06-10",
                                 "os_support_days_left": 573, "os_support_estimated": False},
                                ["/etc/os-release: Debian GNU/Linux 12 (bookworm)"]),
        "disk_encryption": _outcome({
            "system_volume_encrypted": posture.disk_encrypted,
            "system_volume_state": "encrypted" if posture.disk_encrypted else "not_encrypted",
            "system_volume_method": "luks2" if posture.disk_encrypted else "none",
            "all_fixed_volumes_encrypted": posture.disk_encrypted,
            "unencrypted_volumes": [] if posture.disk_encrypted else ["/"],
            "volumes": [{"mount": "/", "device": "/dev/mapper/vg-root", "fstype": "ext4",
                         "encrypted": posture.disk_encrypted, "method": "luks2" if posture.disk_encrypted else None,
                         "state": "encrypted" if posture.disk_encrypted else "not_encrypted",
                         "chain": ["/dev/mapper/vg-root", "/dev/mapper/nvme0n1p3_crypt", "/dev/nvme0n1p3"]}]},
            ["lsblk: / on vg-root <- nvme0n1p3_crypt (crypt) <- nvme0n1p3"]),
        "vpn": _outcome({"tunnel_up": posture.vpn_up, "tunnels": tunnel,
                         "vpn_clients": ["openvpn"] if posture.vpn_up else [],
                         "configured_vpn_services": ["corp-vpn"], "default_route_interface": "wlp2s0",
                         "default_route_via_tunnel": False, "corporate_routes": routes,
                         "corporate_networks_via_tunnel": posture.vpn_up, "vpn_up_share": 1.0 if posture.vpn_up else 0.0},
                        ["ip route get 203.0.113.1: dev " + ("tun0" if posture.vpn_up else "wlp2s0")]),
        "patches": _outcome({"package_manager": "apt", "os_version": "12", "pending_updates":
                             posture.pending_security_updates + 2,
                             "pending_security_updates": posture.pending_security_updates,
                             "pending_security_packages": ["openssl"] * posture.pending_security_updates,
                             "phased_updates_deferred": 0, "package_lists_age_days": 0.4,
                             "days_since_last_update": posture.days_since_last_update,
                             "last_update_at": "2026-11-27T08:12:00Z", "reboot_required": posture.reboot_required,
                             "automatic_updates": posture.automatic_updates},
                            [f"apt-get -s upgrade: {posture.pending_security_updates} security"]),
        "firewall": _outcome({"enabled": posture.firewall_enabled, "backend": "nftables",
                              "inbound_policy": "drop" if posture.firewall_enabled else "accept",
                              "rule_count": 14 if posture.firewall_enabled else 0,
                              "frontends": [{"name": "ufw", "active": posture.firewall_enabled}]},
                             ["nft list ruleset: input policy " + ("drop" if posture.firewall_enabled else "accept")]),
        "screen_lock": _outcome({"sessions": [{"user": "amina", "desktop": "GNOME", "lock_enabled": posture.screen_lock,
                                               "idle_delay_seconds": posture.idle_delay_seconds}],
                                 "lock_enabled": posture.screen_lock, "idle_delay_seconds": posture.idle_delay_seconds,
                                 "enforced_by_policy": False},
                                ["gsettings org.gnome.desktop.screensaver lock-enabled: "
                                 + ("true" if posture.screen_lock else "false")]),
        "antivirus": _outcome({"running": posture.antivirus_running,
                               "products": [{"name": "ClamAV", "running": posture.antivirus_running}],
                               "realtime_protection": posture.antivirus_running,
                               "signature_age_days": posture.signature_age_days},
                              ["clamd: " + ("running" if posture.antivirus_running else "stopped")]),
        "local_admin": _outcome({"console_user": "amina", "is_admin": False, "admin_via": [],
                                 "groups": ["amina", "audio", "video"], "limited_rules": []},
                                ["id -Gn amina: amina audio video"]),
        "secure_boot": _outcome({"firmware": "uefi", "secure_boot_enabled": True, "setup_mode": False, "policy": None,
                                 "source": "efivars"}, ["efivars SecureBoot=1 SetupMode=0"]),
        "remote_access": _outcome({"exposed": False, "exposed_services": [], "listeners": []},
                                  ["ss -Hltnp: 3 listening TCP socket(s)"]),
        "time_sync": _outcome({"service": "systemd-timesyncd", "service_running": True, "synchronized": True,
                               "source": None, "offset_seconds": None}, ["timedatectl: NTPSynchronized=yes"]),
        "wifi": _outcome({"interfaces": ["wlp2s0"], "connected": True, "ssid": "home", "security": "wpa2",
                          "enterprise": False, "encrypted": True}, ["nmcli: connected to 'home' (wpa2)"]),
    }


@dataclass
class SimDevice:
    hostname: str
    machine_id: str
    serial: str
    user: str = "amina"
    posture: Posture = field(default_factory=Posture)
    key: Any = field(default_factory=protocol.generate_private_key)
    device_id: Optional[str] = None
    seq: int = 0
    policy: Policy = field(default_factory=baseline)

    @classmethod
    def numbered(cls, number: int, prefix: str = "lap") -> SimDevice:
        return cls(hostname=f"{prefix}-{number:06d}", machine_id=f"{prefix}-machine-{number:06d}-{random.random():.6f}",
                   serial=f"SN{number:08d}")

    def enroll_body(self, token: str) -> Dict[str, Any]:
        return {"token": token, "public_key": protocol.public_key_b64(self.key),
                "device": {"hostname": self.hostname, "machine_id": self.machine_id, "serial": self.serial,
                           "platform": "linux", "os_name": "Debian GNU/Linux", "os_version": "12",
                           "user": self.user}}

    def report(self, created_at: Optional[float] = None, posture: Optional[Posture] = None) -> Dict[str, str]:
        """The next signed envelope (JSON form), for the current (or given) posture."""
        assert self.device_id, "enrol the device first"
        if posture is not None:
            self.posture = posture
        self.seq += 1
        when = time.time() if created_at is None else created_at
        facts = linux_facts(self.hostname, self.machine_id, self.serial, self.posture)
        results = [r.to_report_json() for r in evaluate(self.policy, facts, "linux", when)]
        payload = protocol.build_report(device_id=self.device_id, seq=self.seq, agent_version=AGENT_VERSION,
                                        platform="linux", policy=self.policy.ref(), facts=facts, results=results,
                                        created_at=when)
        return protocol.seal(self.key, self.device_id, payload).to_json()

    def signed_headers(self, method: str, path: str) -> Dict[str, str]:
        assert self.device_id
        return protocol.sign_request(self.key, self.device_id, method, path)
