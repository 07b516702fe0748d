"""VPN: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, FieldSpec, ParamSpec

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
        FactSpec("tunnels", "list", "the tunnel interfaces found, one row each", row=(
            FieldSpec("name", "string", "interface or adapter name (tun0, wg0, utun3)"),
            FieldSpec("kind", "string", "tun, tap, wireguard, ppp, ipsec, utun, ..."),
            FieldSpec("up", "bool", "the interface is up"),
            FieldSpec("addresses", "list", "its IPv4 and routable IPv6 addresses", items="string"),
        )),
        FactSpec("vpn_clients", "list", "names of known VPN client processes running (openvpn, wireguard, GlobalProtect ...)",
                 items="string"),
        FactSpec("configured_vpn_services", "list", "VPN profiles/services configured on the machine, where the OS lists them",
                 items="string"),
        FactSpec("default_route_interface", "string", "interface the default route uses"),
        FactSpec("default_route_via_tunnel", "bool", "the default route goes through a tunnel (full tunnel)"),
        FactSpec("corporate_routes", "list", "the route of each corporate network named in the policy", row=(
            FieldSpec("network", "string", "the network (CIDR)"),
            FieldSpec("interface", "string", "the interface its route leaves by"),
            FieldSpec("via_tunnel", "bool", "that interface is a tunnel that is up"),
        )),
        FactSpec("corporate_networks_via_tunnel", "bool",
                 "every corporate network named in the policy is routed through a tunnel (null: none named)"),
        FactSpec("vpn_up_share", "number", "share of the last sampling window (0..1) the VPN was up (from the agent service)"),
    ),
    params=(
        ParamSpec("corporate_networks", "cidr_list",
                  "the organisation's networks (CIDR) whose routes must go through the tunnel",
                  required="a rule about the organisation's VPN must name the organisation's networks: without "
                           "them any tunnel passes, a Tailscale or ZeroTier overlay (CGNAT 100.64.0.0/10 on a "
                           "tun/utun) or a personal VPN as well as the organisation's",
                  reads=("corporate_routes",)),
    ),
)
