"""Wi-Fi security words -> the one vocabulary of the facts (pure, shared by the platform collectors)."""

from __future__ import annotations

from typing import Any, Dict, Optional

RANK = {"open": 0, "wep": 1, "wpa": 2, "owe": 3, "wpa2": 4, "wpa3": 5}
ENCRYPTED = ("wpa", "owe", "wpa2", "wpa3")


def weakest(*found: Optional[str]) -> Optional[str]:
    known = [f for f in found if f in RANK]
    return min(known, key=RANK.__getitem__) if known else None


def facts(interfaces: list, connected: bool, ssid: Optional[str], security: Optional[str],
          enterprise: Optional[bool]) -> Dict[str, Any]:
    if not connected:
        return {"interfaces": interfaces, "connected": False, "ssid": None, "security": None, "enterprise": None,
                "encrypted": None}
    return {"interfaces": interfaces, "connected": True, "ssid": ssid, "security": security,
            "enterprise": enterprise if security not in ("open", "wep", "owe") else False,
            "encrypted": None if security is None else security in ENCRYPTED}
