"""The gettext catalogues of the agent and the dashboard: complete in every language with every plural
form, the plural rules of the CLDR (Arabic's six forms), compiled and loaded the way installed code does,
and a catalogue system that imports neither the policy engine nor the checks."""

from __future__ import annotations

import ast
import gettext
import importlib.util
import io
import logging
import os
import string
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

from agent.i18n import (
    AGENT_DOMAIN,
    FRACTION_OPERAND,
    LOCALE_DIR,
    Plural,
    catalogue,
    catalogue_path,
    compile_po,
    english_form,
    plural_operand,
)
from agent.policy.messages import message, render, render_complete
from server.web.i18n import DOMAIN as DASHBOARD_DOMAIN
from server.web.i18n import LOCALE_DIR as DASHBOARD_DIR
from server.web.i18n import Translator

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = ("fr", "ar")


def _maintenance_script() -> Any:
    spec = importlib.util.spec_from_file_location("catalogues", ROOT / "scripts" / "catalogues.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What every agent .po must translate: its English texts by context (the script's list of tables).
AGENT_ENTRIES: Dict[str, str] = _maintenance_script().agent_entries()


def read(path: Path) -> Catalog:
    with path.open("rb") as source:
        return read_po(source)


def entries(catalog: Catalog) -> Dict[Tuple[Optional[str], str], Message]:
    return {(m.context, str(m.id[0] if m.pluralizable else m.id)): m for m in catalog if m.id}


def forms(entry: Message) -> List[str]:
    texts = entry.string
    return [str(text) for text in texts] if isinstance(texts, (tuple, list)) else [str(texts or "")]


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def numbers_of_each_form(lang: str) -> List[List[int]]:
    """For each plural form of ``lang``, the integers 0..1000 that take it (from the catalogue's own rule)."""
    rule = get_plural(lang)
    choose = gettext.c2py(rule.plural_expr)
    taken: List[List[int]] = [[] for _ in range(rule.num_plurals)]
    for n in range(1001):
        taken[choose(n)].append(n)
    return taken


def check_translation(lang: str, where: str, english: Tuple[str, ...], entry: Message) -> List[str]:
    problems = []
    if entry.fuzzy:
        problems.append(f"{where}: fuzzy (the English text changed): review and clear the flag")
    texts = forms(entry)
    expected = get_plural(lang).num_plurals if entry.pluralizable else 1
    if len(texts) != expected or not all(text.strip() for text in texts):
        problems.append(f"{where}: {expected} form(s) expected, all filled; found {texts}")
        return problems
    names = set().union(*(fields(text) for text in english))
    for index, text in enumerate(texts):
        if not fields(text) <= names:
            problems.append(f"{where}: form {index} has placeholders {sorted(fields(text) - names)} the English lacks")
        # A form may say its number in words ("جهازان") only when it stands for one number alone.
        missing = names - fields(text)
        single = entry.pluralizable and len(numbers_of_each_form(lang)[index]) == 1
        if missing and not (single and len(missing) == 1):
            problems.append(f"{where}: form {index} lacks placeholders {sorted(missing)}")
    return problems


@pytest.mark.parametrize("lang", TRANSLATED)
def test_agent_catalogue_translates_every_english_text(lang: str) -> None:
    catalog = read(catalogue_path(LOCALE_DIR, AGENT_DOMAIN, lang, ".po"))
    assert (catalog.num_plurals, catalog.plural_expr) == (get_plural(lang).num_plurals, get_plural(lang).plural_expr)
    found = entries(catalog)
    expected = {(context, english) for context, english in AGENT_ENTRIES.items()}
    assert sorted(expected - set(found)) == [], "untranslated or changed English texts: run scripts/catalogues.py"
    assert sorted(set(found) - expected) == [], "texts no longer in the code: run scripts/catalogues.py"
    problems = [problem for (context, english), entry in found.items()
                for problem in check_translation(lang, f"{lang}:{context}", (english,), entry)]
    assert problems == []


def test_agent_template_is_current() -> None:
    template = read(LOCALE_DIR / f"{AGENT_DOMAIN}.pot")
    assert set(entries(template)) == set(AGENT_ENTRIES.items()), "agent.pot is stale: run scripts/catalogues.py"


def dashboard(lang: str) -> Catalog:
    return read(catalogue_path(DASHBOARD_DIR, DASHBOARD_DOMAIN, lang, ".po"))


@pytest.mark.parametrize("lang", ["en", *TRANSLATED])
def test_dashboard_catalogue_has_every_key_with_every_plural_form(lang: str) -> None:
    english = entries(dashboard("en"))
    catalog = dashboard(lang)
    assert (catalog.num_plurals, catalog.plural_expr) == (get_plural(lang).num_plurals, get_plural(lang).plural_expr)
    found = entries(catalog)
    assert sorted(set(english) - set(found)) == [] and sorted(set(found) - set(english)) == []
    problems = []
    for key, entry in found.items():
        if entry.pluralizable != english[key].pluralizable:
            problems.append(f"{lang}:{key[1]}: plural in one language and not in the other")
            continue
        problems += check_translation(lang, f"{lang}:{key[1]}", tuple(forms(english[key])), entry)
    assert problems == []
    assert sum(entry.pluralizable for entry in found.values()) >= 20, "the texts with a count are plural entries"


# -- the plural rules, table-driven -----------------------------------------------------------------------

@pytest.mark.parametrize("n, expected", [
    (0, "لا أجهزة"), (1, "جهاز واحد"), (2, "جهازان"), (3, "3 أجهزة"), (10, "10 أجهزة"),
    (11, "11 جهازًا"), (99, "99 جهازًا"), (100, "100 جهاز"), (102, "102 جهاز"), (103, "103 أجهزة"),
    (111, "111 جهازًا"),
])
def test_arabic_device_count_takes_the_form_of_its_number(n: int, expected: str) -> None:
    assert Translator("ar").plural("devices.count", n) == expected


@pytest.mark.parametrize("n, expected", [
    (0, "اليوم"), (1, "منذ يوم واحد"), (2, "منذ يومين"), (3, "منذ 3 أيام"), (11, "منذ 11 يومًا"), (100, "منذ 100 يوم"),
])
def test_arabic_days_ago(n: int, expected: str) -> None:
    assert Translator("ar").plural("time.days", n) == expected


@pytest.mark.parametrize("lang, n, expected", [
    ("fr", 0, "0 appareil"), ("fr", 1, "1 appareil"), ("fr", 2, "2 appareils"), ("fr", 1_000_000, "1000000 d'appareils"),
    ("en", 0, "0 devices"), ("en", 1, "1 device"), ("en", 2, "2 devices"),
])
def test_french_and_english_device_count(lang: str, n: int, expected: str) -> None:
    assert Translator(lang).plural("devices.count", n) == expected


def test_plural_text_keeps_its_other_parameters() -> None:
    assert Translator("ar").plural("upload.valid", 2, id="p", version=3, rules=2) == "صالح: p الإصدار 3، قاعدتان."
    assert Translator("fr").plural("overview.last_days", 1, days=1) == "sur 1 jour"
    # a fraction shows its number, in the form the CLDR gives fractions
    assert Translator("ar").plural("device.notice.stale", 1.5, days=1.5) == \
        "صامت: لا تقرير منذ 1.5 يوم؛ يُعتبر الجهاز غير نشط"


@pytest.mark.parametrize("count, operand", [
    (0, 0), (1, 1), (2, 2), (-3, 3), (2.0, 2), (1.5, FRACTION_OPERAND), ("7", 7), (None, FRACTION_OPERAND),
    (float("nan"), FRACTION_OPERAND), (float("inf"), FRACTION_OPERAND), (True, 1),
])
def test_plural_operand(count: object, operand: int) -> None:
    assert plural_operand(count) == operand


def test_english_form_of_a_plural_source() -> None:
    days = Plural("{n} day", "{n} days")
    assert [english_form(days, n) for n in (0, 1, 2, 1.0, 1.5)] == ["{n} days", "{n} day", "{n} days", "{n} day",
                                                                     "{n} days"]
    assert catalogue("ar").text("no.such", days, 1) == "{n} day"


# -- compiling and loading ------------------------------------------------------------------------------------

def every_po() -> List[Path]:
    found = sorted([*LOCALE_DIR.glob("*/LC_MESSAGES/*.po"), *DASHBOARD_DIR.glob("*/LC_MESSAGES/*.po")])
    assert len(found) == 5
    return found


@pytest.mark.parametrize("po", every_po(), ids=lambda p: f"{p.parent.parent.name}-{p.stem}")
def test_compiled_catalogue_reads_with_the_standard_library(po: Path) -> None:
    translations = gettext.GNUTranslations(io.BytesIO(compile_po(po)))
    lang = po.parent.parent.name
    assert translations.info()["language"] == lang
    if po.stem == DASHBOARD_DOMAIN:
        assert translations.ngettext("devices.count", "devices.count", 11).format(n=11) == \
            {"en": "11 devices", "fr": "11 appareils", "ar": "11 جهازًا"}[lang]


def copy_catalogue(tmp_path: Path, lang: str, text: str) -> Path:
    po = catalogue_path(tmp_path, "test", lang, ".po")
    po.parent.mkdir(parents=True)
    po.write_text(text, encoding="utf-8")
    return po


FRENCH = ('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n"Plural-Forms: nplurals=3; '
          'plural=(n == 0 || n == 1) ? 0 : n != 0 && n % 1000000 == 0 ? 1 : 2;\\n"\n\n'
          'msgctxt "k"\nmsgid "yes"\nmsgstr "oui"\n')


def test_source_checkout_compiles_in_memory_and_installed_code_prefers_the_mo(tmp_path: Path) -> None:
    po = copy_catalogue(tmp_path, "fr", FRENCH)
    assert catalogue.__wrapped__("fr", "test", tmp_path).find("yes", context="k") == "oui"
    mo = po.with_suffix(".mo")
    mo.write_bytes(compile_po(po).replace(b"oui", b"OUI"))
    os.utime(po, (1, 1))  # the .po is older than its .mo, as in an installation
    assert catalogue.__wrapped__("fr", "test", tmp_path).find("yes", context="k") == "OUI"
    os.utime(mo, (0, 0))  # a .po edited after the .mo was built wins over the stale .mo
    assert catalogue.__wrapped__("fr", "test", tmp_path).find("yes", context="k") == "oui"


def test_damaged_or_missing_catalogue_shows_english(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy_catalogue(tmp_path, "ar", 'msgid "unterminated\n')
    with caplog.at_level(logging.WARNING, logger="agent.i18n"):
        damaged = catalogue.__wrapped__("ar", "test", tmp_path)
    assert not damaged.loaded and "English is shown" in caplog.text
    assert damaged.text("k", "yes") == "yes" and damaged.find("yes", context="k") is None
    missing = catalogue.__wrapped__("fr", "test", tmp_path)
    assert not missing.loaded and missing.text("k", Plural("{n} day", "{n} days"), 2) == "{n} days"


def test_a_text_the_language_lacks_is_english_inside_its_translated_sentence(tmp_path: Path) -> None:
    copy_catalogue(tmp_path, "fr", FRENCH + '\nmsgctxt "messages.check_error"\n'
                   'msgid "{check} could not be checked: {reason}"\nmsgstr "{check} n\'a pas pu être vérifié : {reason}"\n')
    partial = catalogue.__wrapped__("fr", "test", tmp_path)
    msg = message("check_error", check="vpn", reason=message("probe_not_found", probe="wg"))
    assert render(msg, partial) == "vpn n'a pas pu être vérifié : wg: not found"
    assert render_complete(msg, partial) is None, "the collector shows its English reason instead of a mix"
    assert render_complete(msg, catalogue("fr")) == "vpn n'a pas pu être vérifié : wg : introuvable"


# -- no circle ---------------------------------------------------------------------------------------------

def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_catalogue_system_and_messages_do_not_import_each_other() -> None:
    """agent.i18n imports nothing of the agent but itself; the message modules do not import it
    (at any level, functions included): whoever shows a message passes the catalogue in."""
    for path in sorted((ROOT / "agent" / "i18n").glob("*.py")):
        agent_imports = {name for name in imported_modules(path) if name.split(".")[0] == "agent"}
        assert agent_imports <= {"agent.i18n"}, (path.name, agent_imports)
    for module in ("agent/policy/messages.py", "agent/checks/messages.py"):
        imports = imported_modules(ROOT / module)
        assert not {name for name in imports if name.startswith("agent.i18n")}, module
    assert not {name for name in imported_modules(ROOT / "agent/checks/messages.py") if name.startswith("agent.")}


def test_importing_the_catalogue_system_loads_no_engine_module() -> None:
    code = ("import sys, agent.i18n.command_line; "
            "print(sorted(m for m in sys.modules if m.startswith(('agent.policy', 'agent.checks', 'agent.probes'))))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
