"""The per-unit lifecycle history: an append-only, hash-chained log nobody can quietly edit.

Every event, alarm step, firmware change, coverage change and register change of a unit is
appended to that unit's history by the store, in the same transaction as the change it
records (see `fleet.store.lifecycle`). Entry ``n`` of a unit carries:

- ``seq`` = n (1, 2, 3, ... per unit, no gaps), ``at`` (µs since the epoch, the fleet's
  clock), ``kind`` (`KINDS`) and ``detail`` (a JSON object, what changed);
- ``prev_hash``: the ``hash`` of entry n - 1 (`GENESIS` for the first);
- ``hash``: SHA-256 (hex) over `canonical` JSON of all the fields above.

`verify_chain` walks a unit's rows in seq order and names every row that breaks the chain:
an edited row (its content no longer hashes to its stored hash, or its hash was recomputed
so the next row's ``prev_hash`` no longer matches), a deleted row (a gap in ``seq``), an
inserted row (a repeated ``seq``, or rows past the head). The head table
(``unit_history_head``: the last seq and hash of each unit) catches the deletion of the
newest rows. What no hash chain inside one database can catch is a rewrite of a unit's
whole tail *and* its head by someone who recomputes every hash; `verify-history --json`
prints each unit's head hash, so publishing those (a daily digest to the regulator) anchors
the chain outside the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False
from typing import Any

GENESIS = "0" * 64
KINDS = ("event", "alarm", "firmware", "coverage", "register")


def canonical(value: object) -> str:
    """The one JSON text of ``value``: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(
    unit_id: str, seq: int, at_us: int, kind: str, detail: Mapping[str, Any], prev_hash: str
) -> str:
    """SHA-256 (hex) of the canonical JSON of one history entry: the object with the keys
    unit_id, seq, at_us, kind, detail and prev_hash."""
    return detail_entry_hash(unit_id, seq, at_us, kind, canonical(detail), prev_hash)


def detail_entry_hash(
    unit_id: str, seq: int, at_us: int, kind: str, detail_json: str, prev_hash: str
) -> str:
    """`entry_hash` given ``detail_json``, the `canonical` text of the detail (which the
    store keeps as the row's detail): the detail is encoded once, not twice. The body is
    `canonical` of the entry written out: keys in sorted order, integers as they are."""
    body = (
        f'{{"at_us":{int(at_us)},"detail":{detail_json},"kind":{encode_basestring(kind)},'
        f'"prev_hash":{encode_basestring(prev_hash)},"seq":{int(seq)},'
        f'"unit_id":{encode_basestring(unit_id)}}}'
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One stored history row as read back (``detail`` is the stored JSON text)."""

    row_id: int
    unit_id: str
    seq: int
    at_us: int
    kind: str
    detail: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Head:
    """A unit's chain head as the store keeps it: the newest seq and its hash."""

    unit_id: str
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One break in a unit's chain: ``row_id`` (None when the row is missing) and why."""

    unit_id: str
    seq: int
    row_id: int | None
    what: str  # edited | deleted | inserted
    reason: str


def verify_chain(unit_id: str, rows: Sequence[HistoryRow], head: Head | None) -> list[Problem]:
    """Every break in the chain of ``unit_id``: ``rows`` in (seq, row_id) order."""
    problems: list[Problem] = []
    expected_seq = 1
    prev_hash = GENESIS
    for row in rows:
        if row.seq < expected_seq:
            problems.append(
                Problem(unit_id, row.seq, row.row_id, "inserted", f"seq {row.seq} appears twice")
            )
            continue
        if row.seq > expected_seq:
            missing = (
                f"seq {expected_seq}"
                if row.seq == expected_seq + 1
                else f"seqs {expected_seq}..{row.seq - 1}"
            )
            problems.append(
                Problem(unit_id, expected_seq, None, "deleted", f"{missing} missing before row")
            )
            prev_hash = row.prev_hash  # resynchronise: report the gap once, go on checking
        try:
            detail = json.loads(row.detail)
        except ValueError:
            detail = None
        if not isinstance(detail, dict) or row.kind not in KINDS:
            problems.append(
                Problem(unit_id, row.seq, row.row_id, "edited", "detail or kind is not valid")
            )
        elif entry_hash(unit_id, row.seq, row.at_us, row.kind, detail, row.prev_hash) != row.hash:
            problems.append(
                Problem(unit_id, row.seq, row.row_id, "edited", "content does not match its hash")
            )
        elif row.prev_hash != prev_hash:
            problems.append(
                Problem(
                    unit_id,
                    row.seq,
                    row.row_id,
                    "edited",
                    "prev_hash does not match the previous entry: this row or the one before "
                    "was replaced",
                )
            )
        prev_hash = row.hash
        expected_seq = row.seq + 1
    last = expected_seq - 1
    if head is None:
        if rows:
            problems.append(
                Problem(unit_id, rows[0].seq, rows[0].row_id, "inserted", "no chain head")
            )
    elif head.seq > last:
        problems.append(
            Problem(
                unit_id, last + 1, None, "deleted", f"head says seq {head.seq}, rows end at {last}"
            )
        )
    elif head.seq < last:
        extra = next(r for r in rows if r.seq > head.seq)
        problems.append(
            Problem(unit_id, extra.seq, extra.row_id, "inserted", f"past the head (seq {head.seq})")
        )
    elif rows and head.hash != prev_hash:
        problems.append(
            Problem(unit_id, last, rows[-1].row_id, "edited", "the newest row is not the head")
        )
    return problems


def group_rows(rows: Iterable[HistoryRow]) -> dict[str, list[HistoryRow]]:
    """Rows by unit, each list in the order given."""
    units: dict[str, list[HistoryRow]] = {}
    for row in rows:
        units.setdefault(row.unit_id, []).append(row)
    return units
