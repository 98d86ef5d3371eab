"""The history commands of ``liftwatch-fleet``: verify-history, history, db grant.

- ``verify-history [--unit U] [--checkpoint FILE [--key KEY]]``: check every chain, the
  events and alarms rows against the chains, and a signed checkpoint's heads; exit 1 when
  anything is wrong (each problem named: unit, seq, table, what, why), or when the
  checkpoint's signature does not verify. With --checkpoint the outcome is also kept in
  the store (``history_checks``: the dashboard shows the newest).
- ``history keygen KEY``: a new Ed25519 key pair (KEY, KEY.pub) for checkpoints.
- ``history checkpoint FILE [--key KEY]``: sign every unit's head into FILE.
- ``db grant ROLE``: give an existing PostgreSQL role the fleet's application privileges
  (append-only history, events and records; see `fleet.store.postgres.APP_ROLE_PRIVILEGES`).

--key defaults to ``[history] checkpoint_key`` of --config. Bad input (no key, an
unreadable checkpoint or key file) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.cli.common import EXIT_USAGE, PROG, StoreCommand, print_json
from fleet.cli.reports import Target
from fleet.clock import utc_now
from fleet.config import FleetConfig
from fleet.history.checkpoint import (
    Checkpoint,
    CheckpointError,
    SignatureError,
    generate_key,
    load_private_key,
    load_public_key,
    read_checkpoint,
    write_checkpoint,
)
from fleet.history.verify import history_check, unreadable, verify_store
from fleet.read.lifecycle_views import ProblemView, problem_json
from fleet.read.shape import out, to_json
from fleet.read.views import iso, table
from fleet.store.base import StoreError
from fleet.store.chain import HistoryCheck, Problem
from fleet.store.open import open_store
from fleet.store.postgres import grant_app_role, is_postgres_url


class HistoryUsageError(Exception):
    """Bad input to a history command; reported in one line, exit status 2."""


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add verify-history, history and db to ``commands`` (``store_command`` adds
    --config, --db and --json)."""
    verify = store_command(
        "verify-history",
        "check the hash-chained unit histories, the events and alarms against them, and "
        "a signed checkpoint",
        "Recompute every unit's lifecycle history chain (SHA-256 over canonical JSON, each "
        "entry carrying the previous hash) and name every row that was edited, inserted or "
        "deleted; check every events and alarms row against the chain and the chain "
        "against them (a row deleted, inserted or edited there is named); with "
        "--checkpoint, check that every chain still reaches the head the signed "
        "checkpoint recorded (a truncated chain, a rewound head, a deleted chain or a "
        "rewritten tail is named) and keep the outcome for the dashboard. Exit status 1 "
        "when anything is wrong or the checkpoint's signature does not verify. --json "
        "also prints each unit's head (seq:hash).",
    )
    verify.add_argument("--unit", help="only this unit_id")
    verify.add_argument("--checkpoint", type=Path, help="a checkpoint file (`history checkpoint`)")
    verify.add_argument(
        "--key", type=Path, help="its public (or private) key PEM; default [history] checkpoint_key"
    )

    history = store_command(
        "history",
        "signed checkpoints of the history chains: keygen KEY, checkpoint FILE",
        "`history keygen KEY` writes a new Ed25519 private key to KEY (mode 0600) and its "
        "public key to KEY.pub. `history checkpoint FILE` signs every unit's chain head "
        "into FILE with --key (default [history] checkpoint_key); keep FILE apart from the "
        "database and check it with `verify-history --checkpoint FILE --key KEY.pub`.",
    )
    history.add_argument("action", choices=["keygen", "checkpoint"])
    history.add_argument("file", type=Path, help="the key (keygen) or checkpoint file to write")
    history.add_argument("--key", type=Path, help="checkpoint: the private key PEM")

    db = store_command(
        "db",
        "PostgreSQL: `db grant ROLE` gives the fleet's application role its privileges",
        "Connect as the database owner (--db URL or [store] url), migrate the schema, and "
        "grant the existing ROLE what serve needs: the history chains (unit_history), "
        "events, records, coverage and firmware history and the checkpoint checks are "
        "append-only for it (SELECT, INSERT); unit_history_head and alarms may be updated, "
        "never deleted; schema_version is read-only. Run serve as ROLE; re-run after an "
        "upgrade.",
    )
    db.add_argument("action", choices=["grant"])
    db.add_argument("role", help="the application role (must exist, not the owner)")


def _key_path(args: argparse.Namespace, config: FleetConfig, what: str) -> Path:
    path: Path | None = args.key or config.history.checkpoint_key
    if path is None:
        raise HistoryUsageError(f"{what} needs --key KEY (or [history] checkpoint_key)")
    return path


# What the history commands print with --json: one definition each (fleet.read.shape),
# like the API's answers, but not API components.


