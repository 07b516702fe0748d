"""gate.decision: sign on the collector, verify offline at a gate (signature, expiry, binding)."""

from __future__ import annotations

import pytest

from agent import protocol
from gate import decision as tokens

FP_A = "AB:" * 31 + "CD"
FP_B = "12" * 32
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def server_key():
    return protocol.generate_private_key()


def make(server_key, **overrides) -> str:
    values = dict(server_key_id="k1", device_id="dev-1", device_key_id="devkey", decision="allow", since=NOW - 10,
                  now=NOW, lifetime=900, fingerprints=[FP_A])
    values.update(overrides)
    return tokens.sign(server_key, **values)


def test_a_valid_token_verifies_with_the_public_key_alone(server_key) -> None:
    key = tokens.public_jwk(server_key.public_key())
    token = make(server_key, causes=[{"code": "rule_failed", "rule_id": "disk"}], decision="deny")
    got = tokens.verify(token, key, now=NOW + 60, fingerprint=FP_A.lower().replace(":", ""))
    assert (got.device_id, got.decision, got.expires_at) == ("dev-1", "deny", NOW + 900)
    assert got.fingerprints == (FP_A.lower().replace(":", ""),)
    assert got.causes[0]["rule_id"] == "disk" and not got.allowed
    assert token.count(".") == 2  # compact JWS


@pytest.mark.parametrize(("mutate", "code"), [
    ("other certificate", "wrong_certificate"),
    ("expired", "expired"),
    ("future", "not_yet_valid"),
    ("other key", "bad_signature"),
    ("tampered payload", "bad_signature"),
    ("garbage", "malformed"),
    ("empty", "malformed"),
])
def test_refusals(server_key, mutate: str, code: str) -> None:
    key = tokens.public_jwk(server_key.public_key())
    token, now, fingerprint = make(server_key), NOW + 1, FP_A
    if mutate == "other certificate":
        fingerprint = FP_B
    elif mutate == "expired":
        now = NOW + 900 + tokens.LEEWAY_SECONDS + 1
    elif mutate == "future":
        now = NOW - tokens.LEEWAY_SECONDS - 5
    elif mutate == "other key":
        token = make(protocol.generate_private_key())
    elif mutate == "tampered payload":
        header, payload, signature = token.split(".")
        other = make(server_key, decision="allow", device_id="dev-2").split(".")[1]
        token = ".".join([header, other if other != payload else payload[::-1], signature])
    elif mutate == "garbage":
        token = "not.a.jws"
    elif mutate == "empty":
        token = ""
    with pytest.raises(tokens.DecisionError) as caught:
        tokens.verify(token, key, now=now, fingerprint=fingerprint)
    assert caught.value.code == code


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_fingerprint_must_be_sha256_hex(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        tokens.normalise_fingerprint(text)
