"""Verifying the lifecycle history, and serve's scheduled signed checkpoint.

`verify_store` is what ``liftwatch-fleet verify-history`` runs: every unit's chain
(`fleet.store.chain.verify_chain`), the ``events`` and ``alarms`` tables against the chains in
both directions (`fleet.store.chain.cross_check_events`, `cross_check_alarms`) and, given a
checkpoint, every checkpointed head (`fleet.history.checkpoint.compare_checkpoint`). It reads
every history row: a command for an audit, not for serve's store thread.

`run_checkpoints` is serve's schedule (``[history] checkpoint_file``): each round checks
the stored chains against the checkpoint file's heads (one indexed read per checkpointed
head: cheap enough for the store thread at district scale), keeps the outcome
(`Store.record_history_check`, shown on the dashboard), and, only when the check passed,
replaces the file with the heads of now. A failed check leaves the file as it was.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.clock import Clock
from fleet.history.checkpoint import (
    Checkpoint,
    CheckpointError,
    compare_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from fleet.store.base import Store
from fleet.store.chain import (
    Head,
    HistoryCheck,
    Problem,
    cross_check_alarms,
    cross_check_events,
    group_rows,
    verify_chain,
)
from fleet.store.evidence import cross_check_evidence
from fleet.store.worker import StoreWorker

log = logging.getLogger(__name__)

# Problems a kept check lists (the count is always whole).
SUMMARY_PROBLEMS = 10
_TABLE_ORDER = ("unit_history", "checkpoint", "events", "alarms", "evidence")


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify_store` found: units and entries checked, every problem, the heads."""

    units: int
    entries: int
    problems: tuple[Problem, ...]
    heads: tuple[Head, ...]


def verify_store(
    store: Store, unit_id: str = "", checkpoint: Checkpoint | None = None
) -> Verification:
    """Check the chains (of ``unit_id`` unless ""), the events and alarms rows against
    them and, when given, ``checkpoint``'s heads; problems by unit, the chain's own first
    (then the checkpoint's, the events', the alarms'), each by seq."""
    rows, heads = store.history(unit_id)
    by_unit = group_rows(rows)
    head_of = {h.unit_id: h for h in heads}
    units = sorted(set(by_unit) | set(head_of))
    problems: list[Problem] = []
    for unit in units:
        problems += verify_chain(unit, by_unit.get(unit, []), head_of.get(unit))
    events, alarms = store.chained_rows(unit_id)
    problems += cross_check_events(by_unit, events)
    problems += cross_check_alarms(by_unit, alarms)
    problems += cross_check_evidence(by_unit, store.evidence_facts(unit_id))
    if checkpoint is not None:
        hashes = {(r.unit_id, r.seq): r.hash for r in rows}
        problems += compare_checkpoint(checkpoint, head_of, hashes, unit_id)
    # The chain's own breaks first: a broken entry explains a table row it no longer covers.
    problems.sort(key=lambda p: (p.unit_id, _TABLE_ORDER.index(p.table), p.seq))
    checked = len(set(units) | {h.unit_id for h in checkpoint.heads}) if checkpoint else len(units)
    return Verification(checked, len(rows), tuple(problems), tuple(heads))


def check_checkpoint(store: Store, checkpoint: Checkpoint) -> list[Problem]:
    """The checkpointed heads that the stored chains no longer reach (the cheap check:
    the heads and one row per checkpointed unit, not every row)."""
    heads = {h.unit_id: h for h in store.history_heads()}
    hashes = store.history_hashes([(h.unit_id, h.seq) for h in checkpoint.heads])
    return compare_checkpoint(checkpoint, heads, hashes)


def history_check(
    source: str,
    path: Path,
    checkpoint: Checkpoint | None,
    problems: Sequence[Problem],
    checked: dt.datetime,
) -> HistoryCheck:
    """The record kept of one verification against the checkpoint at ``path``."""
    lines = [
        f"{p.unit_id or '-'} seq {p.seq} {p.table} {p.what}: {p.reason}"
        for p in problems[:SUMMARY_PROBLEMS]
    ]
    if len(problems) > SUMMARY_PROBLEMS:
        lines.append(f"... and {len(problems) - SUMMARY_PROBLEMS} more")
    return HistoryCheck(
        checked=checked,
        source=source,
        checkpoint_file=str(path),
        checkpoint_written=None if checkpoint is None else checkpoint.written,
        units=0 if checkpoint is None else len(checkpoint.heads),
        problems=len(problems),
        summary="\n".join(lines),
    )


def unreadable(exc: CheckpointError) -> Problem:
    """A checkpoint that could not be used (bad signature, bad file) as a problem."""
    return Problem("", 0, None, "edited", str(exc), "checkpoint")


async def checkpoint_round(
    store: StoreWorker, clock: Clock, path: Path, key: Ed25519PrivateKey
) -> HistoryCheck | None:
    """One scheduled round: check the chains against ``path`` (when it exists) and keep
    the outcome; then, unless that check failed, sign the heads of now into ``path``.
    Returns the kept check (None on the very first round, with no file yet)."""
    check: HistoryCheck | None = None
    if path.exists():
        problems: list[Problem]
        checkpoint: Checkpoint | None
        try:
            checkpoint = await asyncio.to_thread(read_checkpoint, path, key.public_key())
        except CheckpointError as exc:
            checkpoint, problems = None, [unreadable(exc)]
        else:
            found = checkpoint
            problems = await store.call(lambda s: check_checkpoint(s, found))
        check = history_check("serve", path, checkpoint, problems, clock())
        await store.call(lambda s: s.record_history_check(check))
        if problems:
            log.error(
                "history checkpoint %s: %d problem(s), the file is kept as evidence: %s",
                path,
                len(problems),
                check.summary.replace("\n", "; "),
            )
            return check
    heads = await store.call(lambda s: s.history_heads())
    await asyncio.to_thread(write_checkpoint, path, heads, clock(), key)
    return check


async def run_checkpoints(
    store: StoreWorker,
    clock: Clock,
    path: Path,
    key: Ed25519PrivateKey,
    interval_s: float,
    wait: asyncio.Event | None = None,
) -> None:
    """A round at once, then every ``interval_s`` until cancelled; a failed round (the
    store or the file's disk briefly unreachable) is logged and retried next time.
    ``wait``, when given, replaces the timer: each set() triggers one round (tests)."""
    first = True
    while True:
        if not first:
            if wait is None:
                await asyncio.sleep(interval_s)
            else:
                await wait.wait()
                wait.clear()
        first = False
        try:
            await checkpoint_round(store, clock, path, key)
        except Exception as exc:  # never let the schedule die
            log.error("history checkpoint %s failed: %s", path, exc)
