"""Keep the gettext catalogues in step with their English texts (Babel; a development tool).

usage: .venv/bin/python scripts/catalogues.py

- agent (agent/i18n/locale): the English texts are code (`agent_entries` lists the tables: result messages,
  fact labels, the command line's words, the notification, `privacy`, the deadlines under `check`); this
  writes them to agent.pot, each under its key as context.
- dashboard (server/web/locale): the English catalogue en/LC_MESSAGES/dashboard.po is the template.

Every French and Arabic .po is then merged with its template: new texts arrive untranslated, changed
English texts turn the translation fuzzy (not shown until a translator clears the flag), removed ones
are dropped. tests/test_catalogues.py fails until every entry is translated with all its plural forms.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.cli.privacy import TEXTS_EN as PRIVACY_EN  # noqa: E402
from agent.i18n import AGENT_DOMAIN, LOCALE_DIR, catalogue_path  # noqa: E402
from agent.i18n.command_line import catalogue_entries as command_line_entries  # noqa: E402
from agent.policy.messages import catalogue_entries as message_entries  # noqa: E402
from agent.service.ladder_view import TEXTS_EN as DEADLINES_EN  # noqa: E402
from agent.service.notify import TEXTS_EN as NOTIFY_EN  # noqa: E402

DASHBOARD_DIR = ROOT / "server" / "web" / "locale"
HEADER = {"project": "Teleposture", "version": "", "copyright_holder": "the Teleposture authors",
          "msgid_bugs_address": "", "last_translator": "", "language_team": ""}
WIDTH = 100


def agent_entries() -> Dict[str, str]:
    """Every English text of the agent catalogue by its context: what each .po must translate."""
    sections = {"notify": NOTIFY_EN, "privacy": PRIVACY_EN, "deadlines": DEADLINES_EN}
    return {**command_line_entries(), **message_entries(),
            **{f"{section}.{key}": text for section, table in sections.items() for key, text in table.items()}}


def agent_template() -> Catalog:
    template = Catalog(domain=AGENT_DOMAIN, header_comment="# English texts of the Teleposture agent (generated "
                       "by scripts/catalogues.py from the code: do not edit).")
    for name, value in HEADER.items():
        setattr(template, name, value)
    for context, english in agent_entries().items():
        template.add(english, context=context, flags=("python-brace-format",) if "{" in english else ())
    return template


def read(path: Path) -> Catalog:
    with path.open("rb") as source:
        return read_po(source)


def write(path: Path, catalog: Catalog) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_po(target, catalog, width=WIDTH, no_location=True)


def merge(template: Catalog, po_path: Path) -> None:
    catalog = read(po_path)
    catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
    for name, value in HEADER.items():
        setattr(catalog, name, value)
    catalog.header_comment = (f"# Teleposture: {catalog.locale_identifier} texts of the {catalog.domain or po_path.stem} "
                              "catalogue (scripts/catalogues.py keeps it in step with the English texts).")
    catalog.obsolete.clear()
    write(po_path, catalog)


def main() -> int:
    template = agent_template()
    write(LOCALE_DIR / f"{AGENT_DOMAIN}.pot", template)
    for lang in ("fr", "ar"):
        merge(template, catalogue_path(LOCALE_DIR, AGENT_DOMAIN, lang, ".po"))
    dashboard_template = read(catalogue_path(DASHBOARD_DIR, "dashboard", "en", ".po"))
    for lang in ("fr", "ar"):
        merge(dashboard_template, catalogue_path(DASHBOARD_DIR, "dashboard", lang, ".po"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
