"""Turns the agent's domain values into wire `Record`s (seq is set by the outbox)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from agent.detect.events import Event, EventType, Phase
from agent.detect.health import HealthSnapshot
from agent.state import CarState, ControllerIdentity, Direction, DoorState, ServiceMode
from protos.liftwatch.v1 import records_pb2

_DIRECTION = {
    Direction.NONE: records_pb2.DIRECTION_NONE,
    Direction.UP: records_pb2.DIRECTION_UP,
    Direction.DOWN: records_pb2.DIRECTION_DOWN,
}
_DOOR = {
    DoorState.OPEN: records_pb2.DOOR_STATE_OPEN,
    DoorState.CLOSED: records_pb2.DOOR_STATE_CLOSED,
    DoorState.OPENING: records_pb2.DOOR_STATE_OPENING,
    DoorState.CLOSING: records_pb2.DOOR_STATE_CLOSING,
    DoorState.PARTLY_OPEN: records_pb2.DOOR_STATE_PARTLY_OPEN,
    DoorState.UNKNOWN: records_pb2.DOOR_STATE_UNSPECIFIED,
}
# Looked up by name so that adding a value to the domain enum without adding it to the
# contract fails at import, not at the first record.
_MODE: dict[ServiceMode, records_pb2.ServiceMode] = {
    mode: getattr(records_pb2, f"SERVICE_MODE_{mode.name}") for mode in ServiceMode
}
_EVENT_TYPE: dict[EventType, records_pb2.EventType] = {
    t: getattr(records_pb2, f"EVENT_TYPE_{t.name}") for t in EventType
}
_PHASE = {Phase.RAISED: records_pb2.PHASE_RAISED, Phase.CLEARED: records_pb2.PHASE_CLEARED}

# CarState fields copied as they are when the profile provides them.
_OPTIONAL_FIELDS = (
    "floor",
    "position_mm",
    "speed_mm_s",
    "moving",
    "door_zone",
    "levelled",
    "door_lock_closed",
    "safety_circuit_closed",
    "occupied",
    "load_percent",
    "alarm_button",
    "overload",
    "fault_code",
    "mains_ok",
    "reopen_active",
)


@dataclass(frozen=True, slots=True)
class TimeBase:
    """Maps monotonic seconds to UTC: one reading of both clocks taken at the same moment."""

    monotonic: float
    utc: float

    def to_utc(self, t: float) -> float:
        """The UTC epoch seconds of monotonic time ``t``."""
        return self.utc + (t - self.monotonic)


def _timestamp(epoch_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(epoch_s * 1e9))
    return ts


def _record(unit_id: str, utc_s: float) -> records_pb2.Record:
    return records_pb2.Record(unit_id=unit_id, time=_timestamp(utc_s))


def car_state_record(unit_id: str, sample: CarState, time: TimeBase) -> records_pb2.Record:
    """A CarState record of ``sample``; absent signals stay absent on the wire."""
    record = _record(unit_id, time.to_utc(sample.t))
    msg = record.car_state
    msg.SetInParent()
    for name in _OPTIONAL_FIELDS:
        value = getattr(sample, name)
        if value is not None:
            setattr(msg, name, value)
    msg.direction = _DIRECTION[sample.direction]
    msg.door = _DOOR[sample.door]
    msg.mode = _MODE[sample.mode]
    return record


def event_record(unit_id: str, event: Event, event_id: str, time: TimeBase) -> records_pb2.Record:
    """An Event record for one phase of one occurrence, identified by ``event_id``."""
    record = _record(unit_id, time.to_utc(event.at))
    msg = record.event
    msg.event_id = event_id
    msg.type = _EVENT_TYPE[event.type]
    msg.phase = _PHASE[event.phase]
    msg.onset.CopyFrom(_timestamp(time.to_utc(event.onset)))
    msg.reason = event.reason
    # The reason's code and parameters (agent.detect.reasons): a fleet renders them in
    # the reader's language; an older fleet ignores them and shows the English text.
    msg.reason_code = event.reason_code
    msg.reason_params.update(event.reason_params)
    msg.gb_code = event.code
    if event.floor is not None:
        msg.floor = event.floor
    if event.at_landing is not None:
        msg.at_landing = event.at_landing
    return record


def counters_record(
    unit_id: str, health: HealthSnapshot, t: float, time: TimeBase
) -> records_pb2.Record:
    """A Counters record of a unit's health as of monotonic time ``t``."""
    record = _record(unit_id, time.to_utc(t))
    c = record.counters
    c.trips = health.trips
    c.door_cycles = health.door_cycles
    c.run_hours = int(health.run_hours)
    if health.door_open_median_ms is not None:
        c.door_open_median_ms = health.door_open_median_ms
    if health.door_close_median_ms is not None:
        c.door_close_median_ms = health.door_close_median_ms
    if health.door_open_trend is not None:
        c.door_open_trend = health.door_open_trend
    if health.door_close_trend is not None:
        c.door_close_trend = health.door_close_trend
    for floor, count in health.reopenings_by_landing:
        c.reopenings_by_landing[floor] = count
    return record


def controller_info(identity: ControllerIdentity, profile: str) -> records_pb2.ControllerInfo:
    """The wire form of a controller's identity and the profile that reads it."""
    return records_pb2.ControllerInfo(
        vendor=identity.vendor,
        model=identity.model,
        firmware=identity.firmware,
        serial=identity.serial,
        profile=profile,
    )


def controller_info_record(
    unit_id: str, info: records_pb2.ControllerInfo, utc_s: float
) -> records_pb2.Record:
    """A ControllerInfo record (sent at start and whenever the identity changes)."""
    record = _record(unit_id, utc_s)
    record.controller_info.CopyFrom(info)
    return record


def link_status_record(
    unit_id: str, status: records_pb2.LinkStatus, utc_s: float
) -> records_pb2.Record:
    """A LinkStatus record with the link's counters as they stand."""
    record = _record(unit_id, utc_s)
    record.link_status.CopyFrom(status)
    return record


def state_wire(sample: CarState) -> tuple[int, int, int]:
    """The wire enum values of ``sample``'s door, direction and mode (DoorState,
    Direction, ServiceMode), as CarState records carry them."""
    return _DOOR[sample.door], _DIRECTION[sample.direction], _MODE[sample.mode]


def evidence_record(
    unit_id: str, evidence: records_pb2.Evidence, utc_s: float
) -> records_pb2.Record:
    """A Record carrying ``evidence`` (the flight recorder's window, agent/recorder.py)."""
    record = _record(unit_id, utc_s)
    record.evidence.CopyFrom(evidence)
    return record


def event_type_wire(event_type: EventType) -> records_pb2.EventType:
    """The wire enum value of ``event_type``."""
    return _EVENT_TYPE[event_type]


def event_type_name(wire: int) -> str:
    """``ENTRAPMENT`` for the wire value of EVENT_TYPE_ENTRAPMENT (metric labels, logs)."""
    return records_pb2.EventType.Name(wire).removeprefix("EVENT_TYPE_")


def phase_name(wire: int) -> str:
    """``RAISED`` / ``CLEARED`` for a wire Phase value."""
    return records_pb2.Phase.Name(wire).removeprefix("PHASE_")
