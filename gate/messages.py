"""What the gate tells the employee when it refuses a connection, in English, French or Arabic.

Short single-line texts: OpenVPN shows them in the client's log after ``AUTH_FAILED,``.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "prefix": "Teleposture: access refused",
        "rule_failed": "not met: {title}",
        "device_revoked": "this laptop was revoked by IT",
        "device_replaced": "this laptop was enrolled again; use the new enrolment",
        "device_pending": "this laptop's enrolment is not approved yet",
        "no_report": "this laptop has not reported its posture yet",
        "stale": "this laptop has not reported for too long; start the Teleposture agent",
        "blocked": "blocked after repeated non-compliance; contact IT",
        "unknown_certificate": "this VPN certificate is not linked to an enrolled laptop; contact IT",
        "collector_unreachable": "posture could not be verified (service unreachable); try again later",
        "wrong_certificate": "the access decision belongs to another certificate",
        "expired": "the access decision expired",
        "bad_signature": "the access decision is not authentic",
        "malformed": "the access decision is unreadable",
        "not_yet_valid": "the access decision is not valid yet (clock?)",
        "no_certificate": "this browser did not present a Teleposture device certificate",
        "fix": "run `teleposture-agent check` for details",
        "page_title": "Access refused",
        "page_intro": "This application is open to compliant work laptops only. What to fix:",
    },
    "fr": {
        "prefix": "Teleposture : accès refusé",
        "rule_failed": "non respecté : {title}",
        "device_revoked": "ce poste a été révoqué par le service informatique",
        "device_replaced": "ce poste a été réenrôlé ; utilisez le nouvel enrôlement",
        "device_pending": "l'enrôlement de ce poste n'est pas encore approuvé",
        "no_report": "ce poste n'a pas encore envoyé son état de conformité",
        "stale": "ce poste n'a pas envoyé son état depuis trop longtemps ; démarrez l'agent Teleposture",
        "blocked": "bloqué après des non-conformités répétées ; contactez le service informatique",
        "unknown_certificate": "ce certificat VPN n'est lié à aucun poste enrôlé ; contactez le service informatique",
        "collector_unreachable": "la conformité n'a pas pu être vérifiée (service injoignable) ; réessayez plus tard",
        "wrong_certificate": "la décision d'accès appartient à un autre certificat",
        "expired": "la décision d'accès a expiré",
        "bad_signature": "la décision d'accès n'est pas authentique",
        "malformed": "la décision d'accès est illisible",
        "not_yet_valid": "la décision d'accès n'est pas encore valide (horloge ?)",
        "no_certificate": "ce navigateur n'a pas présenté de certificat d'appareil Teleposture",
        "fix": "lancez `teleposture-agent check` pour le détail",
        "page_title": "Accès refusé",
        "page_intro": "Cette application n'est ouverte qu'aux postes de travail conformes. À corriger :",
    },
    "ar": {
        "prefix": "Teleposture: تم رفض الوصول",
        "rule_failed": "غير مستوفى: {title}",
        "device_revoked": "ألغت مصلحة المعلوميات تسجيل هذا الحاسوب",
        "device_replaced": "أعيد تسجيل هذا الحاسوب؛ استعمل التسجيل الجديد",
        "device_pending": "لم تتم الموافقة على تسجيل هذا الحاسوب بعد",
        "no_report": "لم يرسل هذا الحاسوب حالة امتثاله بعد",
        "stale": "لم يرسل هذا الحاسوب حالته منذ مدة طويلة؛ شغّل وكيل Teleposture",
        "blocked": "محظور بعد عدم امتثال متكرر؛ اتصل بمصلحة المعلوميات",
        "unknown_certificate": "شهادة VPN هذه غير مرتبطة بحاسوب مسجل؛ اتصل بمصلحة المعلوميات",
        "collector_unreachable": "تعذر التحقق من الامتثال (الخدمة غير متاحة)؛ أعد المحاولة لاحقا",
        "wrong_certificate": "قرار الوصول يخص شهادة أخرى",
        "expired": "انتهت صلاحية قرار الوصول",
        "bad_signature": "قرار الوصول غير أصلي",
        "malformed": "قرار الوصول غير مقروء",
        "not_yet_valid": "قرار الوصول غير صالح بعد (الساعة؟)",
        "no_certificate": "لم يقدم هذا المتصفح شهادة جهاز Teleposture",
        "fix": "شغّل teleposture-agent check للتفاصيل",
        "page_title": "تم رفض الوصول",
        "page_intro": "هذا التطبيق مفتوح فقط للحواسيب المهنية الممتثلة. ما يجب إصلاحه:",
    },
}


def reasons(lang: str, code: str, causes: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Each reason for a refusal, in ``lang`` (English if unknown)."""
    texts = TEXTS.get(lang, TEXTS["en"])
    parts: list[str] = []
    for cause in causes or [{"code": code}]:
        template = texts.get(str(cause.get("code")), texts.get(code, code))
        titles, title = cause.get("title"), str(cause.get("rule_id", ""))
        if isinstance(titles, dict):
            title = titles.get(lang) or titles.get("en") or title
        parts.append(template.format(title=title))
    return parts


def refusal(lang: str, code: str, causes: Sequence[Mapping[str, Any]] = ()) -> str:
    """One line: why the connection was refused and what to do, in ``lang`` (English if unknown)."""
    texts = TEXTS.get(lang, TEXTS["en"])
    return f"{texts['prefix']}: {'; '.join(reasons(lang, code, causes))} ({texts['fix']})"


def refusal_page(lang: str, code: str, causes: Sequence[Mapping[str, Any]] = ()) -> str:
    """The 403 page a reverse proxy shows: what is wrong and what to do, in ``lang``; everything escaped."""
    lang = lang if lang in TEXTS else "en"
    texts = TEXTS[lang]
    items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons(lang, code, causes))
    direction = "rtl" if lang == "ar" else "ltr"
    return (f'<!DOCTYPE html>\n<html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
            f"<title>{html.escape(texts['page_title'])}</title></head><body>"
            f"<h1>{html.escape(texts['page_title'])}</h1><p>{html.escape(texts['page_intro'])}</p>"
            f"<ul>{items}</ul><p>{html.escape(texts['fix'])}</p></body></html>\n")
