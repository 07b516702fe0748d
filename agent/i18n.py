"""Words and messages of the agent's command line in English, French and Arabic.

Catalogs are agent/i18n/<lang>.json: status words, table headers, summary lines, and the
translations of result messages (by key, with parameters). English result messages come from
agent.policy.messages, which the evaluator uses to write every result's English reason; a
message missing from a catalog falls back to English rather than showing nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from agent.policy.messages import FACT_LABELS_EN, TEMPLATES_EN, WORDS_EN, render, render_en

LANGUAGES = ("en", "fr", "ar")
RTL_LANGUAGES = ("ar",)
CATALOG_DIR = Path(__file__).resolve().parent / "i18n"


def detect_language(env: Optional[Mapping[str, str]] = None) -> str:
    """en, fr or ar from the POSIX locale variables (LC_ALL, LC_MESSAGES, LANG); English otherwise."""
    env = os.environ if env is None else env
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "").strip()
        if not value:
            continue
        code = value.split(".")[0].split("@")[0].split("_")[0].lower()
        return code if code in LANGUAGES else "en"
    return "en"


class Catalog:
    """The texts of one language."""

    def __init__(self, lang: str, data: Mapping[str, Any]) -> None:
        self.lang = lang
        self.rtl = lang in RTL_LANGUAGES
        self.data = data
        self.words: Dict[str, str] = {**WORDS_EN, **dict(data.get("words") or {})}
        self.templates: Dict[str, str] = {**TEMPLATES_EN, **dict(data.get("messages") or {})}
        self.fact_labels: Dict[str, str] = {**FACT_LABELS_EN, **dict(data.get("facts") or {})}

    def _section(self, section: str, key: str) -> str:
        value = (self.data.get(section) or {}).get(key)
        if isinstance(value, str):
            return value
        if self.lang != "en":
            return catalog("en")._section(section, key)
        return key

    def status(self, status: str) -> str:
        return self._section("status", status)

    def severity(self, severity: str) -> str:
        return self._section("severity", severity)

    def ui(self, key: str, **params: Any) -> str:
        template = self._section("ui", key)
        try:
            return template.format(**params)
        except (KeyError, IndexError, ValueError):
            return template

    def message(self, msg: Any) -> str:
        """A result's message in this language (English for keys this catalog lacks)."""
        return render(msg, self.templates, self.words, self.fact_labels, fallback=render_en)

    def pick(self, texts: Mapping[str, str]) -> str:
        """This language's text from a policy's {en, fr, ar} mapping (English if it is missing)."""
        return texts.get(self.lang) or texts.get("en") or next(iter(texts.values()), "")


_CATALOGS: Dict[str, Catalog] = {}


def catalog(lang: str) -> Catalog:
    """The catalog of ``lang`` (en, fr, ar); raises ValueError for another language."""
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    if lang not in _CATALOGS:
        path = CATALOG_DIR / f"{lang}.json"
        # A missing or damaged catalog must not stop a check: English words are the fallback.
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        _CATALOGS[lang] = Catalog(lang, data if isinstance(data, dict) else {})
    return _CATALOGS[lang]
