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
whole tail *and* its head by someone who recomputes every hash, or the deletion of a whole
chain: a signed checkpoint of every head kept apart from the database catches both
(`fleet.history.checkpoint`).

The chain covers what the reports read. Every stored event has an ``event`` entry whose
detail is `event_detail` of its row, and every alarm an ``alarm`` entry per step (raised,
dispatched, escalated, acknowledged, on site, closed, cleared) stamped with the time the
alarm row records for that step. `cross_check_events` and `cross_check_alarms` compare the
``events`` and ``alarms`` tables with the chains in both directions: a row deleted, inserted
or edited there (an alarm's state or step times are UPDATEd by design, so they are checked
against the chained steps) is named, with ``table`` saying which table is wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False
from typing import Any

from protos.liftwatch.v1 import records_pb2

GENESIS = "0" * 64
# "evidence" and "evidence_request": the flight recorder (issue 16, fleet.store.evidence);
# "visit", "maintenance_record" and "maintenance_verdict": maintenance truth (issue 17,
# fleet.store.maintenance); "config": a fleet configuration document applied by the
# unit's agent (issue 20, fleet.store.configs).
KINDS = (
    "event",
    "alarm",
    "firmware",
    "coverage",
    "register",
    "evidence",
    "evidence_request",
    "visit",
    "maintenance_record",
    "maintenance_verdict",
    "config",
)


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
    """One break in a unit's chain: ``row_id`` (None when the row is missing) and why.

    ``table`` names where the damage is: ``unit_history`` (the chain itself), ``events``
    or ``alarms`` (a row there disagrees with the chain), or ``checkpoint`` (the chain no
    longer reaches a head recorded in a signed checkpoint)."""

    unit_id: str
    seq: int
    row_id: int | None
    what: str  # edited | deleted | inserted
    reason: str
    table: str = "unit_history"


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


# -- what the chain records of events and alarms, and the cross-check of their tables -------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Alarm step (the ``step`` of an ``alarm`` entry) -> the alarms columns it stamps: the time
# (always the entry's ``at_us``) and, for a person's step, who (the entry's ``by``).
ALARM_STEP_COLUMNS: dict[str, tuple[str, str | None]] = {
    "raised": ("raised_us", None),
    "dispatched": ("dispatched_us", None),
    "escalated": ("escalated_us", None),
    "acknowledged": ("acknowledged_us", "acknowledged_by"),
    "on_site": ("on_site_us", "on_site_by"),
    # The dispatcher's "who was sent, expected when" (migration "crew"); its detail also
    # carries ``crew`` and ``eta`` (`CREW_COLUMNS`). Chains written before it lack the step.
    "crew_dispatched": ("crew_dispatched_us", "crew_dispatched_by"),
    "resolved": ("closed_us", "closed_by"),
    "false_alarm": ("closed_us", "closed_by"),
    "cleared": ("cleared_us", None),
}
# The steps that set ``alarms.state`` (escalated and cleared stamp a time only).
ALARM_STATE_STEPS = ("raised", "dispatched", "acknowledged", "on_site", "resolved", "false_alarm")
# The alarms columns a crew_dispatched step sets beside its time and who: who was sent
# (detail ``crew``) and when they are expected (detail ``eta``, ISO as `iso_us` writes).
CREW_COLUMNS = ("crew", "crew_eta_us")
ALARM_COLUMNS = tuple(
    sorted(
        {c for pair in ALARM_STEP_COLUMNS.values() for c in pair if c is not None}
        | set(CREW_COLUMNS)
    )
)


def type_name(number: int) -> str:
    """``ENTRAPMENT`` for EVENT_TYPE_ENTRAPMENT, as the history writes a type; the number
    as text when the wire enum does not know it."""
    try:
        return records_pb2.EventType.Name(number).removeprefix("EVENT_TYPE_")
    except ValueError:
        return str(number)


def iso_us(us: int | None) -> str | None:
    """µs since the epoch as the history writes a time: ISO 8601 UTC with a ``Z``."""
    if us is None:
        return None
    moment = _EPOCH + dt.timedelta(microseconds=int(us))
    return moment.isoformat().replace("+00:00", "Z")


