"""The dashboard's words in English, French and Arabic: the ``dashboard`` gettext catalogue
(server/web/locale/<lang>/LC_MESSAGES/dashboard.po) of the shared catalogue system, agent.i18n.

Entries are addressed by key (``nav.devices``); the English catalogue holds the English texts. A key
missing from French or Arabic falls back to English (a test keeps the catalogues complete); a key
missing everywhere shows itself, so a gap is visible instead of an empty label. A text with a count
is a plural entry, shown with `Translator.plural` in the form the language's plural rule picks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, Optional

from agent.i18n import LANGUAGES, RTL_LANGUAGES, Catalogue, catalogue, fill
from agent.policy.messages import render_complete

RTL = frozenset(RTL_LANGUAGES)
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "ar": "العربية"}
DOMAIN = "dashboard"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


def dashboard_catalogue(lang: str) -> Catalogue:
    """The dashboard catalogue of ``lang``; ValueError for a language the dashboard does not speak."""
    return catalogue(lang, DOMAIN, LOCALE_DIR)


class Reason(NamedTuple):
    """A check's reason as shown: the text and the language and direction it is written in."""

    text: str
    lang: str
    dir: str


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else "en"
        self.rtl = self.lang in RTL
        self._texts = dashboard_catalogue(self.lang)
        self._english = dashboard_catalogue("en")

    def __call__(self, key: str, **params: Any) -> str:
        template = self._texts.find(key) or self._english.find(key) or key
        return fill(template, params)

    def plural(self, key: str, count: float, **params: Any) -> str:
        """The text of a plural entry in the form ``count`` takes in this language (Arabic: one of six);
        ``count`` is also the ``{n}`` parameter unless ``params`` name ``n`` themselves."""
        template = (self._texts.find(key, plural=key, count=count)
                    or self._english.find(key, plural=key, count=count) or key)
        return fill(template, {"n": count, **params})

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
        text = render_complete(message, catalogue(self.lang))
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
