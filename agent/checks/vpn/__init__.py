"""VPN: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec, ParamSpec  # noqa: F401
from agent.checks.vpn import darwin, linux, windows

SPEC = CheckSpec(
    id="vpn",
    title="VPN",
    description=(
        "Whether a VPN tunnel is up and whether the organisation's networks (and optionally the default "
        "route) are routed through it. A tunnel that is up but does not carry the traffic does not count."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("tunnel_up", "bool", "at least one VPN tunnel interface is up with an IPv4 or routable address"),
        FactSpec("tunnels", "list", "per tunnel: {name, kind (tun, tap, wireguard, ppp, ipsec, utun, ...), up, addresses}"),
        FactSpec("vpn_clients", "list", "names of known VPN client processes running (openvpn, wireguard, GlobalProtect ...)"),
        FactSpec("configured_vpn_services", "list", "VPN profiles/services configured on the machine, where the OS lists them"),
        FactSpec("default_route_interface", "string", "interface the default route uses"),
        FactSpec("default_route_via_tunnel", "bool", "the default route goes through a tunnel (full tunnel)"),
        FactSpec("corporate_routes", "list",
                 "per corporate network from the policy: {network, interface, via_tunnel}"),
        FactSpec("corporate_networks_via_tunnel", "bool",
                 "every corporate network named in the policy is routed through a tunnel (null: none named)"),
        FactSpec("vpn_up_share", "number", "share of the last sampling window (0..1) the VPN was up (from the agent service)"),
    ),
    params=(
        ParamSpec("corporate_networks", "cidr_list",
                  "the organisation's networks (CIDR) whose routes must go through the tunnel",
                  required="a rule about the organisation's VPN must name the organisation's networks: without "
                           "them any tunnel passes, a Tailscale or ZeroTier overlay (CGNAT 100.64.0.0/10 on a "
                           "tun/utun) or a personal VPN as well as the organisation's"),
    ),
)

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
