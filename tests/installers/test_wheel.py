"""The agent's wheel, as the Linux packages ship it (build-wheelhouse.sh) and the macOS and Windows bundles
install it: compiled gettext catalogues inside, readable with the standard library alone."""

from __future__ import annotations

import gettext
import io
import zipfile
from pathlib import Path

LOCALE = "agent/i18n/locale"


def test_agent_wheel_ships_compiled_catalogues(wheelhouse: Path) -> None:
    wheels = sorted(wheelhouse.glob("teleposture-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        assert {f"{LOCALE}/fr/LC_MESSAGES/agent.mo", f"{LOCALE}/ar/LC_MESSAGES/agent.mo"} <= names
        assert not [name for name in names if name.endswith((".po", ".pot")) or name.startswith("server/")]
        arabic = gettext.GNUTranslations(io.BytesIO(wheel.read(f"{LOCALE}/ar/LC_MESSAGES/agent.mo")))
    assert arabic.info()["plural-forms"].startswith("nplurals=6;")
    assert arabic.pgettext("status.fail", "FAIL") == "غير مطابق"
