"""Remote access services: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec
from agent.checks.remote_access import darwin, linux, windows

SPEC = CheckSpec(
    id="remote_access",
    title="No remote-login service reachable from the network",
    description=(
        "Remote-login and file-sharing services listening on an address other than loopback: SSH, RDP, "
        "VNC / Screen Sharing / Remote Management, SMB file sharing, telnet. A service bound to 127.0.0.1 "
        "or ::1 only is not reachable from the network and does not count. Windows also says whether its "
        "firewall admits the service (an enabled inbound allow rule)."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("exposed", "bool", "at least one remote-login or file-sharing service is reachable from the network"),
        FactSpec("exposed_services", "list", "names of those services (ssh, rdp, vnc, smb, telnet, "
                                             "apple_remote_desktop)"),
        FactSpec("listeners", "list", "remote-access listeners found: {service, address, port, process, "
                                      "reachable, firewall_allows}"),
    ),
)

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
