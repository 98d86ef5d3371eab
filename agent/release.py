"""Signed releases (issue 20): the manifest of a bundle and its ed25519 signature.

A release is a directory (a *bundle*) of the agent's wheels and ``manifest.json``, the
document the release key signed: every wheel's file name, size and sha256. The signature
(``manifest.sig``) is the raw 64-byte ed25519 signature of exactly the manifest's bytes.
An agent pins the release public keys in its configuration (``[update] release_keys``,
base64 of the raw 32-byte key); a manifest is accepted when ANY pinned key verifies it,
which is how a key is rotated: ship configs carrying both keys, then sign with the new
one, then drop the old key (docs/updates.md).

Both the agent (before fetching the wheels) and the updater (before installing, as root:
it trusts nothing the agent's user could have written) verify with these functions.
Pure: bytes in, a `Manifest` or a `ReleaseError` out; file hashing reads the bundle only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = 1
# A wheel's file name as PEP 427 spells it, and nothing that could leave the bundle.
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


class ReleaseError(Exception):
    """A release that must not be installed; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Wheel:
    """One file of a bundle as the signed manifest names it."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """A verified manifest: what the release is and the exact files it consists of."""

    release_id: str
    version: str
    wheels: tuple[Wheel, ...]
    # The distribution pip installs from the wheels (e.g. "liftwatch[agent]").
    requirement: str

    @property
    def total_bytes(self) -> int:
        """The size of every wheel together (what the download and install must fit)."""
        return sum(w.size for w in self.wheels)

    def wheel(self, name: str) -> Wheel:
        """The wheel called ``name``; `ReleaseError` when the manifest has none."""
        for w in self.wheels:
            if w.file == name:
                return w
        raise ReleaseError(f"file {name!r} is not in release {self.release_id}")


def key_bytes(text: str) -> bytes:
    """The 32 raw bytes of an ed25519 public key written as base64; `ReleaseError` naming
    the problem otherwise. What `check-config` checks, without loading `cryptography`."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReleaseError(f"release key {text!r} is not base64: {exc}") from None
    if len(raw) != 32:
        raise ReleaseError(f"release key {text!r} is {len(raw)} bytes, an ed25519 key is 32")
    return raw


def public_key(text: str) -> Ed25519PublicKey:
    """The ed25519 public key written as base64 of its 32 raw bytes; `ReleaseError` naming
    the problem otherwise."""
    # Imported here: `cryptography` costs the agent about 9 MB of RSS, and only a release
    # being verified needs it (the agent's RSS target is 60 MB, bench/agent_footprint.py).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(key_bytes(text))


def verify(manifest: bytes, signature: bytes, keys: tuple[str, ...]) -> Manifest:
    """The manifest, if one of the pinned ``keys`` signed exactly these bytes and they
    hold a well-formed manifest; `ReleaseError` saying why not (unsigned, signed by no
    pinned key, malformed) otherwise. No key pinned: every release is refused."""
    if not keys:
        raise ReleaseError("no release key is pinned ([update] release_keys): refused")
    if not signature:
        raise ReleaseError("the release is unsigned: refused")
    from cryptography.exceptions import InvalidSignature

    for text in keys:
        try:
            public_key(text).verify(signature, manifest)
        except InvalidSignature:
            continue
        return parse(manifest)
    raise ReleaseError("the signature verifies with no pinned release key: refused")


def parse(manifest: bytes) -> Manifest:
    """The manifest's fields, checked (no signature check: `verify` does that first)."""
    try:
        doc = json.loads(manifest)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReleaseError(f"manifest format must be {FORMAT}")
    release_id, version = doc.get("release_id"), doc.get("version")
    requirement, raw_wheels = doc.get("requirement"), doc.get("wheels")
    for name, value in (("release_id", release_id), ("version", version)):
        if not isinstance(value, str) or not _ID.match(value):
            raise ReleaseError(f"manifest {name} must be 1-64 of [A-Za-z0-9_.+-], got {value!r}")
    if not isinstance(requirement, str) or not requirement:
        raise ReleaseError("manifest requirement must be a non-empty string")
    if not isinstance(raw_wheels, list) or not raw_wheels:
        raise ReleaseError("manifest wheels must be a non-empty list")
    wheels: list[Wheel] = []
    for i, w in enumerate(raw_wheels):
        if not isinstance(w, dict):
            raise ReleaseError(f"manifest wheels[{i}] must be an object")
        file, sha, size = w.get("file"), w.get("sha256"), w.get("size")
        if not isinstance(file, str) or not _WHEEL_NAME.match(file):
            raise ReleaseError(f"manifest wheels[{i}].file is not a wheel name: {file!r}")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise ReleaseError(f"manifest wheels[{i}].sha256 is not 64 hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ReleaseError(f"manifest wheels[{i}].size must be a positive integer")
        wheels.append(Wheel(file, sha, size))
    if len({w.file for w in wheels}) != len(wheels):
        raise ReleaseError("manifest names a wheel twice")
    return Manifest(str(release_id), str(version), tuple(wheels), requirement)


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(manifest: Manifest, bundle: Path) -> None:
    """Every wheel of ``manifest`` is in ``bundle`` with its signed size and sha256;
    `ReleaseError` naming the first that is missing or differs."""
    for w in manifest.wheels:
        path = bundle / w.file
        if not path.is_file():
            raise ReleaseError(f"{w.file} is missing from the bundle")
        if path.stat().st_size != w.size or sha256_file(path) != w.sha256:
            raise ReleaseError(f"{w.file} differs from the signed manifest (sha256 or size)")


def load_bundle(bundle: Path, keys: tuple[str, ...]) -> Manifest:
    """The verified manifest of the bundle directory ``bundle``: signed by a pinned key,
    every wheel present with its signed hash; `ReleaseError` otherwise."""
    try:
        manifest = (bundle / MANIFEST).read_bytes()
        signature = (bundle / SIGNATURE).read_bytes() if (bundle / SIGNATURE).exists() else b""
    except OSError as exc:
        raise ReleaseError(f"cannot read the bundle {bundle.name}: {exc}") from None
    verified = verify(manifest, signature, keys)
    check_files(verified, bundle)
    return verified
