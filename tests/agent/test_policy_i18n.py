"""Catalogs: every result message and word exists in French and Arabic with the same placeholders."""

from __future__ import annotations

import json

import pytest

from agent.i18n import CATALOG_DIR, LANGUAGES, catalog, detect_language
from agent.policy.messages import FACT_LABELS_EN, TEMPLATES_EN, message, placeholders, render_en


@pytest.mark.parametrize("lang", ["fr", "ar"])
def test_every_message_is_translated_with_the_same_placeholders(lang: str) -> None:
    data = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    assert set(data["messages"]) == set(TEMPLATES_EN)
    for key, template in TEMPLATES_EN.items():
        assert placeholders(data["messages"][key]) == placeholders(template), (lang, key)
    assert set(data["facts"]) == set(FACT_LABELS_EN)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_ui_words_exist_in_every_language(lang: str) -> None:
    reference = json.loads((CATALOG_DIR / "en.json").read_text(encoding="utf-8"))
    data = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    for section in ("words", "status", "severity", "ui"):
        assert set(data[section]) == set(reference[section]), (lang, section)
        for key, text in reference[section].items():
            if section == "ui":
                assert placeholders(data[section][key]) == placeholders(text), (lang, key)


def test_rendering_translates_fact_labels_booleans_and_nested_messages() -> None:
    inner = message("eq_fail", fact="system_volume_encrypted", value=False, expected=True)
    graced = message("within_grace", inner=inner, until="2026-12-01T00:00:00Z")
    assert render_en(graced) == ("system volume encrypted: no (expected: yes); within the grace period until "
                                 "2026-12-01T00:00:00Z")
    assert catalog("fr").message(graced) == ("volume système chiffré : non (attendu : oui) ; dans le délai de grâce "
                                             "jusqu'au 2026-12-01T00:00:00Z")
    assert catalog("ar").message(inner) == "تشفير قرص النظام: لا (المتوقع: نعم)"
    several = message("several", items=[message("max_fail", fact="pending_updates", value=4, max=0),
                                        message("network_not_measured", network="10.0.0.0/8")])
    assert catalog("ar").message(several) == ("التحديثات المعلقة: 4 (الحد الأقصى المسموح به 0)؛ "
                                              "لم يتحقق فحص VPN من شبكة الإدارة 10.0.0.0/8")


def test_unknown_key_falls_back_to_english_then_to_the_key() -> None:
    assert catalog("ar").message({"key": "no_such_key", "params": {}}) == "no_such_key"
    assert catalog("fr").message("plain text") == "plain text"


@pytest.mark.parametrize("env, lang", [
    ({"LANG": "fr_FR.UTF-8"}, "fr"),
    ({"LANG": "fr_FR.UTF-8", "LC_ALL": "ar_MA.UTF-8"}, "ar"),
    ({"LC_MESSAGES": "ar_MA", "LANG": "en_US.UTF-8"}, "ar"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({}, "en"),
    ({"LC_ALL": "", "LANG": "fr_CA"}, "fr"),
])
def test_language_from_the_locale(env: dict, lang: str) -> None:
    assert detect_language(env) == lang


def test_unsupported_language_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of en, fr, ar"):
        catalog("de")


def _nested(depth: int) -> dict:
    msg: dict = message("eq_pass", fact="tunnel_up", value=True)
    for _ in range(depth):
        msg = message("within_grace", inner=msg, until="x")
    return msg


@pytest.mark.parametrize("lang", LANGUAGES)
def test_hostile_messages_render_bounded(lang: str) -> None:
    # results come from devices: a deep or huge message must not exhaust the renderer
    text = catalog(lang).message(_nested(5000))
    assert text.endswith("x") and "..." in text and len(text) < 5000
    assert len(catalog(lang).message(message("eq_pass", fact="f", value="v" * 100000))) < 1000
    weird = {"key": "eq_fail", "params": {"fact": 3, "value": {"a": [1, {"b": None}]}, "expected": "{value}"}}
    assert catalog(lang).message(weird)
