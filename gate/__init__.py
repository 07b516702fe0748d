"""teleposture-gate: verifies the collector's signed access decisions at a VPN server or reverse proxy."""
