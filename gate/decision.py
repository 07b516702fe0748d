"""Signed access decisions: the compact JWS the collector issues and every gate verifies offline.

Shared by the collector (``sign``) and the gates (``verify``); nothing here does I/O. The signature is
Ed25519 over the JWS signing input, with the collector's server key (the key agents pin at enrolment).
The algorithm name is ``Ed25519`` (RFC 9864, the fully specified successor of the polymorphic ``EdDSA``:
same signature bytes, and the JOSE library warns on ``EdDSA``).

Claims::

    iss "teleposture"   sub device id   iat/exp   jti (unique per token)
    decision "allow" | "deny"   since (when this decision began)   causes [...]   warnings [...]
    cnf {"kid": device key id, "x5t#S256": [SHA-256 hex of each network credential]}

``cnf`` binds the token to the device key and to the certificates the device connects with: a gate
refuses a token presented for any certificate not listed there.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jwk, jws
from joserfc.errors import JoseError

ALGORITHM = "Ed25519"
TOKEN_TYPE = "teleposture-decision+jwt"  # noqa: S105 (the JWS typ header, not a secret)
ISSUER = "teleposture"
ALLOW, DENY = "allow", "deny"
DEFAULT_LIFETIME_SECONDS = 900
# Clock difference tolerated between the collector and a gate.
LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 16384
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DecisionError(ValueError):
    """A token a gate must refuse. ``code`` is stable (logs, reports back, translations); str() says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Decision:
    """What a verified token says."""

    device_id: str
    decision: str
    issued_at: float
    expires_at: float
    since: float
    token_id: str
    device_key_id: str
    fingerprints: tuple[str, ...]
    causes: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[Mapping[str, Any], ...] = ()
    hostname: str = ""
    exception: Optional[Mapping[str, Any]] = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW


def normalise_fingerprint(text: str) -> str:
    """Lower-case hex without separators, from ``AB:CD:...`` (OpenVPN, openssl) or plain hex.

    Raises ValueError when the text is not a SHA-256 fingerprint (64 hex digits)."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    if cleaned.startswith("sha256"):
        cleaned = cleaned[6:].lstrip("=/")
    if not _HEX64.match(cleaned):
        raise ValueError(f"expected a SHA-256 certificate fingerprint (64 hex digits, colons allowed), "
                         f"found {text[:100]!r}")
    return cleaned


def sign(server_key: Ed25519PrivateKey, *, server_key_id: str, device_id: str, device_key_id: str,
         decision: str, since: float, now: float, lifetime: float, fingerprints: Sequence[str],
         causes: Sequence[Mapping[str, Any]] = (), warnings: Sequence[Mapping[str, Any]] = (),
         hostname: str = "", exception: Optional[Mapping[str, Any]] = None) -> str:
    """A compact JWS for one device's decision, valid from ``now`` for ``lifetime`` seconds."""
    if decision not in (ALLOW, DENY):
        raise ValueError(f"decision must be allow or deny, found {decision!r}")
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": device_id, "iat": int(now), "exp": int(now + lifetime), "jti": str(uuid.uuid4()),
        "decision": decision, "since": int(since), "causes": list(causes), "warnings": list(warnings),
        "cnf": {"kid": device_key_id, "x5t#S256": sorted(normalise_fingerprint(f) for f in fingerprints)},
        "hostname": hostname,
    }
    if exception is not None:
        claims["exception"] = dict(exception)
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return compact_jws({"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": server_key_id}, payload, server_key)


def compact_jws(header: Mapping[str, str], payload: bytes, server_key: Ed25519PrivateKey) -> str:
    """RFC 7515 compact serialization signed with Ed25519: the very bytes joserfc's ``serialize_compact``
    gives for the same header, payload and key (its header JSON: ASCII, no spaces, keys in the order
    given; Ed25519 signatures are deterministic), without its registry and key-wrapping machinery, which
    cost the collector more CPU than the signature (tests/server/test_decision_signing.py compares the two)."""
    header_segment = _b64url(json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii"))
    signing_input = header_segment + b"." + _b64url(payload)
    return (signing_input + b"." + _b64url(server_key.sign(signing_input))).decode("ascii")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def public_jwk(public_key: Ed25519PublicKey) -> jwk.OKPKey:
    """The collector's public key as a JOSE key; build it once per gate, not per token."""
    return jwk.OKPKey.import_key(public_key)


def verify(token: str, key: jwk.OKPKey, *, now: float, fingerprint: Optional[str] = None,
           leeway: float = LEEWAY_SECONDS) -> Decision:
    """The decision a token carries, after checking signature, expiry and (given a fingerprint) binding.

    Raises DecisionError with code ``malformed``, ``bad_signature``, ``expired``, ``not_yet_valid`` or
    ``wrong_certificate``. A ``deny`` decision verifies fine: refusing is the caller's job."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise DecisionError("malformed", "the decision is empty or longer than a decision can be")
    try:
        obj = jws.deserialize_compact(token.strip(), key, algorithms=[ALGORITHM])
    except JoseError as exc:
        code = "bad_signature" if exc.error == "bad_signature" else "malformed"
        raise DecisionError(code, f"the decision's signature does not verify with the collector's key "
                                  f"({exc.error})") from exc
    except ValueError as exc:  # not base64url / not JSON in the header
        raise DecisionError("malformed", f"not a compact JWS: {exc}") from exc
    if obj.headers().get("typ") != TOKEN_TYPE:
        raise DecisionError("malformed", f"not an access decision (typ {obj.headers().get('typ')!r})")
    try:
        claims = json.loads(obj.payload)
        decision = Decision(
            device_id=str(claims["sub"]), decision=str(claims["decision"]), issued_at=float(claims["iat"]),
            expires_at=float(claims["exp"]), since=float(claims["since"]), token_id=str(claims["jti"]),
            device_key_id=str(claims["cnf"]["kid"]),
            fingerprints=tuple(str(f) for f in claims["cnf"]["x5t#S256"]),
            causes=tuple(claims.get("causes") or ()), warnings=tuple(claims.get("warnings") or ()),
            hostname=str(claims.get("hostname", "")), exception=claims.get("exception"), claims=claims)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecisionError("malformed", f"the decision's claims are incomplete: {exc}") from exc
    if claims.get("iss") != ISSUER or decision.decision not in (ALLOW, DENY):
        raise DecisionError("malformed", "the decision has an unknown issuer or outcome")
    if now > decision.expires_at + leeway:
        raise DecisionError("expired", f"the decision expired {int(now - decision.expires_at)} s ago")
    if now + leeway < decision.issued_at:
        raise DecisionError("not_yet_valid", "the decision was issued in the future (check the clocks)")
    if fingerprint is not None and normalise_fingerprint(fingerprint) not in decision.fingerprints:
        raise DecisionError("wrong_certificate", "the decision was issued for another certificate")
    return decision