def _us_of(text: object) -> int | None:
    """µs since the epoch of a time `iso_us` wrote; None for anything else (an edited
    detail then differs from its row, which the cross-check names)."""
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class EventFact:
    """One ``events`` row: what the reports and the audit read of an event.

    ``codes`` says whether the row's ``gb_code`` and ``at_landing`` are part of what the
    chain records (they are for events stored by a fleet that writes them on ingest)."""

    agent_id: str
    seq: int
    unit_id: str
    time_us: int
    event_id: str
    type: int
    phase: int
    onset_us: int | None
    floor: int | None
    reason: str
    gb_code: int | None = None
    at_landing: bool | None = None
    codes: bool = False


def event_detail(fact: EventFact) -> dict[str, Any]:
    """The detail of the ``event`` history entry recording ``fact``: the one place that
    says what of an event is chained (ingest writes it, the cross-check recomputes it)."""
    detail: dict[str, Any] = {
        "agent_id": fact.agent_id,
        "seq": int(fact.seq),
        "event_id": fact.event_id,
        "type": type_name(fact.type),
        "phase": "RAISED" if fact.phase == records_pb2.PHASE_RAISED else "CLEARED",
        "time": iso_us(fact.time_us),
        "onset": iso_us(fact.onset_us),
        "floor": None if fact.floor is None else int(fact.floor),
        "reason": fact.reason,
    }
    if fact.codes:
        detail["gb_code"] = None if fact.gb_code is None else int(fact.gb_code)
        detail["at_landing"] = None if fact.at_landing is None else bool(fact.at_landing)
    return detail


@dataclass(frozen=True, slots=True)
class AlarmFact:
    """One ``alarms`` row: its identity, state, and every step column (`ALARM_COLUMNS`,
    times in µs or None, names as text) by column name."""

    alarm_id: int
    unit_id: str
    event_id: str
    type: int
    state: str
    columns: Mapping[str, int | str | None]


@dataclass(frozen=True, slots=True)
class HistoryCheck:
    """One verification of the chains against a signed checkpoint, as kept for the
    dashboard: when, by whom (``serve`` on its schedule, or ``cli``), which checkpoint
    (its file and when it was written; None when it could not be read), how many units
    it named, how many problems were found (0: intact) and the first few, one a line."""

    checked: dt.datetime
    source: str
    checkpoint_file: str
    checkpoint_written: dt.datetime | None
    units: int
    problems: int
    summary: str

    @property
    def intact(self) -> bool:
        """Whether the check found nothing wrong."""
        return self.problems == 0


def _detail_of(row: HistoryRow) -> dict[str, Any] | None:
    try:
        detail = json.loads(row.detail)
    except ValueError:
        return None
    return detail if isinstance(detail, dict) else None


def _entries(
    chains: Mapping[str, Sequence[HistoryRow]], kind: str
) -> Iterator[tuple[str, HistoryRow, dict[str, Any]]]:
    """(unit_id, row, parsed detail) of every readable entry of ``kind``."""
    for unit_id, rows in chains.items():
        for row in rows:
            detail = _detail_of(row) if row.kind == kind else None
            if detail is not None:
                yield unit_id, row, detail


def cross_check_events(
    chains: Mapping[str, Sequence[HistoryRow]], events: Iterable[EventFact]
) -> list[Problem]:
    """Every disagreement between the ``events`` table and the chains: an events row with
    no entry in its unit's chain (inserted), a chained event whose row is gone (deleted),
    a row whose content differs from its entry (edited). Entries the chain check already
    names as unreadable are skipped here."""
    chained: dict[tuple[str, str, int], tuple[HistoryRow, dict[str, Any]]] = {}
    for unit_id, row, detail in _entries(chains, "event"):
        try:
            key = (unit_id, str(detail["agent_id"]), int(detail["seq"]))
        except (KeyError, TypeError, ValueError):
            continue  # verify_chain names an entry whose content was edited
        chained[key] = (row, detail)
    problems: list[Problem] = []
    for fact in events:
        key = (fact.unit_id, fact.agent_id, fact.seq)
        name = f"events row {fact.agent_id}#{fact.seq} ({type_name(fact.type)})"
        found = chained.pop(key, None)
        if found is None:
            problems.append(
                Problem(fact.unit_id, 0, None, "inserted", f"{name} has no history entry", "events")
            )
            continue
        row, detail = found
        expected = event_detail(dataclasses.replace(fact, codes="gb_code" in detail))
        differ = sorted(
            k for k in expected.keys() | detail.keys() if expected.get(k) != detail.get(k)
        )
        if differ:
            problems.append(
                Problem(
                    fact.unit_id,
                    row.seq,
                    row.row_id,
                    "edited",
                    f"{name} differs from history seq {row.seq} in {', '.join(differ)}",
                    "events",
                )
            )
    for (unit_id, agent_id, seq), (row, detail) in sorted(chained.items()):
        problems.append(
            Problem(
                unit_id,
                row.seq,
                row.row_id,
                "deleted",
                f"events row {agent_id}#{seq} ({detail.get('type')} {detail.get('phase')} at "
                f"{detail.get('time')}) is gone; history seq {row.seq} recorded it",
                "events",
            )
        )
    return problems


