"""The collector signs access decisions with `cryptography` directly (gate.decision.compact_jws): the tokens
must be byte for byte those joserfc's ``jws.serialize_compact`` gives, which the gates verify with."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jwk, jws

from agent import protocol
from gate import decision as tokens

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def server_key():
    return protocol.generate_private_key()


def joserfc_compact(header: dict[str, str], payload: bytes, server_key) -> str:
    return jws.serialize_compact(dict(header), payload, jwk.OKPKey.import_key(server_key),
                                 algorithms=[tokens.ALGORITHM])


def segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.mark.parametrize("payload", [
    b'{"a":1}',  # base64 without padding
    b'{"ab":1}',  # one "=" trimmed
    b'{"abc":1}',  # two "=" trimmed
    '{"title":{"ar":"تشفير قرص النظام","fr":"Disque système chiffré"}}'.encode(),
    b"",
], ids=["len0mod3", "len2mod3", "len1mod3", "utf-8", "empty"])
@pytest.mark.parametrize("header", [
    {"alg": tokens.ALGORITHM, "typ": tokens.TOKEN_TYPE, "kid": "0123456789abcdef"},
    {"kid": "clé", "alg": tokens.ALGORITHM},  # key order kept, non-ASCII escaped
], ids=["decision-header", "reordered-non-ascii"])
def test_compact_jws_is_joserfc_serialize_compact(server_key, header: dict[str, str], payload: bytes) -> None:
    assert tokens.compact_jws(header, payload, server_key) == joserfc_compact(header, payload, server_key)


def test_a_signed_decision_is_the_token_joserfc_gives_and_verifies(server_key) -> None:
    causes = [{"code": "rule_failed", "rule_id": "disk-encryption", "severity": "critical", "status": "fail",
               "since": NOW - 3600.5, "title": {"en": "System disk encrypted", "ar": "تشفير قرص النظام"}}]
    warnings = [{"code": "within_grace", "rule_id": "os-updates", "severity": "high", "status": "warn",
                 "since": NOW - 60}]
    token = tokens.sign(server_key, server_key_id=protocol.key_id(protocol.public_key_b64(server_key)),
                        device_id="0190aaaa-bbbb-7ccc-8ddd-000000000001", device_key_id="devkey", decision="allow",
                        since=NOW - 7200, now=NOW, lifetime=900, fingerprints=["AB:" * 31 + "CD", "12" * 32],
                        causes=causes, warnings=warnings, hostname="laptop-été",
                        exception={"reason": "travel", "expires_at": NOW + 86400, "created_by": "admin"})
    header = json.loads(segment(token, 0))
    assert list(header) == ["alg", "typ", "kid"] and header["alg"] == "Ed25519"
    assert header["typ"] == tokens.TOKEN_TYPE
    # The same header and payload through joserfc: the same string, signature included (Ed25519 is
    # deterministic), so the gates see exactly the tokens they saw before.
    assert token == joserfc_compact(header, segment(token, 1), server_key)
    got = tokens.verify(token, tokens.public_jwk(server_key.public_key()), now=NOW + 1, fingerprint="12" * 32)
    assert got.allowed and got.hostname == "laptop-été" and got.causes[0]["title"]["ar"] == "تشفير قرص النظام"
    assert got.exception is not None and got.exception["reason"] == "travel"
