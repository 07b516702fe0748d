"""Wire protocol: canonical JSON, signatures, envelopes, signed requests and policy bundles."""

from __future__ import annotations

import time

import pytest

from agent import protocol as p


def _payload(device_id: str = "dev-1", seq: int = 1, created: float | None = None) -> dict:
    return p.build_report(device_id=device_id, seq=seq, agent_version="0.1.0", platform="linux",
                          policy={"id": "x", "version": 1, "digest": "sha256:0"}, facts={},
                          results=[], created_at=created)


def test_canonical_json_is_sorted_and_compact() -> None:
    assert p.canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_seal_and_open() -> None:
    key = p.generate_private_key()
    env = p.seal(key, "dev-1", _payload())
    payload = p.open_envelope(env, key.public_key())
    assert payload["device_id"] == "dev-1"


@pytest.mark.parametrize("mutate, reason", [
    (lambda e, k: p.Envelope(e.device_id, e.payload.replace('"seq":1', '"seq":2'), e.signature), "bad signature"),
    (lambda e, k: p.seal(p.generate_private_key(), e.device_id, _payload()), "bad signature"),
    (lambda e, k: p.seal(k, "dev-2", _payload("dev-1")), "differs"),
    (lambda e, k: p.seal(k, "dev-1", _payload(created=time.time() + 3600)), "future"),
])
def test_open_rejects(mutate, reason) -> None:
    key = p.generate_private_key()
    env = mutate(p.seal(key, "dev-1", _payload()), key)
    with pytest.raises(p.ProtocolError, match=reason):
        p.open_envelope(env, key.public_key())


def test_uuid7_is_time_ordered_and_versioned() -> None:
    a, b = p.uuid7(1000.0), p.uuid7(2000.0)
    assert a < b and a[14] == "7"


def test_request_signature_window() -> None:
    key = p.generate_private_key()
    headers = p.sign_request(key, "dev", "GET", "/api/v1/policy", now=1_000_000)
    p.check_request_signature(key.public_key(), "GET", "/api/v1/policy", headers[p.HEADER_TIMESTAMP],
                              headers[p.HEADER_SIGNATURE], now=1_000_100)
    with pytest.raises(p.ProtocolError, match="10 minutes"):
        p.check_request_signature(key.public_key(), "GET", "/api/v1/policy", headers[p.HEADER_TIMESTAMP],
                                  headers[p.HEADER_SIGNATURE], now=1_000_000 + 601)
    with pytest.raises(p.ProtocolError, match="bad request signature"):
        p.check_request_signature(key.public_key(), "POST", "/api/v1/policy", headers[p.HEADER_TIMESTAMP],
                                  headers[p.HEADER_SIGNATURE], now=1_000_000)


def test_policy_bundle_pinned_key() -> None:
    server = p.generate_private_key()
    bundle = p.sign_policy_bundle(server, {"id": "x", "version": 2})
    policy, _ = p.open_policy_bundle(bundle, server.public_key())
    assert policy["version"] == 2
    with pytest.raises(p.ProtocolError):
        p.open_policy_bundle(bundle, p.generate_private_key().public_key())
    tampered = dict(bundle, payload=bundle["payload"].replace("2", "3"))
    with pytest.raises(p.ProtocolError):
        p.open_policy_bundle(tampered, server.public_key())
