"""Remote access services: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, FieldSpec

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
                                             "apple_remote_desktop)",
                 items="string"),
        FactSpec("listeners", "list", "the remote-access listeners found, one row each", row=(
            FieldSpec("service", "string", "ssh, rdp, vnc, smb, telnet, apple_remote_desktop"),
            FieldSpec("address", "string", "the address it listens on (0.0.0.0, ::, 127.0.0.1)"),
            FieldSpec("port", "int", "TCP port"),
            FieldSpec("process", "string", "the listening process, where the OS tells"),
            FieldSpec("reachable", "bool", "the address is not loopback-only"),
            FieldSpec("firewall_allows", "bool", "Windows: an enabled inbound allow rule admits the port (null "
                                                 "elsewhere)"),
        )),
    ),
)
