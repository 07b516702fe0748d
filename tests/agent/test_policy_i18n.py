"""Result messages in French and Arabic: fact labels, booleans and nested messages translated, hostile
messages bounded. That every text is translated is tests/test_catalogues.py's job."""

from __future__ import annotations

import pytest

from agent.i18n import LANGUAGES, catalogue, detect_language
from agent.i18n.command_line import CommandLineTexts
from agent.policy.messages import message, render, render_en


def test_rendering_translates_fact_labels_booleans_and_nested_messages() -> None:
    inner = message("eq_fail", fact="system_volume_encrypted", value=False, expected=True)
    graced = message("within_grace", inner=inner, until="2026-12-01T00:00:00Z")
    assert render_en(graced) == ("system volume encrypted: no (expected: yes); within the grace period until "
                                 "2026-12-01T00:00:00Z")
    assert render(graced, catalogue("fr")) == ("volume système chiffré : non (attendu : oui) ; dans le délai de grâce "
                                             "jusqu'au 2026-12-01T00:00:00Z")
    assert render(inner, catalogue("ar")) == "تشفير قرص النظام: لا (المتوقع: نعم)"
    several = message("several", items=[message("max_fail", fact="pending_updates", value=4, max=0),
                                        message("network_not_measured", network="10.0.0.0/8")])
    assert render(several, catalogue("ar")) == ("التحديثات المعلقة: 4 (الحد الأقصى المسموح به 0)؛ "
                                              "لم يتحقق فحص VPN من شبكة الإدارة 10.0.0.0/8")


def test_unknown_key_falls_back_to_english_then_to_the_key() -> None:
    assert render({"key": "no_such_key", "params": {}}, catalogue("ar")) == "no_such_key"
    assert render("plain text", catalogue("fr")) == "plain text"


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
        catalogue("de")


def _nested(depth: int) -> dict:
    msg: dict = message("eq_pass", fact="tunnel_up", value=True)
    for _ in range(depth):
        msg = message("within_grace", inner=msg, until="x")
    return msg


@pytest.mark.parametrize("lang", LANGUAGES)
def test_hostile_messages_render_bounded(lang: str) -> None:
    # results come from devices: a deep or huge message must not exhaust the renderer
    text = render(_nested(5000), catalogue(lang))
    assert text.endswith("x") and "..." in text and len(text) < 5000
    assert len(render(message("eq_pass", fact="f", value="v" * 100000), catalogue(lang))) < 1000
    weird = {"key": "eq_fail", "params": {"fact": 3, "value": {"a": [1, {"b": None}]}, "expected": "{value}"}}
    assert render(weird, catalogue(lang))


@pytest.mark.parametrize("lang, status, severity, header", [
    ("en", "FAIL", "critical", "Policy: T (p, version 3)"),
    ("fr", "ÉCHEC", "critique", "Politique : T (p, version 3)"),
    ("ar", "غير مطابق", "حرجة", "السياسة: T (p، الإصدار 3)"),
])
def test_command_line_words(lang: str, status: str, severity: str, header: str) -> None:
    texts = CommandLineTexts(lang)
    assert (texts.status("fail"), texts.severity("critical")) == (status, severity)
    assert texts.ui("policy", title="T", id="p", version=3) == header
    assert texts.rtl == (lang == "ar") and texts.status("no_such_status") == "no_such_status"
