"""``liftwatch-fleet northbound``: forwarding to regional platforms (issue 21).

- ``status``: per platform, the backlog, the age of the oldest unsent entry, sent,
  rejected, dead letters, which instance sends, the last error;
- ``dead-letters``: what a platform refused, with its reason and the refused body;
- ``replay PLATFORM --all | --id N ...``: send dead letters again (after a mapping fix);
  the serving instance that holds the platform's lease sends them with the mapping as
  it is then;
- ``schema MAPPING``: the JSON Schema of each message the mapping renders (to hand to a
  platform, or to check one against).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from fleet.cli.common import (
    StoreCommand,
    UsageError,
    open_readonly,
    positive_int,
    print_json,
    store_target,
)
from fleet.northbound.mapping import MappingError, load_mapping, resolve
from fleet.northbound.views import DeadLetterView, PlatformView
from fleet.read.shape import out, to_json
from fleet.read.views import table
from fleet.store.northbound import DEAD_STATES, DeadLetter, NorthboundOutbox, PlatformStatus
from fleet.store.open import open_store
from fleet.store.sql import SqlStore


@dataclass(frozen=True, slots=True)
class PlatformsView:
    """``northbound status --json``: every platform configured or known to the store, each
    as ``GET /api/northbound`` shows it (`PlatformView`)."""

    platforms: tuple[PlatformView, ...] = out("by platform name")


@dataclass(frozen=True, slots=True)
class DeadLettersView:
    """``northbound dead-letters --json``: the dead letters asked for, as ``GET
    /api/northbound`` shows them (`DeadLetterView`)."""

    dead_letters: tuple[DeadLetterView, ...] = out("newest first")


@dataclass(frozen=True, slots=True)
class ReplayView:
    """``northbound replay --json``: how many dead letters the platform's sender will send
    again."""

    platform: str = out()
    replaying: int = out("dead letters marked for replay", minimum=0)


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add the `northbound` command group (``store_command`` adds --config, --db, --json)."""
    group = store_command(
        "northbound",
        "forwarding to regional platforms: status, dead letters, replay, schema",
        "Forwarding of the fleet's history to regional regulatory platforms "
        "([northbound.platform.NAME] in the config; docs/northbound.md).",
    )
    # --config, --db and --json are taken after the action too (``northbound status
    # --db F``); SUPPRESS keeps an action's absent option from hiding the group's.
    common = argparse.ArgumentParser(add_help=False)
    source = common.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config")
    source.add_argument("--db", default=argparse.SUPPRESS, help="SQLite file or postgresql:// URL")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "status",
        parents=[common],
        help="backlog, oldest unsent, sent, rejected and sender per platform",
        description="Per platform: backlog (history entries not yet dealt with), the age "
        "of the oldest, messages sent and rejected, dead letters waiting, the instance "
        "holding the lease, and the last error.",
    )
    letters = actions.add_parser(
        "dead-letters",
        parents=[common],
        help="messages a platform refused, with its reason",
        description="Dead letters, newest first: the entry, the platform's status and "
        "reason, and (with --json) the refused body.",
    )
    letters.add_argument("--platform", help="only this platform")
    letters.add_argument("--state", choices=DEAD_STATES, help="only dead letters in this state")
    letters.add_argument("--limit", type=positive_int, default=100, help="at most N (100)")
    replay = actions.add_parser(
        "replay",
        parents=[common],
        help="send dead letters of a platform again (after a mapping fix)",
        description="Mark dead letters to be sent again; the serving instance holding the "
        "platform's lease sends them, rendered with the mapping it runs now.",
    )
    replay.add_argument("platform", help="the platform's NAME")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter in state dead")
    which.add_argument("--id", type=int, action="append", help="this dead letter (repeatable)")
    schema = actions.add_parser(
        "schema",
        help="the JSON Schema of each message of a mapping",
        description="Print the JSON Schema (by message name) every message rendered by the "
        "mapping satisfies: a shipped mapping's name (gbt24476, chongqing) or a file.",
    )
    schema.add_argument("mapping", help="gbt24476, chongqing, or a mapping file")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit status."""
    if args.action == "schema":
        return _schema(args)
    if args.action == "replay":
        return _replay(args)
    store, config = open_readonly(args)
    try:
        outbox = NorthboundOutbox(store)
        if args.action == "status":
            names = sorted(set(config.northbound.platform) | set(outbox.platforms()))
            statuses = [outbox.status(n) for n in names]
            return _print_status(args, statuses)
        found = outbox.dead_letters(args.platform, args.state, args.limit)
    finally:
        store.close()
    return _print_letters(args, found)


def _print_status(args: argparse.Namespace, statuses: list[PlatformStatus]) -> int:
    now = dt.datetime.now(dt.UTC)
    view = PlatformsView(tuple(PlatformView.of(s, now) for s in statuses))
    if args.json:
        print_json(to_json(view))
        return 0
    rows = to_json(view)["platforms"]
    if not rows:
        print("no northbound platform configured or known to the store")
        return 0
    columns = ("platform", "backlog", "oldest_unsent_age_s", "sent", "rejected", "dead_letters")
    cells = [[_cell(r[c]) for c in columns] + [_cell(r["sender"])] for r in rows]
    print(table([c.upper() for c in (*columns, "sender")], cells))
    for r in rows:
        if r["last_error"]:
            print(f"{r['platform']}: last error {r['last_error_at']}: {r['last_error']}")
    return 0


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _print_letters(args: argparse.Namespace, letters: list[DeadLetter]) -> int:
    if args.json:
        print_json(to_json(DeadLettersView(tuple(DeadLetterView.of(d) for d in letters))))
        return 0
    columns = ["ID", "PLATFORM", "UNIT", "SEQ", "MESSAGE", "STATUS", "STATE", "REASON"]
    cells = [
        [
            str(d.id),
            d.platform,
            d.unit_id,
            str(d.seq),
            d.kind,
            _cell(d.status),
            d.state,
            d.reason[:80],
        ]
        for d in letters
    ]
    print(table(columns, cells))
    return 0


def _replay(args: argparse.Namespace) -> int:
    target, _ = store_target(args)
    store = open_store(target)
    try:
        assert isinstance(store, SqlStore)
        outbox = NorthboundOutbox(store)
        if args.platform not in outbox.platforms():
            raise UsageError(f"no northbound platform {args.platform!r} in the store")
        count = outbox.request_replay(args.platform, None if args.all else args.id)
    finally:
        store.close()
    if args.json:
        print_json(to_json(ReplayView(args.platform, count)))
    else:
        print(f"{count} dead letter(s) of {args.platform} will be sent again by its sender")
    return 0


def _schema(args: argparse.Namespace) -> int:
    try:
        mapping = load_mapping(resolve(args.mapping, Path.cwd()))
    except MappingError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(mapping.json_schema(), ensure_ascii=False, indent=2))
    return 0
