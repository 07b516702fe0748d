"""Sink secrets (webhook signing keys, SMTP passwords) encrypted at rest with a key derived from the
server signing key: a copy of the database alone reveals none of them. The API never returns them."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PREFIX = "v1:"


class SecretError(ValueError):
    """A stored secret that cannot be decrypted (the server key changed?)."""


def _key(server_key: Ed25519PrivateKey) -> bytes:
    raw = server_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"teleposture sink secrets v1").derive(raw)


def seal(server_key: Ed25519PrivateKey, secret: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key(server_key)).encrypt(nonce, secret.encode("utf-8"), b"sink")
    return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def unseal(server_key: Ed25519PrivateKey, stored: str) -> str:
    if not stored.startswith(_PREFIX):
        raise SecretError("unknown secret format")
    raw = base64.b64decode(stored[len(_PREFIX):])
    try:
        return AESGCM(_key(server_key)).decrypt(raw[:12], raw[12:], b"sink").decode("utf-8")
    except InvalidTag as exc:
        raise SecretError("the sink secret cannot be decrypted with this server key: set it again") from exc
