"""Password hashing with scrypt (RFC 7914, `hashlib.scrypt`): memory-hard, in the stdlib.

A stored hash is ``scrypt$N$r$p$SALT$KEY`` (salt and key in unpadded URL-safe base64), so
the cost can be raised later: `verify_password` reads the parameters from the stored text,
and `needs_rehash` tells the caller to store a fresh hash after the next good login.
Passwords are NFKC-normalized first, so that the full-width digits and letters a Chinese
input method may produce match their ASCII forms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import unicodedata

SCHEME = "scrypt"
N = 2**14  # CPU/memory cost: 16 MiB and some 50 ms per hash on a small server
R = 8
P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_LENGTH = 8
# A stored hash's parameters are trusted only this far: a corrupted or hostile row must
# not make a login allocate gigabytes.
MAX_MEMORY = 256 * 1024 * 1024


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` in the stored format.

    Raises ValueError when the password is shorter than `MIN_LENGTH` characters.
    """
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password must be at least {MIN_LENGTH} characters long")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, N, R, P, KEY_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash, compared in constant time.

    A malformed or unsupported ``stored`` value is False, never an exception.
    """
    parsed = _parse(stored)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    try:
        candidate = _derive(password, salt, n, r, p, len(key))
    except (ValueError, OverflowError, MemoryError):
        return False
    return hmac.compare_digest(candidate, key)


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than the current ones (or is
    malformed): the caller may store `hash_password` of the password it just verified."""
    parsed = _parse(stored)
    return parsed is None or parsed[:3] != (N, R, P) or len(parsed[4]) != KEY_BYTES


def equalize_timing(password: str) -> None:
    """Spend what one `verify_password` costs, for a login naming no known user, so that
    response times do not tell which usernames exist."""
    _derive(password, b"\0" * SALT_BYTES, N, R, P, KEY_BYTES)


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    secret = unicodedata.normalize("NFKC", password).encode("utf-8")
    # OpenSSL's own bound is 128 * r * (N + p + 2) bytes; give it that plus some slack.
    needed = 128 * r * (n + p + 2) + 1024 * 1024
    if needed > MAX_MEMORY:
        raise ValueError("scrypt parameters beyond the memory bound")
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=needed, dklen=length)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = _unb64(parts[4])
        key = _unb64(parts[5])
    except (ValueError, binascii.Error):
        return None
    # N a power of two above 1, sane r and p, a real salt and key (RFC 7914 limits).
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
