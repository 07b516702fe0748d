"""Wire protocol v1: canonical JSON, Ed25519 keys and signatures, report envelopes.

Shared by the agent and the collector (the collector may import this module).
The signature always covers the exact bytes of the canonical payload text; the collector verifies
it before it parses anything else of the payload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.files import atomic_write

REPORT_SCHEMA = "teleposture/report/v1"
POLICY_BUNDLE_SCHEMA = "teleposture/policy-bundle/v1"
MAX_CLOCK_SKEW_SECONDS = 600
HEADER_DEVICE = "X-Teleposture-Device"
HEADER_TIMESTAMP = "X-Teleposture-Timestamp"
HEADER_SIGNATURE = "X-Teleposture-Signature"


class ProtocolError(ValueError):
    """Something on the wire is not what protocol v1 says; the message says what."""


def canonical_json(obj: Any) -> str:
    """UTF-8 text, sorted keys, no insignificant whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str = "value") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise ProtocolError(f"{what} is not valid base64") from exc


# -- keys --------------------------------------------------------------------------------------

def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64encode(raw)


def load_public_key(text: str) -> Ed25519PublicKey:
    raw = b64decode(text, "public key")
    if len(raw) != 32:
        raise ProtocolError(f"an Ed25519 public key is 32 bytes, found {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(public_key_text: str) -> str:
    """A short stable name for a public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(b64decode(public_key_text, "public key")).hexdigest()[:16]


def save_private_key(private_key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key as PKCS#8 PEM, readable only by its owner (0600), atomically."""
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    atomic_write(path, pem, mode=0o600)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ProtocolError(f"{path}: not an Ed25519 private key")
    return key


def sign(private_key: Ed25519PrivateKey, text: str) -> str:
    return b64encode(private_key.sign(text.encode("utf-8")))


def verify(public_key: Ed25519PublicKey, text: str, signature_b64: str) -> bool:
    return _verify_bytes(public_key, text.encode("utf-8"), signature_b64)


def _verify_bytes(public_key: Ed25519PublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        signature = b64decode(signature_b64, "signature")
    except ProtocolError:
        return False
    if len(signature) != 64:
        return False
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


# -- time and ids ------------------------------------------------------------------------------

def rfc3339(ts: Optional[float] = None) -> str:
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 time; raises ProtocolError on anything else."""
    if not isinstance(text, str):
        raise ProtocolError("time must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProtocolError(f"time {text[:40]!r} is not RFC 3339") from exc
    if moment.tzinfo is None:
        raise ProtocolError(f"time {text[:40]!r} has no time zone")
    return moment.timestamp()


def uuid7(ts: Optional[float] = None) -> str:
    """A UUIDv7 (time-ordered): 48-bit milliseconds, version 7, 74 random bits."""
    millis = int((time.time() if ts is None else ts) * 1000) & ((1 << 48) - 1)
    rand = secrets.randbits(74)
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


# -- envelopes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Envelope:
    device_id: str
    payload: str
    signature: str

    def to_json(self) -> Dict[str, str]:
        return {"device_id": self.device_id, "payload": self.payload, "signature": self.signature}

    @classmethod
    def from_json(cls, data: Any) -> Envelope:
        if not isinstance(data, dict):
            raise ProtocolError("an envelope must be an object with device_id, payload and signature")
        values = {}
        for name in ("device_id", "payload", "signature"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ProtocolError(f"envelope field {name!r} must be a non-empty string")
            values[name] = value
        return cls(**values)


def seal(private_key: Ed25519PrivateKey, device_id: str, payload: Mapping[str, Any]) -> Envelope:
    text = canonical_json(dict(payload))
    return Envelope(device_id=device_id, payload=text, signature=sign(private_key, text))


def build_report(*, device_id: str, seq: int, agent_version: str, platform: str,
                 policy: Mapping[str, Any], facts: Mapping[str, Any], results: Any,
                 created_at: Optional[float] = None, extra: Optional[Mapping[str, Any]] = None,
                 ) -> Dict[str, Any]:
    payload: Dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "report_id": uuid7(created_at),
        "device_id": device_id,
        "seq": seq,
        "created_at": rfc3339(created_at),
        "agent": {"version": agent_version, "platform": platform},
        "policy": dict(policy),
        "facts": dict(facts),
        "results": results,
    }
    if extra:
        payload.update(extra)
    return payload


def _loads_utf8(data: bytes) -> Any:
    # json.loads(bytes) would also accept a leading byte-order mark, which the payload text may not carry
    return json.loads(data.decode("utf-8"))


def open_envelope(envelope: Envelope, public_key: Ed25519PublicKey, now: Optional[float] = None,
                  loads: Callable[[bytes], Any] = _loads_utf8) -> Dict[str, Any]:
    """Verify the signature over the exact payload text, then parse and check the payload header.

    ``loads`` parses the payload's UTF-8 bytes, the very bytes verified (the collector passes orjson.loads,
    which raises ValueError like json's; a parser of ``str`` would make the text be encoded twice).
    Raises ProtocolError with the rejection reason.
    """
    data = envelope.payload.encode("utf-8")
    if not _verify_bytes(public_key, data, envelope.signature):
        raise ProtocolError("bad signature")
    try:
        payload = loads(data)
    except ValueError as exc:
        raise ProtocolError("payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise ProtocolError("payload must be a JSON object")
    if payload.get("schema") != REPORT_SCHEMA:
        raise ProtocolError(f"payload schema must be {REPORT_SCHEMA}")
    if payload.get("device_id") != envelope.device_id:
        raise ProtocolError("payload device_id differs from the envelope's")
    seq = payload.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ProtocolError("seq must be a positive integer")
    created = parse_rfc3339(payload.get("created_at"))  # type: ignore[arg-type]
    current = time.time() if now is None else now
    if created > current + MAX_CLOCK_SKEW_SECONDS:
        raise ProtocolError("created_at is more than 10 minutes in the future")
    for name in ("report_id",):
        if not isinstance(payload.get(name), str):
            raise ProtocolError(f"payload field {name!r} must be a string")
    for name in ("facts", "agent", "policy"):
        if not isinstance(payload.get(name), dict):
            raise ProtocolError(f"payload field {name!r} must be an object")
    if not isinstance(payload.get("results"), list):
        raise ProtocolError("payload field 'results' must be a list")
    return payload


# -- signed requests (agent -> collector, e.g. GET /api/v1/policy) ------------------------------

def request_signing_text(method: str, path: str, timestamp: str) -> str:
    return f"{method.upper()}\n{path}\n{timestamp}"


def sign_request(private_key: Ed25519PrivateKey, device_id: str, method: str, path: str,
                 now: Optional[float] = None) -> Dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        HEADER_DEVICE: device_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(private_key, request_signing_text(method, path, timestamp)),
    }


def check_request_signature(public_key: Ed25519PublicKey, method: str, path: str, timestamp: str,
                            signature: str, now: Optional[float] = None) -> None:
    """Raises ProtocolError unless the request signature is valid and fresh (±10 min)."""
    try:
        moment = int(timestamp)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("timestamp header must be integer epoch seconds") from exc
    current = time.time() if now is None else now
    if abs(current - moment) > MAX_CLOCK_SKEW_SECONDS:
        raise ProtocolError("request timestamp is more than 10 minutes off the collector's clock")
    if not verify(public_key, request_signing_text(method, path, timestamp), signature):
        raise ProtocolError("bad request signature")


# -- re-enrolment proof (agent -> collector) ----------------------------------------------------

def reenrol_signing_text(previous_device_id: str, new_public_key: str, timestamp: str) -> str:
    return f"teleposture/reenrol/v1\n{previous_device_id}\n{new_public_key}\n{timestamp}"


def reenrol_proof(previous_key: Ed25519PrivateKey, previous_device_id: str, new_public_key: str,
                  now: Optional[float] = None) -> Dict[str, str]:
    """The old device key's consent to hand this machine to ``new_public_key`` (sent with the enrolment):
    the collector then replaces the old device at once instead of holding the new one for approval."""
    timestamp = str(int(time.time() if now is None else now))
    return {"device_id": previous_device_id, "timestamp": timestamp,
            "signature": sign(previous_key, reenrol_signing_text(previous_device_id, new_public_key, timestamp))}


def check_reenrol_proof(previous_public_key: Ed25519PublicKey, proof: Mapping[str, str], new_public_key: str,
                        now: Optional[float] = None) -> None:
    """Raises ProtocolError unless ``proof`` is the old key's fresh (±10 min) signature over the new key."""
    try:
        moment = int(proof["timestamp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("re-enrolment proof: timestamp must be integer epoch seconds") from exc
    current = time.time() if now is None else now
    if abs(current - moment) > MAX_CLOCK_SKEW_SECONDS:
        raise ProtocolError("re-enrolment proof: timestamp is more than 10 minutes off the collector's clock")
    text = reenrol_signing_text(str(proof.get("device_id", "")), new_public_key, str(proof["timestamp"]))
    if not verify(previous_public_key, text, str(proof.get("signature", ""))):
        raise ProtocolError("re-enrolment proof: signature does not verify with the previous device key")


# -- policy bundles (collector -> agent) --------------------------------------------------------

def sign_policy_bundle(server_key: Ed25519PrivateKey, policy_json: Mapping[str, Any]) -> Dict[str, str]:
    text = canonical_json(dict(policy_json))
    return {"payload": text, "signature": sign(server_key, text), "key_id": key_id(public_key_b64(server_key))}


ASSIGNMENT_SCHEMA = "teleposture/assignment/v1"


def sign_assignment(server_key: Ed25519PrivateKey, device_id: str, payload_text: str, counter: int
                    ) -> Dict[str, str]:
    """The fields a bundle gains for one device: which device, which policy (digest of the payload text)
    and the server's assignment counter, signed together (server/store/assignment.py)."""
    text = canonical_json({"schema": ASSIGNMENT_SCHEMA, "device_id": device_id, "digest": digest(payload_text),
                           "counter": counter})
    return {"assignment": text, "assignment_signature": sign(server_key, text)}


def open_assignment(bundle: Mapping[str, Any], server_public_key: Ed25519PublicKey, device_id: str
                    ) -> Optional[int]:
    """The assignment counter of a bundle for ``device_id``, None when the bundle has none (a collector
    older than the counter). Raises ProtocolError when it is present but forged, for another device or
    for another policy than the bundle's payload."""
    text, signature = bundle.get("assignment"), bundle.get("assignment_signature")
    if text is None and signature is None:
        return None
    if not isinstance(text, str) or not isinstance(signature, str) or not verify(server_public_key, text, signature):
        raise ProtocolError("policy bundle assignment does not verify with the pinned server key")
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise ProtocolError("policy bundle assignment is not JSON") from exc
    if not isinstance(fields, dict) or fields.get("schema") != ASSIGNMENT_SCHEMA:
        raise ProtocolError(f"policy bundle assignment schema must be {ASSIGNMENT_SCHEMA}")
    if fields.get("device_id") != device_id:
        raise ProtocolError("policy bundle was assigned to another device")
    if fields.get("digest") != digest(str(bundle.get("payload", ""))):
        raise ProtocolError("policy bundle assignment names another policy than the bundle holds")
    counter = fields.get("counter")
    if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
        raise ProtocolError("policy bundle assignment counter must be a non-negative integer")
    return counter


def open_policy_bundle(bundle: Any, server_public_key: Ed25519PublicKey) -> Tuple[Dict[str, Any], str]:
    """Verify a policy bundle with the pinned server key; returns (policy JSON, payload text)."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("payload"), str) \
            or not isinstance(bundle.get("signature"), str):
        raise ProtocolError("a policy bundle is an object with string payload and signature")
    if not verify(server_public_key, bundle["payload"], bundle["signature"]):
        raise ProtocolError("policy bundle signature does not verify with the pinned server key")
    try:
        policy = json.loads(bundle["payload"])
    except ValueError as exc:
        raise ProtocolError("policy bundle payload is not JSON") from exc
    if not isinstance(policy, dict):
        raise ProtocolError("policy bundle payload must be an object")
    return policy, bundle["payload"]
