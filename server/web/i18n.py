"""The dashboard's words in English, French and Arabic (server/web/i18n/<lang>.json).

A key missing from French or Arabic falls back to English (a test keeps the catalogs complete);
a key missing everywhere shows itself, so a gap is visible instead of an empty label.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, Optional

from agent.policy.messages import render_in

LANGUAGES = ("en", "fr", "ar")
RTL = frozenset({"ar"})
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "ar": "العربية"}
CATALOG_DIR = Path(__file__).resolve().parent / "i18n"


@cache
def catalog(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    data = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{CATALOG_DIR / (lang + '.json')}: expected a JSON object of key -> text")
    return {str(k): str(v) for k, v in data.items()}


class Reason(NamedTuple):
    """A check's reason as shown: the text and the language and direction it is written in."""

    text: str
    lang: str
    dir: str


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else "en"
        self.rtl = self.lang in RTL
        self._texts = catalog(self.lang)
        self._english = catalog("en")

    def __call__(self, key: str, **params: Any) -> str:
        template = self._texts.get(key) or self._english.get(key) or key
        if not params:
            return template
        try:
            return template.format(**params)
        except (KeyError, IndexError, ValueError):
            return template

    def pick(self, texts: Any) -> str:
        """This language's text from a policy's {en, fr, ar} mapping (English, then any, as fallback)."""
        if not isinstance(texts, dict) or not texts:
            return "" if texts is None else str(texts)
        return str(texts.get(self.lang) or texts.get("en") or next(iter(texts.values())))


    def reason(self, message: Any, english: Optional[str]) -> Reason:
        """A check's reason in this language from its stored message (a dict, or the JSON text of one),
        else the stored English ``reason``: for a message that is missing (history rows written before
        migration 0006), malformed or unknown (an older or hostile agent, a key this collector's
        catalog lacks), or not translated into this language."""
        fallback = Reason(english or "", "en", "ltr")
        if self.lang == "en":
            return fallback  # the engine rendered the stored English text from the same message
        if isinstance(message, str):
            try:
                message = json.loads(message)
            except (ValueError, RecursionError):
                return fallback
        text = render_in(message, self.lang)
        if text is None:
            return fallback
        return Reason(text, self.lang, "rtl" if self.rtl else "ltr")


def choose_language(cookie: Optional[str], accept_language: Optional[str]) -> str:
    """The remembered choice, else the browser's first supported language, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().split("-")[0].lower()
        if code in LANGUAGES:
            return code
    return "en"
