"""The flight recorder's windows as the API shows them (issue 16), and their scoped reads.

`EvidenceView` is ``GET /api/events/{event_id}/evidence`` (and the ``evidence`` of an
on-demand request): the stored Evidence decoded (`protos.evidence.decode_samples`) into
one object per sample, times as the rest of the API writes them (`fleet.read.views.iso`),
enums by name. `evidence_csv_rows` gives the same samples as CSV rows. The reads take the
caller's `Scope` like every read (`fleet.read.scope`): an Evidence of a unit the caller
may not see is answered as one that does not exist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from google.protobuf.message import DecodeError

from fleet.read.scope import Scope
from fleet.read.shape import keys_of, out, response, to_json
from fleet.read.views import event_type_name, iso
from fleet.store.evidence import EvidenceRequestRow, EvidenceRow, end_name
from fleet.store.worker import StoreWorker
from protos.evidence import EvidenceError, EvidenceSample, decode_samples
from protos.liftwatch.v1 import records_pb2

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Door = Literal["open", "closed", "opening", "closing", "partly_open", "unknown"]
Direction = Literal["up", "down", "none", "unknown"]
Mode = Literal[
    "stopped",
    "normal",
    "inspection",
    "fire_return",
    "firefighter",
    "emergency_power",
    "earthquake",
    "unknown",
]
End = Literal["raise", "post", "cleared", "max", "request", "shutdown"]


class UnreadableEvidenceError(Exception):
    """A stored Evidence that no longer decodes (altered in the database)."""


def _enum_name(enum: object, prefix: str, number: int) -> str:
    """``open`` for DOOR_STATE_OPEN; ``unknown`` for 0 (unspecified) or a number the
    enum does not define."""
    try:
        name = str(enum.Name(number))  # type: ignore[attr-defined]
    except ValueError:
        return "unknown"
    return "unknown" if name.endswith("_UNSPECIFIED") else name.removeprefix(prefix).lower()


def _at(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


@response("EvidenceSample")
@dataclass(frozen=True)
class EvidenceSampleView:
    """One sample of the flight recorder, as the controller gave it; a value the unit's
    profile cannot read (or the link was down) is null."""

    time: str = out("when the sample was taken (the agent's clock)", fmt="date-time")
    t_ms: int = out("milliseconds since the window's start", minimum=0)
    link_up: bool = out("false: the controller did not answer; the values are then null")
    position_mm: int | None = out()
    speed_mm_s: int | None = out()
    load_percent: int | None = out()
    floor: int | None = out()
    fault_code: int | None = out()
    door: Door = out()
    direction: Direction = out()
    mode: Mode = out()
    moving: bool | None = out()
    door_zone: bool | None = out()
    levelled: bool | None = out()
    door_lock_closed: bool | None = out()
    safety_circuit_closed: bool | None = out()
    occupied: bool | None = out()
    alarm_button: bool | None = out()
    overload: bool | None = out()
    mains_ok: bool | None = out()
    reopen_active: bool | None = out()

    @classmethod
    def of(cls, sample: EvidenceSample, start_us: int) -> EvidenceSampleView:
        """``sample`` of a window starting at ``start_us``."""
        return cls(
            time=iso(_at(sample.time_us)),
            t_ms=max(0, (sample.time_us - start_us) // 1000),
            link_up=sample.link_up,
            position_mm=sample.position_mm,
            speed_mm_s=sample.speed_mm_s,
            load_percent=sample.load_percent,
            floor=sample.floor,
            fault_code=sample.fault_code,
            door=_enum_name(records_pb2.DoorState, "DOOR_STATE_", sample.door),  # type: ignore[arg-type]
            direction=_enum_name(records_pb2.Direction, "DIRECTION_", sample.direction),  # type: ignore[arg-type]
            mode=_enum_name(records_pb2.ServiceMode, "SERVICE_MODE_", sample.mode),  # type: ignore[arg-type]
            moving=sample.moving,
            door_zone=sample.door_zone,
            levelled=sample.levelled,
            door_lock_closed=sample.door_lock_closed,
            safety_circuit_closed=sample.safety_circuit_closed,
            occupied=sample.occupied,
            alarm_button=sample.alarm_button,
            overload=sample.overload,
            mains_ok=sample.mains_ok,
            reopen_active=sample.reopen_active,
        )


# The CSV has a column per key of the sample's definition, in its order.
EVIDENCE_CSV_COLUMNS = keys_of(EvidenceSampleView)


def _time(stamp: object) -> str | None:
    """A Timestamp field as the API writes a time; None when it is unset (all zero)."""
    seconds, nanos = int(getattr(stamp, "seconds", 0)), int(getattr(stamp, "nanos", 0))
    if seconds == 0 and nanos == 0:
        return None
    return iso(_at(seconds * 1_000_000 + nanos // 1000))


@response("Evidence")
@dataclass(frozen=True)
class EvidenceView:
    """The flight recorder's window of one event (its final window, which supersedes the
    one written at the raise) or of an on-demand request."""

    event_id: str | None = out("the event it is the evidence of; null for a request")
    request_id: str | None = out("the on-demand request it answers; null for an event")
    unit_id: str = out()
    event_type: str | None = out("the event's type, e.g. ENTRAPMENT; null when not stored")
    start: str = out("the first sample's time", fmt="date-time")
    onset: str | None = out(fmt="date-time")
    raised: str | None = out(fmt="date-time")
    cleared: str | None = out("the clear, when it fell inside the window", fmt="date-time")
    end: End = out("why the window ends where it does")
    truncated: bool = out("the recorder held less than pre_s before the onset")
    pre_s: int = out(minimum=0)
    post_s: int = out(minimum=0)
    max_s: int = out(minimum=0)
    sha256: str = out("SHA-256 (hex) of the stored Evidence bytes, as chained in the history")
    samples: tuple[EvidenceSampleView, ...] = out("oldest first")

    @classmethod
    def of(cls, row: EvidenceRow) -> EvidenceView:
        """The stored ``row`` decoded. It was checked on ingest; a row altered since that
        no longer decodes raises `UnreadableEvidenceError` naming it."""
        try:
            evidence = records_pb2.Evidence.FromString(row.body)
            samples = decode_samples(evidence)
        except (DecodeError, EvidenceError) as exc:
            raise UnreadableEvidenceError(
                f"the stored evidence {row.agent_id}#{row.seq} of unit {row.unit_id!r} does "
                f"not decode ({exc}); verify-history names what was altered"
            ) from None
        start_us = evidence.start.seconds * 1_000_000 + evidence.start.nanos // 1000
        return cls(
            event_id=evidence.event_id or None,
            request_id=evidence.request_id or None,
            unit_id=row.unit_id,
            event_type=event_type_name(row.event_type) if row.event_type else None,
            start=iso(_at(start_us)),
            onset=_time(evidence.onset),
            raised=_time(evidence.raised),
            cleared=_time(evidence.cleared),
            end=end_name(evidence.end),  # type: ignore[arg-type]
            truncated=evidence.truncated,
            pre_s=evidence.pre_s,
            post_s=evidence.post_s,
            max_s=evidence.max_s,
            sha256=row.sha256,
            samples=tuple(EvidenceSampleView.of(s, start_us) for s in samples),
        )


def evidence_csv_rows(view: EvidenceView) -> list[list[object]]:
    """The samples of ``view`` as rows of `EVIDENCE_CSV_COLUMNS`, each cell the sample's
    JSON value (`EvidenceSampleView` is the one definition of both)."""
    shown = (to_json(s) for s in view.samples)
    return [[row[c] for c in EVIDENCE_CSV_COLUMNS] for row in shown]


RequestStatus = Literal["sent", "answered", "expired"]


@response("EvidenceRequest")
@dataclass(frozen=True)
class EvidenceRequestView:
    """A dispatcher's on-demand request for the last seconds of a car."""

    request_id: str = out()
    unit_id: str = out()
    seconds: int = out(minimum=1)
    requested_by: str = out()
    requested_at: str = out(fmt="date-time")
    status: RequestStatus = out(
        "sent (on its way to the agent, or waiting for its answer), answered, or expired "
        "(not answered in time, or the agent could not be asked)"
    )
    evidence: EvidenceView | None = out("the answer, once it is stored")

    @classmethod
    def of(
        cls, row: EvidenceRequestRow, answer: EvidenceRow | None, now: dt.datetime
    ) -> EvidenceRequestView:
        """``row`` as of ``now``, with its ``answer`` when one is stored."""
        status = "answered" if answer is not None else row.status(now)
        return cls(
            request_id=row.request_id,
            unit_id=row.unit_id,
            seconds=row.seconds,
            requested_by=row.requested_by,
            requested_at=iso(row.requested),
            status=status,  # type: ignore[arg-type]
            evidence=None if answer is None else EvidenceView.of(answer),
        )


