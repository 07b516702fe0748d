"""Transport: URL rules, Retry-After, backoff, verdict parsing."""

from __future__ import annotations

import random

import pytest

from agent.service.transport import (
    Backoff,
    ConfigurationError,
    RetryableError,
    Transport,
    check_url,
    parse_retry_after,
    parse_verdicts,
)


@pytest.mark.parametrize("url, allow_http, ok", [
    ("https://collector.example.org/", False, True),
    ("http://127.0.0.1:8080", False, False),
    ("http://127.0.0.1:8080", True, True),
    ("http://collector.example.org", True, True),
    ("ftp://collector.example.org", True, False),
    ("https://", False, False),
    ("https://c.example.org/?x=1", False, False),
])
def test_url_rules(url: str, allow_http: bool, ok: bool) -> None:
    if ok:
        assert check_url(url, allow_http) == url.rstrip("/")
    else:
        with pytest.raises(ConfigurationError):
            check_url(url, allow_http)


def test_ca_file_must_hold_a_certificate(tmp_path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("hello")
    with pytest.raises(ConfigurationError, match="no PEM certificate"):
        Transport("https://c.example.org", ca_file=str(bad))
    with pytest.raises(ConfigurationError, match="cannot read CA file"):
        Transport("https://c.example.org", ca_file=str(tmp_path / "none.pem"))


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    ("Sun, 29 Nov 2026 07:00:30 GMT", 30.0),
    ("Sun, 29 Nov 2026 06:00:00 GMT", 0.0),
    ("99999999", 6 * 3600.0),
    ("soon", None),
    (None, None),
])
def test_retry_after(value, expected) -> None:
    from email.utils import parsedate_to_datetime

    now = parsedate_to_datetime("Sun, 29 Nov 2026 07:00:00 GMT").timestamp()
    assert parse_retry_after(value, now=now) == expected


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(base=2.0, cap=60.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(60.0, 2.0 * 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)
    assert 30.0 <= backoff.next_delay(retry_after=30.0) <= 32.0
    backoff.reset()
    assert backoff.next_delay() <= 2.0


def test_verdicts_in_every_documented_shape() -> None:
    verdicts = parse_verdicts({"results": ["accepted", {"status": "duplicate"},
                                          {"status": "rejected: bad signature"},
                                          {"result": "rejected", "reason": "unknown device"}]}, 4)
    assert [(v.status, v.reason) for v in verdicts] == [
        ("accepted", ""), ("duplicate", ""), ("rejected", "bad signature"), ("rejected", "unknown device")]


@pytest.mark.parametrize("answer", [[], {"results": ["accepted"]}, {"results": ["maybe", "accepted"]},
                                    {"results": [1, 2]}])
def test_unreadable_verdicts_are_retryable(answer) -> None:
    with pytest.raises(RetryableError):
        parse_verdicts(answer, 2)


def test_verdicts_carry_where_the_collector_stands() -> None:
    verdicts = parse_verdicts({"results": [
        {"status": "accepted", "seq": 7, "last_seq": 7},
        {"status": "duplicate", "seq": 3, "last_seq": 7, "last_report_id": "r7"},
        {"status": "duplicate", "last_seq": True, "last_report_id": 5},  # wrong types: ignored
    ]}, 3)
    assert (verdicts[0].last_seq, verdicts[0].last_report_id) == (7, None)
    assert (verdicts[1].last_seq, verdicts[1].last_report_id) == (7, "r7")
    assert (verdicts[2].last_seq, verdicts[2].last_report_id) == (None, None)


@pytest.mark.parametrize("body, headers, expected", [
    ({"server_time": 1700000000.25}, {"Date": "Tue, 14 Nov 2023 22:13:20 GMT"}, 1700000000.25),
    (None, {"X-Teleposture-Server-Time": "1700000001.5"}, 1700000001.5),
    (None, {"Date": "Tue, 14 Nov 2023 22:13:20 GMT"}, 1700000000.0),
    (None, {"Date": "garbage"}, None),
    (None, {}, None),
], ids=["body", "header", "http-date", "bad-date", "none"])
def test_server_clock_from_an_answer(body, headers, expected) -> None:
    import requests

    from agent.service.transport import server_clock

    response = requests.Response()
    response.headers.update(headers)
    assert server_clock(response, body) == expected