def cross_check_alarms(
    chains: Mapping[str, Sequence[HistoryRow]], alarms: Iterable[AlarmFact]
) -> list[Problem]:
    """Every disagreement between the ``alarms`` table and the chains. An alarm row is
    UPDATEd as it goes through its steps, so each of its step columns must hold the time
    (and who) of the newest chained entry of that step, or nothing when none is chained,
    and its state must be the newest chained state step. An alarm row without a chained
    ``raised`` entry is inserted; a chained alarm without its row is deleted."""
    steps: dict[tuple[str, int], list[tuple[HistoryRow, dict[str, Any]]]] = {}
    for unit_id, row, detail in _entries(chains, "alarm"):
        try:
            key = (unit_id, int(detail["alarm_id"]))
        except (KeyError, TypeError, ValueError):
            continue
        steps.setdefault(key, []).append((row, detail))
    problems: list[Problem] = []
    for fact in alarms:
        entries = steps.pop((fact.unit_id, fact.alarm_id), [])
        name = f"alarms row {fact.alarm_id} ({type_name(fact.type)})"
        raised = [(r, d) for r, d in entries if d.get("step") == "raised"]
        if not raised:
            problems.append(
                Problem(fact.unit_id, 0, None, "inserted", f"{name} has no history entry", "alarms")
            )
            continue
        first, detail = raised[0]
        wrong: list[str] = []
        if detail.get("type") != type_name(fact.type):
            wrong.append(f"type (history: {detail.get('type')})")
        if "event_id" in detail and detail["event_id"] != fact.event_id:
            wrong.append(f"event_id (history: {detail['event_id']})")
        expected: dict[str, int | str | None] = {}
        state = None
        for row, step_detail in entries:
            step = step_detail.get("step")
            if not isinstance(step, str) or step not in ALARM_STEP_COLUMNS:
                continue
            at_column, by_column = ALARM_STEP_COLUMNS[step]
            expected[at_column] = row.at_us
            if by_column is not None:
                expected[by_column] = str(step_detail.get("by", ""))
            if step in ALARM_STATE_STEPS:
                state = step
            if step == "crew_dispatched":
                expected["crew"] = str(step_detail.get("crew", ""))
                expected["crew_eta_us"] = _us_of(step_detail.get("eta"))
            if step in ("resolved", "false_alarm"):
                # Closed while the event was still raised: the reason is kept on the row.
                early = step_detail.get("event") == "raised"
                expected["close_reason"] = str(step_detail.get("reason", "")) if early else ""
        if state != fact.state:
            wrong.append(f"state {fact.state} (history: {state})")
        if fact.columns.get("close_reason", "") != expected.get("close_reason", ""):
            wrong.append(f"close_reason (history: {expected.get('close_reason', '')!r})")
        for column in ALARM_COLUMNS:
            value = fact.columns.get(column)
            text_column = column.endswith("_by") or column == "crew"
            want = expected.get(column, "" if text_column else None)
            if value != want:
                shown = iso_us(want) if column.endswith("_us") and isinstance(want, int) else want
                wrong.append(f"{column} (history: {shown})")
        if wrong:
            problems.append(
                Problem(
                    fact.unit_id,
                    entries[-1][0].seq,
                    entries[-1][0].row_id,
                    "edited",
                    f"{name} differs from its history (raised at seq {first.seq}) in "
                    + "; ".join(wrong),
                    "alarms",
                )
            )
    for (unit_id, alarm_id), entries in sorted(steps.items()):
        row = entries[0][0]
        problems.append(
            Problem(
                unit_id,
                row.seq,
                row.row_id,
                "deleted",
                f"alarms row {alarm_id} is gone; history seq {row.seq} recorded it",
                "alarms",
            )
        )
    return problems
