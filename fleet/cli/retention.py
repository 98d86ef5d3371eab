"""``liftwatch-fleet retention``: the raw records' lifecycle (issue 18).

- ``status``: the last run, its cutoff, records folded / deleted / kept so far, the
  oldest raw record, the lag behind the window's edge, and the lease holder;
- ``run``: one retention run now (taking the lease like a serving instance; when one
  holds it, nothing is done and the exit status is 1). ``--now`` runs it as of another
  time (a replay of a recorded database, a test).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from fleet.cli.common import (
    EXIT_RUNTIME,
    UsageError,
    add_group,
    existing_store_target,
    open_readonly,
    print_json,
    store_options,
)
from fleet.northbound.forwarder import instance_id
from fleet.retention import lag_s, vacuum_step
from fleet.store.open import open_store
from fleet.store.postgres import is_postgres_url
from fleet.store.retention import Retention, RetentionStatus
from fleet.store.sql import from_us, to_us


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `retention` command group; each action takes --config or --db, and --json."""
    action = add_group(
        commands,
        "retention",
        "raw records' lifecycle: status, run",
        "Raw records older than [retention] window_days (14) are folded into hourly "
        "per-unit aggregates kept for the lift's life, then deleted (docs/scaling.md). "
        "Serve does it every [retention] interval_s on one instance at a time.",
        dest="action",
    )
    store_options(
        action(
            "status",
            "last run, records folded and deleted, oldest raw record, lag, lease holder",
            "Where retention stands: the last run and its cutoff, the records folded, "
            "deleted and kept so far, the oldest raw record, how far it lies behind the "
            "window's edge, and which instance holds the lease.",
        )
    )
    run_action = store_options(
        action(
            "run",
            "fold and delete the raw records older than the window now",
            "One retention run now, as a serving instance runs it: takes the lease (exit "
            "status 1 when another instance holds it), folds batch by batch, gives freed "
            "pages back (SQLite). Safe beside a serving fleet.",
        )
    )
    run_action.add_argument(
        "--now",
        type=_moment,
        help="run as of this ISO 8601 time with offset (default: the clock)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit status."""
    if args.action == "status":
        store, _ = open_readonly(args)
        try:
            status = Retention(store).status()
        finally:
            store.close()
        _print_status(args, status)
        return 0
    target, config = existing_store_target(args)
    if not is_postgres_url(target) and not Path(target).is_file():
        raise UsageError(f"no database {target}: give the fleet's SQLite file or URL")
    now = args.now or dt.datetime.now(dt.UTC)
    writer = open_store(target)
    try:
        retention = Retention(writer)
        held = retention.acquire(instance_id(), to_us(now), config.retention.lease_s)
        if held is None:
            print("retention: another fleet instance holds the lease and runs it; not run")
            return EXIT_RUNTIME
        try:
            window_us = config.retention.window_days * 86_400_000_000
            result = retention.run(
                held,
                to_us(now),
                window_us,
                config.retention.batch_records,
                compact_after_us=int(config.retention.compact_after_s * 1_000_000),
            )
            while vacuum_step(writer):
                pass
        finally:
            retention.release(held)
    finally:
        writer.close()
    figures = {
        "cutoff": from_us(result.cutoff_us).isoformat(),
        "folded": result.folded,
        "deleted": result.deleted,
        "kept": result.kept,
        "held_back_agents": result.held_back,
        "compacted": result.compacted,
        "batches": result.batches,
        "partitions_dropped": result.partitions_dropped,
    }
    if args.json:
        print_json(figures)
    else:
        print(
            f"compacted {result.compacted} raw records into {result.batches} batches; "
            f"folded {result.folded}, deleted {result.deleted}, kept {result.kept} "
            f"older than {figures['cutoff']}"
            + (
                f"; dropped {result.partitions_dropped} partition(s)"
                if result.partitions_dropped
                else ""
            )
            + (
                f"; {result.held_back} agent(s) wait for the visit derivation"
                if result.held_back
                else ""
            )
        )
    return 0


def _print_status(args: argparse.Namespace, status: RetentionStatus) -> None:
    def at(us: int | None) -> str | None:
        return None if us is None else from_us(us).isoformat()

    figures = {
        "last_run": at(status.last_run_us),
        "cutoff": at(status.cutoff_us),
        "folded": status.folded,
        "deleted": status.deleted,
        "kept": status.kept,
        "oldest_raw": at(status.oldest_raw_us),
        "lag_s": lag_s(status),
        "owner": status.owner or None,
        "lease_until": at(status.lease_until_us) if status.owner else None,
    }
    if args.json:
        print_json(figures)
        return
    for name, value in figures.items():
        print(f"{name:12} {'-' if value is None else value}")


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the offset (e.g. +08:00): {text!r}")
    return moment
