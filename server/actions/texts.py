"""Short texts of events in en/fr/ar, for e-mails (subject, plain text, HTML)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

TITLES: Mapping[str, Mapping[str, str]] = {
    "rule.failing": {"en": "{hostname}: rule {rule_id} is failing", "fr": "{hostname} : la règle {rule_id} échoue",
                     "ar": "{hostname}: القاعدة {rule_id} غير مستوفاة"},
    "rule.passing": {"en": "{hostname}: rule {rule_id} passes again",
                     "fr": "{hostname} : la règle {rule_id} est de nouveau respectée",
                     "ar": "{hostname}: القاعدة {rule_id} مستوفاة من جديد"},
    "step.reached": {"en": "{hostname}: {action} for rule {rule_id} (step {step})",
                     "fr": "{hostname} : {action} pour la règle {rule_id} (étape {step})",
                     "ar": "{hostname}: {action} للقاعدة {rule_id} (المرحلة {step})"},
    "device.blocked": {"en": "{hostname} is blocked (rule {rule_id})", "fr": "{hostname} est bloqué (règle {rule_id})",
                       "ar": "تم حظر {hostname} (القاعدة {rule_id})"},
    "device.unblocked": {"en": "{hostname} is no longer blocked", "fr": "{hostname} n'est plus bloqué",
                         "ar": "لم يعد {hostname} محظورا"},
    "device.noncompliant": {"en": "{hostname} is not compliant", "fr": "{hostname} n'est pas conforme",
                            "ar": "{hostname} غير مطابق"},
    "device.compliant": {"en": "{hostname} is compliant again", "fr": "{hostname} est de nouveau conforme",
                         "ar": "{hostname} مطابق من جديد"},
}
ACTIONS: Mapping[str, Mapping[str, str]] = {
    "en": {"notify_employee": "Employee notice", "notify_team": "Team alert", "notify_manager": "Manager notice",
           "block": "Block"},
    "fr": {"notify_employee": "Avis à l'employé", "notify_team": "Alerte à l'équipe",
           "notify_manager": "Avis au responsable", "block": "Blocage"},
    "ar": {"notify_employee": "إشعار الموظف", "notify_team": "تنبيه الفريق", "notify_manager": "إخطار المسؤول",
           "block": "حظر"},
}
FALLBACK = {"en": "Teleposture event {type}", "fr": "Événement Teleposture {type}", "ar": "حدث Teleposture {type}"}
LABELS = {"en": ("Device", "Rule", "Event", "When", "Next"), "fr": ("Poste", "Règle", "Événement", "Quand", "Suite"),
          "ar": ("الجهاز", "القاعدة", "الحدث", "متى", "التالي")}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _when(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return "?"


def subject(body: Mapping[str, Any], language: str) -> str:
    info = body.get("unmapped", {}).get("teleposture", {})
    lang = language if language in LABELS else "en"
    template = TITLES.get(str(info.get("type")), FALLBACK)[lang]
    values = {k: v for k, v in info.items() if v is not None}
    if isinstance(values.get("action"), str):
        values["action"] = ACTIONS[lang].get(values["action"], values["action"])
    return template.format_map(_Blank(values)).replace("\n", " ")[:200]


def lines(body: Mapping[str, Any], language: str) -> list[tuple[str, str]]:
    info = body.get("unmapped", {}).get("teleposture", {})
    lang = language if language in LABELS else "en"
    device, rule, event, when, nxt = LABELS[lang]
    out = [(device, str(info.get("hostname") or body.get("device", {}).get("uid", "-"))),
           (event, str(info.get("type"))), (when, _when(body.get("time")))]
    if info.get("rule_id"):
        out.insert(1, (rule, str(info["rule_id"])))
    if info.get("next_action"):
        out.append((nxt, f"{info['next_action']} @ {_when(float(info.get('next_at') or 0) * 1000)}"))
    return out
