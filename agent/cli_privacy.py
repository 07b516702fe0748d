"""`teleposture-agent privacy`: what the last report sent to the collector, and what is never collected.

Transparency for the employee (Morocco's law 09-08 on personal data; CNIL's rule against covert monitoring
of teleworkers): the command reads the copy of the last signed report payload the service keeps
(``last-report.json`` in the state directory) and prints every fact and piece of evidence it carried.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, TextIO

from agent.config import ConfigError
from agent.i18n import LANGUAGES, detect_language

LAST_REPORT_FILE = "last-report.json"

TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "What Teleposture sends about this computer",
        "none": "No report was sent from this computer yet (or the state directory {dir} is not readable).",
        "last": "The last report (number {seq}, created {created}) sent, signed with this computer's key:",
        "identity": "With every report: the device id {device}, the agent version and the policy version. At "
                    "enrolment: host name, machine id, serial number, operating system and the signed-in user name.",
        "never": "Never collected: the content of your files, e-mails or messages; web browsing; keystrokes; "
                 "screenshots, camera or microphone; location; the list of your applications beyond security "
                 "updates and the anti-malware product. Only the facts listed above leave this computer.",
        "where": "They go to your organisation's collector only, which keeps raw reports for a limited time.",
    },
    "fr": {
        "title": "Ce que Teleposture envoie sur cet ordinateur",
        "none": "Aucun rapport n'a encore été envoyé depuis cet ordinateur (ou le répertoire {dir} est illisible).",
        "last": "Le dernier rapport (numéro {seq}, créé le {created}) a envoyé, signé avec la clé de cet ordinateur :",
        "identity": "Avec chaque rapport : l'identifiant {device}, la version de l'agent et celle de la politique. "
                    "À l'enrôlement : nom d'hôte, identifiant machine, numéro de série, système et nom de "
                    "l'utilisateur connecté.",
        "never": "Jamais collecté : le contenu de vos fichiers, courriels ou messages ; la navigation web ; les "
                 "frappes au clavier ; captures d'écran, caméra ou micro ; la localisation ; la liste de vos "
                 "applications au-delà des mises à jour de sécurité et de l'antivirus. Seuls les éléments "
                 "ci-dessus quittent cet ordinateur.",
        "where": "Ils vont uniquement au collecteur de votre administration, qui conserve les rapports bruts "
                 "pendant une durée limitée.",
    },
    "ar": {
        "title": "ما يرسله Teleposture عن هذا الحاسوب",
        "none": "لم يُرسل أي تقرير من هذا الحاسوب بعد (أو أن المجلد {dir} غير مقروء).",
        "last": "أرسل التقرير الأخير (رقم {seq}، أُنشئ في {created}) موقّعا بمفتاح هذا الحاسوب:",
        "identity": "مع كل تقرير: معرّف الجهاز {device} وإصدار الوكيل وإصدار السياسة. عند التسجيل: اسم المضيف "
                    "ومعرّف الجهاز والرقم التسلسلي ونظام التشغيل واسم المستخدم.",
        "never": "لا يُجمع أبدا: محتوى ملفاتك أو بريدك أو رسائلك، التصفح، ضغطات المفاتيح، لقطات الشاشة أو الكاميرا "
                 "أو الميكروفون، الموقع، قائمة تطبيقاتك خارج التحديثات الأمنية ومضاد البرمجيات الخبيثة. "
                 "لا يغادر هذا الحاسوب إلا ما ورد أعلاه.",
        "where": "تذهب إلى مجمّع إدارتك فقط، الذي يحتفظ بالتقارير الخام لمدة محدودة.",
    },
}


def register(sub: Any) -> None:
    from agent.cli_service import _common

    privacy = sub.add_parser("privacy", parents=[_common()], help="what the last report sent, what is never collected",
                             description="Show, in your language, exactly what the last report sent to the "
                                         "collector contained, and what Teleposture never collects.")
    privacy.add_argument("--lang", choices=LANGUAGES, help="language (default: the `language` setting, else the "
                                                           "locale)")
    privacy.add_argument("--json", action="store_true", help="print the last report's payload as sent")
    privacy.set_defaults(handler=cmd_privacy)


def keep_last_report(state_dir: Path, payload: Mapping[str, Any]) -> None:
    """Called by the service after it signed a report (the copy `privacy` shows)."""
    from common.files import atomic_write

    atomic_write(state_dir / LAST_REPORT_FILE, json.dumps(payload, sort_keys=True, ensure_ascii=False).encode(),
                 mode=0o644)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def render(payload: Optional[Mapping[str, Any]], lang: str, state_dir: Path) -> str:
    texts = TEXTS.get(lang, TEXTS["en"])
    lines: List[str] = [texts["title"], ""]
    if payload is None:
        lines.append(texts["none"].format(dir=state_dir))
    else:
        lines.append(texts["last"].format(seq=payload.get("seq"), created=payload.get("created_at")))
        raw = payload.get("facts")
        facts: Dict[str, Any] = raw if isinstance(raw, dict) else {}
        for check, outcome in sorted(facts.items()):
            lines.append(f"  [{check}]")
            detail: Dict[str, Any] = outcome.get("facts") or {} if isinstance(outcome, dict) else {}
            for name, value in sorted(detail.items()):
                lines.append(f"    {name}: {_value(value)}")
            for item in (outcome.get("evidence") or []) if isinstance(outcome, dict) else []:
                lines.append(f"    · {item}")
        lines += ["", texts["identity"].format(device=payload.get("device_id"))]
    lines += ["", texts["never"], texts["where"]]
    return "\n".join(lines) + "\n"


def cmd_privacy(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    from agent.cli_service import _settings

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"teleposture-agent privacy: {exc}", file=sys.stderr)
        return 2
    path = settings.state_dir / LAST_REPORT_FILE
    try:
        payload: Optional[Dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        payload = None
    if args.json:
        out.write(json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        return 0
    lang = args.lang or settings.language or detect_language()
    out.write(render(payload, lang, settings.state_dir))
    return 0
