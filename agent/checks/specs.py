"""The declarations registry: every check's `CheckSpec`, by id.

What the policy validator, the evaluator, the collector (server/) and the fact documentation read.
It loads the spec modules only, never a collector or a probe (tests/test_import_boundaries.py);
the agent's collector registry is agent/checks/collectors.py.
"""

from __future__ import annotations

from typing import Dict, Optional

from agent.checks.antivirus.spec import SPEC as ANTIVIRUS
from agent.checks.declarations import CheckSpec
from agent.checks.disk_encryption.spec import SPEC as DISK_ENCRYPTION
from agent.checks.firewall.spec import SPEC as FIREWALL
from agent.checks.local_admin.spec import SPEC as LOCAL_ADMIN
from agent.checks.os_identity.spec import SPEC as OS_IDENTITY
from agent.checks.patches.spec import SPEC as PATCHES
from agent.checks.remote_access.spec import SPEC as REMOTE_ACCESS
from agent.checks.screen_lock.spec import SPEC as SCREEN_LOCK
from agent.checks.secure_boot.spec import SPEC as SECURE_BOOT
from agent.checks.time_sync.spec import SPEC as TIME_SYNC
from agent.checks.vpn.spec import SPEC as VPN
from agent.checks.wifi.spec import SPEC as WIFI

# In the order checks run and are documented: os_identity first (every report carries it).
SPECS: Dict[str, CheckSpec] = {
    spec.id: spec
    for spec in (OS_IDENTITY, DISK_ENCRYPTION, VPN, PATCHES, FIREWALL, SCREEN_LOCK, ANTIVIRUS, LOCAL_ADMIN,
                 SECURE_BOOT, REMOTE_ACCESS, TIME_SYNC, WIFI)
}


def spec(check_id: str) -> Optional[CheckSpec]:
    """The declaration of ``check_id``, or None for a check this agent does not know."""
    return SPECS.get(check_id)