class EvidenceReads:
    """The scoped reads of stored Evidence and requests (see the module docstring)."""

    def __init__(self, store: StoreWorker) -> None:
        self._store = store

    async def event(self, scope: Scope, event_id: str) -> EvidenceRow | None:
        """The Evidence answering for ``event_id``, or None when there is none or its
        unit is out of ``scope`` (then it does not exist for the caller)."""
        row = await self._store.call(lambda s: s.event_evidence(event_id))
        if row is None or not await _sees(self._store, scope, row.unit_id):
            return None
        return row

    async def request(
        self, scope: Scope, request_id: str
    ) -> tuple[EvidenceRequestRow, EvidenceRow | None] | None:
        """Request ``request_id`` and its answer (None until stored), or None when there
        is no such request or its unit is out of ``scope``."""
        found = await self._store.call(
            lambda s: (s.evidence_request(request_id), s.request_evidence(request_id))
        )
        row, answer = found
        if row is None or not await _sees(self._store, scope, row.unit_id):
            return None
        return row, answer


async def _sees(store: StoreWorker, scope: Scope, unit_id: str) -> bool:
    """Whether ``unit_id`` is in ``scope`` (`require_unit` without the exception)."""
    if scope.everything:
        return True
    unit = await store.get_unit(unit_id)
    return unit is not None and scope.sees(unit.register.contractor)
