"""What a scenario's ``[[evidence]]`` may require an event's flight-recorder window to show.

Each check reads the samples of the Evidence the fleet stored for an expected event
(decoded by `protos.evidence`, as the fleet serves them) and returns None when the
evidence shows what it names, else one sentence saying what it shows instead. They judge
samples, not the event's own fields: the point is that the evidence alone settles what the
car did (issue 16, item 7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protos.evidence import EvidenceSample
from protos.liftwatch.v1 import records_pb2

Check = Callable[[records_pb2.Evidence, Sequence[EvidenceSample]], str | None]

# Doors that are not shut: the lock circuit must not be made with any of these.
_NOT_CLOSED = frozenset(
    {
        records_pb2.DOOR_STATE_OPEN,
        records_pb2.DOOR_STATE_OPENING,
        records_pb2.DOOR_STATE_CLOSING,
        records_pb2.DOOR_STATE_PARTLY_OPEN,
    }
)


def _until(
    evidence: records_pb2.Evidence, samples: Sequence[EvidenceSample]
) -> list[EvidenceSample]:
    """The link-up samples up to and including the onset (to the millisecond: the wire's
    resolution)."""
    onset_us = evidence.onset.ToMicroseconds()
    return [s for s in samples if s.link_up and s.time_us <= onset_us + 999]


def trapped_between_floors(
    evidence: records_pb2.Evidence, samples: Sequence[EvidenceSample]
) -> str | None:
    """Before the onset the car was moving, then stopped outside the door zone with its
    doors closed and someone inside (the onset's sample is the first trapped one)."""
    before = _until(evidence, samples)
    if not before:
        return "no sample at or before the onset"
    if not any(s.moving for s in before):
        return "the car never moves before the onset"
    last = before[-1]
    trapped = (
        last.moving is False
        and last.door_zone is False
        and last.door == records_pb2.DOOR_STATE_CLOSED
        and last.occupied is True
    )
    if not trapped:
        return (
            f"at the onset the car shows moving={last.moving}, door_zone={last.door_zone}, "
            f"door={records_pb2.DoorState.Name(last.door)}, occupied={last.occupied}"
        )
    return None


def lock_made_doors_open(
    evidence: records_pb2.Evidence, samples: Sequence[EvidenceSample]
) -> str | None:
    """Up to the raise, some sample has the door lock circuit made while a door reads
    open (or opening, closing, partly open)."""
    raised_us = evidence.raised.ToMicroseconds()
    seen = [s for s in samples if s.link_up and s.time_us <= raised_us + 999]
    if any(s.door_lock_closed is True and s.door in _NOT_CLOSED for s in seen):
        return None
    doors = sorted({records_pb2.DoorState.Name(s.door) for s in seen if s.door_lock_closed})
    return f"the lock circuit is made only with the doors {', '.join(doors) or '(never made)'}"


CHECKS: dict[str, Check] = {
    "trapped_between_floors": trapped_between_floors,
    "lock_made_doors_open": lock_made_doors_open,
}
