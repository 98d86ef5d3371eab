"""Signed checkpoints of the history chains: every unit's head, kept apart from the database.

A hash chain inside one database cannot tell a truncated chain with its head rewound, a
whole chain deleted, or a tail rewritten with recomputed hashes from an honest one: the
database holds both the rows and the head. A checkpoint is a file holding every unit's
head (unit, seq, hash) at one moment, signed with an Ed25519 key, written somewhere the
database's users cannot write (another disk, another host, the regulator's archive).
`compare_checkpoint` then names every unit whose chain no longer reaches its
checkpointed head: shorter (rows deleted, head rewound, the whole chain gone) or
different at that seq (rewritten). Entries appended after the checkpoint are covered
by the next one; edits to older rows are found by the chain check itself.

Keys: `generate_key` writes a PKCS#8 PEM private key (mode 0600) and its public key
beside it (``KEY.pub``). The fleet that writes checkpoints (``serve`` with ``[history]
checkpoint_file``, or ``liftwatch-fleet history checkpoint``) needs the private key; a
verifier needs only the public key, so an auditor can check checkpoints without being
able to forge one. Keep the private key off the database host's shared accounts: whoever
holds it and the database can forge both.

File format (UTF-8 JSON, `FORMAT`)::

    {"format": "liftwatch-history-checkpoint/1", "written": "2026-...Z",
     "key": "<first 16 hex digits of SHA-256 of the raw public key>",
     "heads": {"UNIT": "SEQ:HASH", ...}, "signature": "<base64 Ed25519>"}

The signature covers `fleet.store.chain.canonical` of the object without ``signature``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet.store.chain import Head, Problem, canonical

FORMAT = "liftwatch-history-checkpoint/1"
_HEAD = re.compile(r"^([1-9][0-9]*):([0-9a-f]{64})$")


class CheckpointError(Exception):
    """A checkpoint or key file is unusable; the message names the file and what is wrong."""


class SignatureError(CheckpointError):
    """The checkpoint's signature does not verify: altered, or signed by another key."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified checkpoint: when it was written, by which key, and every unit's head."""

    written: dt.datetime
    key_id: str
    heads: tuple[Head, ...]


def key_id(public: Ed25519PublicKey) -> str:
    """The short fingerprint a checkpoint names its key by."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(path: Path) -> Path:
    """Write a new Ed25519 private key to ``path`` (PEM, mode 0600) and its public key to
    ``path`` + ``.pub``; returns the public key's path. Refuses to overwrite either."""
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):
        if target.exists():
            raise CheckpointError(f"{target}: exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        public_path.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the key: {exc.strerror}") from None
    return public_path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file ``path``."""
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key (`history keygen` makes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``; a private key file gives its public
    key, so the fleet's own key checks its own checkpoints."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path}: not an Ed25519 key (`history keygen` makes one)")
    return key


def _body(written: dt.datetime, kid: str, heads: Sequence[Head]) -> dict[str, object]:
    return {
        "format": FORMAT,
        "written": written.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "key": kid,
        "heads": {h.unit_id: f"{h.seq}:{h.hash}" for h in sorted(heads, key=lambda h: h.unit_id)},
    }


def write_checkpoint(
    path: Path, heads: Sequence[Head], written: dt.datetime, key: Ed25519PrivateKey
) -> Checkpoint:
    """Sign ``heads`` as of ``written`` and replace ``path`` with them atomically (a reader
    never sees half a file); heads of seq 0 (no entry yet) are left out."""
    kept = tuple(sorted((h for h in heads if h.seq > 0), key=lambda h: h.unit_id))
    kid = key_id(key.public_key())
    body = _body(written, kid, kept)
    body["signature"] = base64.b64encode(key.sign(canonical(body).encode())).decode()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as out:
            out.write(json.dumps(body, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write the checkpoint: {exc.strerror}") from None
    return Checkpoint(written.astimezone(dt.UTC), kid, kept)


def read_checkpoint(path: Path, key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint in ``path``, its signature verified with ``key``. Raises
    `SignatureError` when the signature does not verify (or names another key), and
    `CheckpointError` when the file is not a readable checkpoint."""
    try:
        body = json.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a JSON checkpoint ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a history checkpoint (format is not {FORMAT!r})")
    signature = body.pop("signature", None)
    if not isinstance(signature, str):
        raise SignatureError(f"{path}: the checkpoint is not signed")
    if body.get("key") != key_id(key):
        raise SignatureError(
            f"{path}: signed by key {body.get('key')!r}, not by the key given ({key_id(key)})"
        )
    try:
        key.verify(base64.b64decode(signature, validate=True), canonical(body).encode())
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"{path}: the signature does not verify: the file was altered after signing"
        ) from None
    # Signed, so written by the fleet: a malformed field now is a bug, still named clearly.
    heads: list[Head] = []
    found = body.get("heads")
    if not isinstance(found, dict):
        raise CheckpointError(f"{path}: 'heads' is not an object")
    for unit_id, text in found.items():
        match = _HEAD.match(text) if isinstance(text, str) else None
        if match is None:
            raise CheckpointError(f"{path}: heads.{unit_id}: expected SEQ:HASH, got {text!r}")
        heads.append(Head(unit_id, int(match.group(1)), match.group(2)))
    try:
        written = dt.datetime.fromisoformat(str(body.get("written")))
    except ValueError:
        raise CheckpointError(f"{path}: 'written' is not an ISO 8601 time") from None
    return Checkpoint(written, str(body["key"]), tuple(heads))


def compare_checkpoint(
    checkpoint: Checkpoint,
    heads: Mapping[str, Head],
    hashes: Mapping[tuple[str, int], str],
    unit_id: str = "",
) -> list[Problem]:
    """Every unit (``unit_id`` only, unless "") whose chain no longer reaches its head in
    ``checkpoint``: ``heads`` are the stored heads now, ``hashes`` the stored hash of each
    (unit, seq) the checkpoint names (missing when the row is gone)."""
    written = checkpoint.written.isoformat().replace("+00:00", "Z")
    problems: list[Problem] = []
    for kept in checkpoint.heads:
        if unit_id and kept.unit_id != unit_id:
            continue
        head = heads.get(kept.unit_id)
        stored = hashes.get((kept.unit_id, kept.seq))
        where = f"the checkpoint of {written} has seq {kept.seq}"
        if head is None and stored is None:
            what, reason = "deleted", f"the unit's whole chain is gone; {where}"
        elif stored is None:
            now = "no head" if head is None else f"the head is now seq {head.seq}"
            what = "deleted"
            reason = f"the chain is shorter than the checkpoint: {where}, no such row ({now})"
        elif stored != kept.hash:
            what = "edited"
            reason = (
                f"the chain diverges from the checkpoint at seq {kept.seq}: rewritten from "
                "there or before (hashes recomputed)"
            )
        elif head is None or head.seq < kept.seq:
            shown = "gone" if head is None else f"rewound to seq {head.seq}"
            what, reason = "deleted", f"the head is {shown}; {where}"
        else:
            continue
        problems.append(Problem(kept.unit_id, kept.seq, None, what, reason, "checkpoint"))
    return problems
