"""Secrets the collector hands out or keeps: bearer tokens (stored as SHA-256) and passwords (scrypt)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ENROLL_TOKEN_PREFIX = "tpe_"  # noqa: S105 (a label, not a secret)
API_TOKEN_PREFIX = "tpa_"  # noqa: S105 (a label, not a secret)
# scrypt cost N=2^15, r=8, p=1: 32 MiB and about 0.1-0.4 s per hash, OWASP's documented minimum
# for scrypt; the parameters are stored in each hash, so raising them later keeps old hashes valid.
SCRYPT_N = 2 ** 15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024


def new_token(prefix: str) -> str:
    """A bearer secret: a readable prefix (what it is for) and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nobody can brute-force the preimage.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_display_prefix(token: str) -> str:
    return token[:10]


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                             maxmem=SCRYPT_MAXMEM, dklen=32)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode("ascii"), base64.b64encode(derived).decode("ascii")])


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (a hash_password string); False for any malformed hash."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
        derived = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                                 maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(derived, expected)
