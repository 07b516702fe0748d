"""The one catalogue system of the agent and the dashboard: gettext catalogues in English, French and Arabic.

Sources are ``.po`` files under a ``locale/<lang>/LC_MESSAGES/<domain>.po`` tree (the agent's in
agent/i18n/locale, the dashboard's in server/web/locale). Building the wheel compiles them to ``.mo``
(setup.py, with Babel); installed code reads the ``.mo`` with the standard library's gettext, so the
laptop needs no Babel. A source checkout has no ``.mo``: the ``.po`` is compiled in memory at first use.

Each language's plural rule comes from the CLDR through Babel and travels in the catalogue's
``Plural-Forms`` header: Arabic has six forms (zero, one, two, few, many, other), French says
"0 jour" and "1 jour". A message with a count names its English singular and plural (`Plural`).

This module imports nothing of the agent: the policy engine, the checks, the command line and the
collector all use it, and it must not draw them into each other.
"""

from __future__ import annotations

import gettext
import io
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Union

LANGUAGES = ("en", "fr", "ar")
RTL_LANGUAGES = ("ar",)
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
AGENT_DOMAIN = "agent"

log = logging.getLogger(__name__)


class Plural(NamedTuple):
    """The English forms of a message that holds a count."""

    singular: str
    plural: str


Source = Union[str, Plural]


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


def catalogue_path(locale_dir: Path, domain: str, lang: str, suffix: str) -> Path:
    return locale_dir / lang / "LC_MESSAGES" / f"{domain}{suffix}"


def compile_po(po_path: Path) -> bytes:
    """The ``.mo`` bytes of a ``.po`` file (Babel: the wheel build and source checkouts only).

    Raises ImportError without Babel, OSError or ValueError for an unreadable or malformed file.
    """
    from babel.messages.mofile import write_mo  # not a dependency of installed agents: imported on demand
    from babel.messages.pofile import PoFileError, read_po

    with po_path.open("rb") as source:
        try:
            parsed = read_po(source, abort_invalid=True)
        except PoFileError as exc:
            raise ValueError(f"{po_path}: {exc}") from exc
    compiled = io.BytesIO()
    write_mo(compiled, parsed)
    return compiled.getvalue()


def _read_translations(locale_dir: Path, domain: str, lang: str) -> Optional[gettext.GNUTranslations]:
    mo = catalogue_path(locale_dir, domain, lang, ".mo")
    po = catalogue_path(locale_dir, domain, lang, ".po")
    try:
        if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
            with mo.open("rb") as compiled:
                return gettext.GNUTranslations(compiled)
        if po.is_file():
            return gettext.GNUTranslations(io.BytesIO(compile_po(po)))
    except ImportError:
        log.warning("catalogue %s is not compiled and Babel is not installed to compile it: English is shown", po)
    except (OSError, ValueError) as exc:  # a damaged catalogue must not stop a check or a page
        log.warning("catalogue %s/%s of %s is unreadable (%s): English is shown", domain, lang, locale_dir, exc)
    return None


class _Untranslated(LookupError):
    pass


class _Missing(gettext.NullTranslations):
    """The last fallback of a catalogue: says that a message is not translated instead of guessing."""

    def gettext(self, message: str) -> str:
        raise _Untranslated(message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        raise _Untranslated(msgid1)

    def pgettext(self, context: str, message: str) -> str:
        raise _Untranslated(message)

    def npgettext(self, context: str, msgid1: str, msgid2: str, n: int) -> str:
        raise _Untranslated(msgid1)


FRACTION_OPERAND = 100


def plural_operand(count: object) -> int:
    """The integer whose plural form ``count`` takes: gettext's plural rules are defined on integers.

    A fraction (1.5 days) takes the form of 100, the form that shows the number ("other") in English,
    French and Arabic, as the CLDR gives fractions in these languages (French 0 < x < 2 aside): never
    Arabic's dual or the one form that replace the number by a word.
    """
    if not isinstance(count, (int, float)):
        try:
            count = float(str(count))
        except ValueError:
            return FRACTION_OPERAND
    if count != count or count in (float("inf"), float("-inf")):
        return FRACTION_OPERAND
    return abs(int(count)) if count == int(count) else FRACTION_OPERAND


def english_form(source: Source, count: object = None) -> str:
    """The English text of ``source``: its singular for a count of exactly 1, its plural otherwise."""
    if isinstance(source, str):
        return source
    return source.singular if plural_operand(count) == 1 and count is not None else source.plural


def fill(template: str, params: Mapping[str, Any]) -> str:
    """``template`` with its ``{placeholders}`` filled; as it is if a translation's placeholders are broken."""
    if not params:
        return template
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template


class Catalogue:
    """One domain's messages in one language; `find` says None for a message this language lacks."""

    def __init__(self, lang: str, translations: Optional[gettext.GNUTranslations]) -> None:
        self.lang = lang
        self.rtl = lang in RTL_LANGUAGES
        self.loaded = translations is not None
        self._translations: gettext.NullTranslations = translations or gettext.NullTranslations()
        self._translations.add_fallback(_Missing())

    def find(self, msgid: str, *, context: Optional[str] = None, plural: Optional[str] = None,
             count: object = None) -> Optional[str]:
        """The translation of ``msgid`` (in ``context``; the form of ``count`` if ``plural`` is given), or None."""
        t = self._translations
        try:
            if plural is None:
                return t.gettext(msgid) if context is None else t.pgettext(context, msgid)
            n = plural_operand(count)
            return t.ngettext(msgid, plural, n) if context is None else t.npgettext(context, msgid, plural, n)
        except _Untranslated:
            return None

    def find_source(self, key: str, source: Source, count: object = None) -> Optional[str]:
        """The translation of a message whose context is its ``key`` and whose msgid is its English ``source``."""
        if isinstance(source, str):
            return self.find(source, context=key)
        return self.find(source.singular, context=key, plural=source.plural, count=count)

    def text(self, key: str, source: Source, count: object = None) -> str:
        """`find_source`, else the English text: an untranslated message is shown in English, never empty."""
        found = self.find_source(key, source, count)
        return found if found is not None else english_form(source, count)


@cache
def catalogue(lang: str, domain: str = AGENT_DOMAIN, locale_dir: Path = LOCALE_DIR) -> Catalogue:
    """The catalogue of ``domain`` in ``lang`` (en, fr, ar); ValueError for another language.

    English needs no file for the agent (its msgids are the English texts); a language whose file
    is missing or damaged yields an empty catalogue, so every message shows in English.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    return Catalogue(lang, _read_translations(locale_dir, domain, lang))
