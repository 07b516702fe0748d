"""Wi-Fi security: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec

SPEC = CheckSpec(
    id="wifi",
    title="Wi-Fi network security",
    description=(
        "The security of the Wi-Fi network the laptop is connected to: open, wep, wpa, wpa2, wpa3 or owe "
        "(Enhanced Open), personal (pre-shared key) or enterprise (802.1X). NetworkManager (nmcli) or "
        "wpa_supplicant on Linux, the Wi-Fi interface report on macOS, netsh wlan show interfaces on Windows "
        "(in the display language, French and Arabic included). Not applicable without a Wi-Fi interface."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("interfaces", "list", "Wi-Fi interfaces (wlp2s0, en0, Wi-Fi)",
                 items="string"),
        FactSpec("connected", "bool", "a Wi-Fi interface is associated with a network"),
        FactSpec("ssid", "string", "the network name (null when not connected or hidden by the OS)"),
        FactSpec("security", "string", "open, wep, wpa, wpa2, wpa3 or owe; the weakest one the network offers "
                                       "when it offers several (WPA2/WPA3 transition: wpa2)"),
        FactSpec("enterprise", "bool", "802.1X authentication (enterprise) rather than a shared key"),
        FactSpec("encrypted", "bool", "traffic over the air is encrypted with a current cipher (not open, not WEP)"),
    ),
)
