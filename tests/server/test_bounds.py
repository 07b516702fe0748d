"""Protocol bounds (server/bounds.py): an envelope outside them is rejected alone, the batch goes on, the
answer is the same on SQLite and PostgreSQL, and no input gives a 5xx."""

from __future__ import annotations

import json
from typing import Any, Callable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import protocol
from benchmarks.collector_sim import SimDevice
from server import bounds
from tests.server.conftest import Collector, snapshot


def _signed(device: SimDevice, change: Callable[[dict[str, Any]], None]) -> dict[str, str]:
    """The device's next report, changed by ``change`` and signed again with its real key."""
    payload = json.loads(device.report()["payload"])
    change(payload)
    assert device.device_id
    # json cannot encode 1,000 levels: splice them into the canonical text
    text = protocol.canonical_json(payload).replace(f'"{DEEP}"', '{"a":' * 1000 + '"x"' + "}" * 1000)
    return protocol.Envelope(device.device_id, text, protocol.sign(device.key, text)).to_json()


DEEP = "nested-1000-levels-here"


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        target = payload
        *parents, last = path.split(".")
        for name in parents:
            target = target[name]
        target[last] = value
    return change


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("seq 2^63", _set("seq", 2 ** 63), "seq must be below 2^63"),
    ("seq 2^64-1", _set("seq", 2 ** 64 - 1), "seq must be below 2^63"),
    ("NUL in a reason", _set("facts.disk_encryption.reason", "bad\x00reason"), "NUL character"),
    ("NUL in evidence", _set("facts.firewall.evidence", ["ok", "\x00"]), "NUL character"),
    ("NUL in agent version", _set("agent.version", "1.0\x00"), "NUL character"),
    ("NUL in a key", _set("facts.disk_encryption.facts", {"a\x00": 1}), "object key holds a NUL"),
    ("agent version of 51", _set("agent.version", "1" * 51), "agent.version is longer than 50"),
    ("agent version not text", _set("agent.version", 12), "agent.version must be a string"),
    ("platform of 17", _set("agent.platform", "l" * 17), "agent.platform is longer than 16"),
    ("report id of 65", _set("report_id", "r" * 65), "report_id is longer than 64"),
    ("nested 256", _set("facts.disk_encryption.facts", _nested(256)), "nested more than 32 levels"),
    ("nested 1000", _set("facts.disk_encryption.facts", DEEP), "nested more than 32 levels"),
    ("nested lists 40", _set("results", [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
     "nested more than 32 levels"),
    ("long string", _set("facts.vpn.reason", "v" * (bounds.MAX_STRING + 1)), "string is longer than 16384"),
    ("long key", _set("facts.vpn.facts", {"k" * 201: 1}), "object key is longer than 200"),
    ("integer 2^63", _set("facts.patches.facts", {"pending_security_updates": 2 ** 63}), "64-bit signed range"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_out_of_bounds_envelope_is_rejected_alone(collector: Collector, case: tuple[str, Any, str]) -> None:
    _name, change, words = case
    device, other = collector.enroll(), collector.enroll()
    bad = _signed(device, change)
    good_other, good_same = other.report(), device.report()
    before = snapshot(collector.db)
    response = collector.client.post("/api/v1/reports", json={"envelopes": [bad, good_other, good_same]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["status"].startswith("rejected: ") and words in results[0]["reason"], results[0]
    assert "\x00" not in response.text and "vvvvvvvv" not in response.text, "reasons never quote the value"
    # the rest of the batch went on, including a later report of the same device
    assert [r["status"] for r in results[1:]] == ["accepted", "accepted"]
    assert snapshot(collector.db) != before
    # the bad envelope on its own changes nothing and is refused the same way again (never 5xx / retry)
    before = snapshot(collector.db)
    again = collector.client.post("/api/v1/reports", json={"envelopes": [bad]})
    assert again.status_code == 200 and again.json()["results"][0]["reason"] == results[0]["reason"]
    assert snapshot(collector.db) == before


def test_largest_allowed_values_are_stored(collector: Collector) -> None:
    device = collector.enroll()

    def at_the_limits(payload: dict[str, Any]) -> None:
        payload["seq"] = bounds.MAX_SEQ
        payload["agent"]["version"] = "9" * 50
        payload["facts"]["vpn"]["evidence"] = ["é" * bounds.MAX_STRING]
        payload["facts"]["disk_encryption"]["facts"]["extra"] = _nested(bounds.MAX_DEPTH - 5)

    answer = collector.send(_signed(device, at_the_limits))
    assert answer["results"][0]["status"] == "accepted", answer
    assert collector.send(device.report())["results"][0]["status"] == "duplicate"  # seq went to the top


@pytest.mark.parametrize("device_id", ["x\x00", "a" * 37, "../../etc", "\u202edevice"])
def test_malformed_device_id_is_rejected_without_echo(collector: Collector, device_id: str) -> None:
    device = collector.enroll()
    envelope = {**device.report(), "device_id": device_id}
    response = collector.client.post("/api/v1/reports", json={"envelopes": [envelope, device.report()]})
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["status"].startswith("rejected: device_id must be") and first["device_id"] is None
    assert second["status"] == "accepted"


def test_lone_surrogate_and_nul_in_enrolment_are_refused_without_echo(collector: Collector) -> None:
    token = collector.enroll_token()
    before = snapshot(collector.db)
    for field, value in [("hostname", "ab\udc80"), ("hostname", "a\x00b"), ("platform", "\ud800"),
                         ("machine_id", "m\x00")]:
        body = SimDevice.numbered(3).enroll_body(token)
        body["device"][field] = value
        # json.dumps escapes the lone surrogate as \udc80, as a hostile client would send it
        response = collector.client.post("/api/v1/enroll", content=json.dumps(body),
                                         headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 422), (field, response.status_code, response.text)
        text = response.text
        assert "\\udc80" not in text and "\\ud800" not in text and "\\u0000" not in text, text
        assert field in text, "the error names the field"
    assert snapshot(collector.db) == before


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_values = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                       max_leaves=60)


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(facts=_values, version=_values, seq=st.integers(min_value=1, max_value=2 ** 64))
def _fuzz(collector: Collector, device: SimDevice, facts: Any, version: Any, seq: int) -> None:
    def change(payload: dict[str, Any]) -> None:
        payload["facts"]["disk_encryption"]["facts"] = facts
        payload["agent"]["version"] = version
        payload["seq"] = seq

    response = collector.client.post("/api/v1/reports", json={"envelopes": [_signed(device, change)]})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"].split(":")[0] in ("accepted", "duplicate", "rejected")


def test_signed_fuzzed_payloads_never_give_5xx(collector: Collector) -> None:
    _fuzz(collector, collector.enroll())


@pytest.mark.parametrize("inner,expected", [
    ({"a": {"b": {"c": "x\x00"}}}, "payload.facts.t: a string holds a NUL"),
    ({"a": [{"b": ["ok", "\x00"]}]}, "payload.facts.t: a string holds a NUL"),
    ({"a": {"b": {"k" * 201: 1}}}, "object key is longer"),
    ({"a": {"b\x00": 1}}, "object key holds a NUL"),
    ({"a": [[{"n": 2 ** 63}]]}, "outside the 64-bit"),
    ({"a": {"s": "v" * 16_385}}, "longer than 16384"),
], ids=["nul-deep", "nul-in-list", "long-key-deep", "nul-key", "int-deep", "long-string"])
def test_check_payload_with_its_text_finds_what_the_walk_finds(inner: Any, expected: str) -> None:
    """The payload text lets the walk skip searching for NUL only when the text has no \\u0000 escape."""
    payload = {"seq": 1, "report_id": "r", "agent": {}, "policy": {}, "facts": {"t": inner}}
    text = orjson.dumps(payload).decode()
    for source in (text, None):
        with pytest.raises(bounds.BoundsError, match=expected):
            bounds.check_payload(orjson.loads(text), source)
    bounds.check_payload({**payload, "facts": {"t": {"a": {"b": ["fine", 1, 2.5, None, True]}}}}, "{}")


def _walk_error(value: Any) -> str | None:
    """The walk's verdict on ``value`` (no text given): its error, or None."""
    try:
        bounds.check_payload({"seq": 1, "report_id": "r", "agent": {}, "policy": {}, "facts": {"t": value}})
    except bounds.BoundsError as exc:
        return str(exc)
    return None


def _verdicts(text: str) -> tuple[bool, str | None, str | None]:
    """(the text shortcut's proof, check_payload's error with the text, the walk's error on what the text
    parses to: orjson gives a float for an integer beyond 64 bits)."""
    full = '{"agent":{},"facts":{"t":' + text + '},"policy":{},"report_id":"r","seq":1}'
    payload = orjson.loads(full)
    try:
        bounds.check_payload(payload, full)
        with_text = None
    except bounds.BoundsError as exc:
        with_text = str(exc)
    return bounds._text_within_bounds(full), with_text, _walk_error(payload["facts"]["t"])


def _lists(depth: int, inner: Any = 1) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


@pytest.mark.parametrize("value,proven,error", [
    # what real reports hold: proven from the text alone
    ({"evidence": ["ss: [::]:22 {sshd}", "a \"quoted\" path C:\\Windows\\", "line\nbreak"], "n": -(10 ** 18 - 1)},
     True, None),
    ({"evidence": ["e" * 200], "k" * 200: 2.5e300, "é": "é" * 100}, True, None),
    # the shortcut cannot prove these: the walk decides, and accepts them
    ({"n": 2 ** 63 - 1, "m": -(2 ** 63)}, False, None),
    ({"evidence": ["v" * bounds.MAX_STRING]}, False, None),
    ({"s": "é" * 101}, False, None),  # 202 bytes of UTF-8 for 101 characters
    (_lists(bounds.MAX_DEPTH - 3), False, None),  # 31 levels of lists: one level per round
    # outside the bounds: the walk's errors, whatever the text holds
    ({"n": 2 ** 63}, False, "outside the 64-bit"),
    ({'"' * 202: 1}, False, "object key is longer"),  # escaped quotes would otherwise split the key
    ({"\\" * 201: 1}, False, "object key is longer"),
    ({"k" * 150 + "\n" * 51: 1}, False, "object key is longer"),
    ({"s": "a\x00b"}, False, "NUL character"),
    ({"s": "v" * (bounds.MAX_STRING + 1)}, False, "longer than 16384"),
    # brackets inside strings cannot hide nesting
    (_lists(40, "]" * 40), False, "nested more than 32"),
    (_lists(40, "[" * 40 + "]" * 80), False, "nested more than 32"),
    ({"a": _lists(40), "b": "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"}, False, "nested more than 32"),
], ids=["report-like", "at-200", "int64-ends", "long-value", "utf8-bytes", "31-lists", "int-2^63",
        "key-of-quotes", "key-of-backslashes", "key-with-escapes", "nul", "long-string", "brackets-in-string",
        "bracket-pairs-in-string", "brackets-elsewhere"])
def test_text_shortcut_proves_only_what_the_walk_accepts(value: Any, proven: bool, error: str | None) -> None:
    text = orjson.dumps(value).decode()
    shortcut, with_text, walked = _verdicts(text)
    assert shortcut is proven
    assert with_text == walked
    assert (walked is None) if error is None else (walked is not None and error in walked)


def test_text_shortcut_proves_a_real_report_and_tolerates_insignificant_whitespace(collector: Collector) -> None:
    device = collector.enroll()
    text = device.report()["payload"]
    assert bounds._text_within_bounds(text)
    assert bounds._text_within_bounds(json.dumps(json.loads(text), indent=2))
    assert not bounds._text_within_bounds(text.replace('"facts":{', '"facts":{"' + "k" * 201 + '" : 1,', 1))


_json_text = st.text(alphabet=st.sampled_from('ab"\\[]{}\n\x00é0123456789'), max_size=250)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 64), max_value=2 ** 64) | _json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_text, inner, max_size=3), max_leaves=80)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(value=_json_values, depth=st.integers(min_value=0, max_value=40))
def test_text_shortcut_never_proves_a_value_the_walk_refuses(value: Any, depth: int) -> None:
    value = _lists(depth, value)
    for text in (json.dumps(value, ensure_ascii=False, separators=(",", ":")), json.dumps(value),
                 json.dumps(value, indent=1)):
        shortcut, with_text, walked = _verdicts(text)
        assert with_text == walked
        assert not (shortcut and walked is not None)