@dataclass(frozen=True, slots=True)
class CheckpointFileView:
    """A checkpoint file: written by `history checkpoint`, or read by `verify-history`
    (null fields: it could not be read)."""

    file: str = out()
    written: str | None = out("when it was signed", fmt="date-time")
    key: str | None = out("the signing key's id")
    units: int | None = out("unit heads it records", minimum=0)

    @classmethod
    def of(cls, checkpoint: Checkpoint | None, path: Path) -> CheckpointFileView:
        """``checkpoint`` as read from (or written to) ``path``; None: unreadable."""
        if checkpoint is None:
            return cls(str(path), None, None, None)
        return cls(str(path), iso(checkpoint.written), checkpoint.key_id, len(checkpoint.heads))


@dataclass(frozen=True, slots=True)
class VerifiedView:
    """`verify-history --json`."""

    units: int = out(minimum=0)
    entries: int = out(minimum=0)
    intact: bool = out("no problem found")
    problems: tuple[ProblemView, ...] = out()
    heads: dict[str, str] = out("each unit's head, seq:hash")
    checkpoint: CheckpointFileView | None = out("with --checkpoint", omit_none=True)


@dataclass(frozen=True, slots=True)
class KeyPairView:
    """`history keygen --json`."""

    private_key: str = out("keep it secret")
    public_key: str = out()


@dataclass(frozen=True, slots=True)
class GrantView:
    """`db grant --json`: the privileges given to the role, by table."""

    role: str = out()
    tables: dict[str, tuple[str, ...]] = out()


def _verify(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    checkpoint: Checkpoint | None = None
    signature: list[Problem] = []
    if args.checkpoint is not None:
        public = load_public_key(_key_path(args, config, "--checkpoint"))
        try:
            checkpoint = read_checkpoint(args.checkpoint, public)
        except SignatureError as exc:
            signature = [unreadable(exc)]
    store = open_store(where, readonly=True)
    try:
        found = verify_store(store, args.unit or "", checkpoint)
    finally:
        store.close()
    problems = signature + list(found.problems)
    if args.checkpoint is not None:
        _keep(where, history_check("cli", args.checkpoint, checkpoint, problems, utc_now()))
    if args.json:
        shown = VerifiedView(
            found.units,
            found.entries,
            not problems,
            tuple(ProblemView.of(p) for p in problems),
            {h.unit_id: f"{h.seq}:{h.hash}" for h in found.heads},
            None if args.checkpoint is None else CheckpointFileView.of(checkpoint, args.checkpoint),
        )
        print_json(to_json(shown))
    elif problems:
        columns = ("unit_id", "seq", "table", "what", "reason")
        print(
            table(
                [c.upper() for c in columns],
                [[problem_json(p)[c] for c in columns] for p in problems],
            )
        )
    else:
        against = ""
        if checkpoint is not None:
            against = f", every head of the checkpoint of {iso(checkpoint.written)} reached"
        print(f"intact: {found.units} unit(s), {found.entries} entries{against}")
    return 1 if problems else 0


def _keep(where: str, check: HistoryCheck) -> None:
    # The verdict stands whether or not it can be kept (a read-only replica, say).
    try:
        store = open_store(where)
    except StoreError as exc:
        print(f"{PROG}: warning: the outcome is not kept: {exc}", file=sys.stderr)
        return
    try:
        store.record_history_check(check)
    except Exception as exc:  # any driver error (a read-only role): warn, keep the verdict
        print(f"{PROG}: warning: the outcome is not kept: {exc}", file=sys.stderr)
    finally:
        store.close()


def _history(args: argparse.Namespace, target: Target) -> int:
    if args.action == "keygen":
        public = generate_key(args.file)
        if args.json:
            print_json(to_json(KeyPairView(str(args.file), str(public))))
        else:
            print(f"private key {args.file} (keep it secret), public key {public}")
        return 0
    where, config = target(args)
    key = load_private_key(_key_path(args, config, "history checkpoint"))
    store = open_store(where, readonly=True)
    try:
        heads = store.history_heads()
    finally:
        store.close()
    written = write_checkpoint(args.file, heads, utc_now(), key)
    if args.json:
        print_json(to_json(CheckpointFileView.of(written, args.file)))
    else:
        print(f"checkpoint {args.file}: {len(written.heads)} unit head(s), key {written.key_id}")
    return 0


def _db(args: argparse.Namespace, target: Target) -> int:
    where, _ = target(args)
    if not is_postgres_url(where):
        raise HistoryUsageError("db grant is for PostgreSQL (--db postgresql://...)")
    granted = grant_app_role(where, args.role)
    if args.json:
        print_json(to_json(GrantView(args.role, {t: tuple(p) for t, p in granted.items()})))
    else:
        print(
            table(["TABLE", "PRIVILEGES"], [[t, ", ".join(p)] for t, p in sorted(granted.items())])
        )
    return 0


def commands(target: Target) -> dict[str, Callable[[argparse.Namespace], int]]:
    """The handlers by command name; ``target`` resolves --config / --db to a store."""

    def guard(
        handler: Callable[[argparse.Namespace, Target], int],
    ) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args, target)
            except (HistoryUsageError, CheckpointError) as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                return EXIT_USAGE

        return run

    return {"verify-history": guard(_verify), "history": guard(_history), "db": guard(_db)}
