"""gate.openvpn's pure parts: management notifications in, quoted command arguments out; refusal texts."""

from __future__ import annotations

import pytest

from gate.messages import refusal
from gate.openvpn import MAX_PARAMETER_BYTES, NotificationParser, language, quote

# As OpenVPN 2.6 writes them with --management-client-auth (doc/management-notes.txt, ">CLIENT:").
LINES = """>INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info
>CLIENT:CONNECT,7,1
>CLIENT:ENV,untrusted_ip=192.0.2.2
>CLIENT:ENV,common_name=alice
>CLIENT:ENV,tls_digest_sha256_0=1f:10:85:7a:67:66:ec:e8:15:fc:81:5e:f6:bc:12:17:d4:64:72:03:35:5d:b6:b9:8f:d9:6f:21:e8:d8:9c:cf
>CLIENT:ENV,UV_TELEPOSTURE_LANG=fr
>CLIENT:ENV,END
SUCCESS: client-auth command succeeded
>CLIENT:ESTABLISHED,7
>CLIENT:ENV,common_name=alice
>CLIENT:ENV,END
>CLIENT:ADDRESS,7,198.51.100.2,1
>CLIENT:DISCONNECT,7
>CLIENT:ENV,bytes_received=1234
>CLIENT:ENV,END""".splitlines()


def test_parser_yields_complete_events() -> None:
    parser = NotificationParser()
    events = [e for e in (parser.feed(line) for line in LINES) if e is not None]
    assert [(e.kind, e.cid, e.kid) for e in events] == [("CONNECT", 7, 1), ("ESTABLISHED", 7, None),
                                                        ("DISCONNECT", 7, None)]
    assert events[0].env["common_name"] == "alice" and events[0].env["tls_digest_sha256_0"].startswith("1f:10")
    assert language(events[0].env, "en") == "fr"
    assert language({"UV_TELEPOSTURE_LANG": "de"}, "ar") == "ar"


def test_env_lines_outside_an_event_are_ignored() -> None:
    parser = NotificationParser()
    assert parser.feed(">CLIENT:ENV,name=x") is None
    assert parser.feed(">CLIENT:ENV,END") is None
    assert parser.feed(">CLIENT:CONNECT,x,1") is None  # not a number: not an event
    assert parser.feed(">CLIENT:ENV,END") is None


@pytest.mark.parametrize("text", ['say "hi" \\ now', "ligne\nsuivante", "é" * 400, "تشفير " * 100])
def test_quote_is_one_escaped_line_within_openvpn_limits(text: str) -> None:
    quoted = quote(text)
    assert quoted.startswith('"') and quoted.endswith('"') and "\n" not in quoted
    inner = quoted[1:-1]
    assert len(inner.encode("utf-8")) <= MAX_PARAMETER_BYTES
    assert '"' not in inner.replace('\\"', "")


def test_refusal_names_the_rule_in_the_employees_language() -> None:
    cause = {"code": "rule_failed", "rule_id": "disk-encryption",
             "title": {"en": "System disk encrypted", "fr": "Disque système chiffré", "ar": "تشفير قرص النظام"}}
    assert refusal("fr", "rule_failed", [cause]).startswith("Teleposture : accès refusé: non respecté : Disque")
    assert "تشفير قرص النظام" in refusal("ar", "rule_failed", [cause])
    assert "not linked" in refusal("xx", "unknown_certificate")
