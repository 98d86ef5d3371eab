"""Building and signing a release bundle (issue 20, item 2).

A bundle is a directory: the agent's wheels, ``manifest.json`` (each wheel's file name,
size and sha256, the release id and version, the requirement pip installs) and
``manifest.sig``, the raw ed25519 signature of the manifest's exact bytes. The agent side
(`agent.release`) verifies it against the keys its configuration pins; the format is
written in docs/updates.md, the one place both sides follow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = 1


def generate_key(path: Path) -> str:
    """Write a new ed25519 release key to ``path`` (PEM, mode 0600, never overwriting)
    and return its public half as agents pin it (base64 of the raw 32 bytes)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_text(key)


def load_key(path: Path) -> Ed25519PrivateKey:
    """The ed25519 private key in the PEM file ``path``; ValueError if it is not one."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 private key")
    return key


def public_text(key: Ed25519PrivateKey) -> str:
    """The public half of ``key`` as agents pin it: base64 of the raw 32 bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def manifest_bytes(
    release_id: str, version: str, wheels: Sequence[Path], requirement: str = "liftwatch[agent]"
) -> bytes:
    """The manifest of ``wheels`` (canonical JSON: sorted keys, so the same inputs sign to
    the same bytes)."""
    entries = [
        {
            "file": w.name,
            "sha256": hashlib.sha256(w.read_bytes()).hexdigest(),
            "size": w.stat().st_size,
        }
        for w in sorted(wheels, key=lambda p: p.name)
    ]
    doc = {
        "format": FORMAT,
        "release_id": release_id,
        "version": version,
        "requirement": requirement,
        "wheels": entries,
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode()


def build(
    dest: Path,
    release_id: str,
    version: str,
    wheels: Sequence[Path],
    key: Ed25519PrivateKey | None,
) -> tuple[bytes, bytes]:
    """Make the bundle directory ``dest`` (the wheels copied in, the manifest, and its
    signature by ``key``; no key: an unsigned bundle, which every agent refuses) and
    return (manifest, signature)."""
    dest.mkdir(parents=True)
    for w in wheels:
        shutil.copyfile(w, dest / w.name)
    manifest = manifest_bytes(release_id, version, [dest / w.name for w in wheels])
    signature = key.sign(manifest) if key is not None else b""
    (dest / MANIFEST).write_bytes(manifest)
    if signature:
        (dest / SIGNATURE).write_bytes(signature)
    return manifest, signature
