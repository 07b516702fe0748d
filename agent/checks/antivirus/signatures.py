"""What the running anti-malware products say about their signatures, the same way on every platform.

Most products publish the age of their signature set (Defender, ClamAV, XProtect, mdatp). A product
registered with Windows Security Center publishes only its own verdict (``productState``: up to date or
out of date), which is a fact too: a rule judges it instead of reading "unknown age" as an error.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

AGE = "age"
PRODUCT_STATE = "product_state"
NONE = "none"


def signature_facts(running: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """``signature_source`` and ``signatures_up_to_date`` from the running products' entries.

    ``age`` when any running product publishes a signature age; else ``product_state`` when a product
    gives its own verdict (entry key ``signatures_up_to_date``), up to date if any of them says so;
    else ``none`` (the age rule then says "unknown", never a pass).
    """
    if any(p.get("signature_age_days") is not None for p in running):
        return {"signature_source": AGE, "signatures_up_to_date": None}
    verdicts = [p["signatures_up_to_date"] for p in running if p.get("signatures_up_to_date") is not None]
    if verdicts:
        return {"signature_source": PRODUCT_STATE, "signatures_up_to_date": any(verdicts)}
    up_to_date: Optional[bool] = None
    return {"signature_source": NONE, "signatures_up_to_date": up_to_date}
