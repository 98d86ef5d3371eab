"""`UnitMonitor`: everything the agent knows about one unit, turned into records.

It takes what the bus read (raw registers with their monotonic read time, identity
strings, link failures), decodes, runs the detectors, and returns the records to keep:
a CarState on every meaningful change and at least every ``state_interval_s``, every
event phase, Counters at a steady interval, ControllerInfo when the identity changes and
LinkStatus when the link goes down or comes back. No I/O here: the caller keeps them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from agent.bus.link import LinkFault
from agent.config import UnitConfig
from agent.decode import reference
from agent.detect import link
from agent.detect.engine import UnitDetectors
from agent.detect.events import Event, EventType, Phase
from agent.records import (
    TimeBase,
    car_state_record,
    controller_info,
    controller_info_record,
    counters_record,
    event_record,
    link_status_record,
)
from agent.state import CarState, ControllerIdentity
from protos.liftwatch.v1 import records_pb2


@dataclass(slots=True)
class LinkCounters:
    """Running totals of one unit's requests and their failures (mutable on purpose)."""

    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    exception_responses: int = 0
    malformed: int = 0
    implausible_values: int = 0


def _change_key(s: CarState) -> tuple[object, ...]:
    # Position, speed and load change on every poll of a moving car; recording them would
    # be recording at poll rate. The states a person or a rule cares about are these.
    return (
        s.floor,
        s.direction,
        s.moving,
        s.door_zone,
        s.levelled,
        s.door,
        s.door_lock_closed,
        s.safety_circuit_closed,
        s.occupied,
        s.alarm_button,
        s.overload,
        s.mode,
        s.fault_code,
        s.mains_ok,
    )


class UnitMonitor:
    """Decodes, detects and records for one unit; returns `Record`s, never writes them."""

    def __init__(
        self,
        unit: UnitConfig,
        *,
        link_lost_after_s: float,
        state_interval_s: float,
        counters_interval_s: float,
    ) -> None:
        self.unit = unit
        self.detectors = UnitDetectors(unit.detect)
        self.identity: records_pb2.ControllerInfo | None = None
        self.link = LinkCounters()
        self._link_state = link.LinkState()
        self._link_lost_after_s = link_lost_after_s
        self._state_interval_s = state_interval_s
        self._counters_interval_s = counters_interval_s
        self._last_key: tuple[object, ...] | None = None
        self._last_state_t = float("-inf")
        self._last_counters_t: float | None = None
        self._open_events: dict[EventType, str] = {}
        self.last_sample: CarState | None = None

    @property
    def link_up(self) -> bool:
        """False while CONTROLLER_LINK_LOST is raised for this unit."""
        return not self._link_state.lost

    def detectable(self) -> tuple[set[EventType], set[EventType]]:
        """The events this unit's profile lets the agent detect, and those it cannot."""
        detectable, undetectable = self.detectors.detectable(reference.SIGNALS)
        return detectable | {EventType.CONTROLLER_LINK_LOST}, undetectable

    def on_state(
        self, registers: Sequence[int], t: float, time: TimeBase
    ) -> list[records_pb2.Record]:
        """Records caused by one good read of the state registers at monotonic ``t``."""
        try:
            sample = reference.decode_state(registers, t)
        except reference.DecodeError:
            # An implausible block is dropped and counted, never fed to the detectors.
            self.link.requests += 1
            self.link.responses += 1
            self.link.implausible_values += 1
            return []
        self.link.requests += 1
        self.link.responses += 1
        records = self._on_link_outcome(True, t, time)
        self.last_sample = sample
        records += self._events(self.detectors.feed(sample), time)
        key = _change_key(sample)
        if key != self._last_key or t - self._last_state_t >= self._state_interval_s:
            records.append(car_state_record(self.unit.id, sample, time))
            self._last_key, self._last_state_t = key, t
        if self._last_counters_t is None or t - self._last_counters_t >= self._counters_interval_s:
            records.append(counters_record(self.unit.id, sample, time))
            self._last_counters_t = t
        return records

    def on_identity(
        self, registers: Sequence[int], t: float, time: TimeBase
    ) -> list[records_pb2.Record]:
        """A ControllerInfo record when the identity strings differ from the last ones."""
        try:
            identity: ControllerIdentity = reference.decode_identity(registers)
        except reference.DecodeError:
            self.link.implausible_values += 1
            return []
        info = controller_info(identity, self.unit.profile)
        if info == self.identity:
            return []
        self.identity = info
        return [controller_info_record(self.unit.id, info, time.to_utc(t))]

    def on_failure(self, fault: LinkFault, t: float, time: TimeBase) -> list[records_pb2.Record]:
        """Records caused by a request to this unit that got no usable answer."""
        self.link.requests += 1
        if fault is LinkFault.EXCEPTION_RESPONSE:
            self.link.exception_responses += 1
        elif fault is LinkFault.MALFORMED:
            self.link.malformed += 1
        else:
            self.link.timeouts += 1
        return self._on_link_outcome(False, t, time)

    def _on_link_outcome(self, ok: bool, t: float, time: TimeBase) -> list[records_pb2.Record]:
        was_lost = self._link_state.lost
        self._link_state, events = link.step(self._link_state, ok, t, self._link_lost_after_s)
        records: list[records_pb2.Record] = []
        if events and not was_lost:
            # Blind, not trapped: pending fault onsets are dropped without raising.
            records += self._events(self.detectors.blind(t), time)
        records += self._events(events, time)
        if was_lost != self._link_state.lost:
            records.append(link_status_record(self.unit.id, self.link_status(), time.to_utc(t)))
        return records

    def link_status(self) -> records_pb2.LinkStatus:
        """The link's counters as they stand, in wire form."""
        c = self.link
        return records_pb2.LinkStatus(
            up=self.link_up,
            requests=c.requests,
            responses=c.responses,
            timeouts=c.timeouts,
            crc_errors=c.malformed,
            exception_responses=c.exception_responses,
            implausible_values=c.implausible_values,
        )

    def _events(self, events: list[Event], time: TimeBase) -> list[records_pb2.Record]:
        records = []
        for event in events:
            if event.phase is Phase.RAISED:
                event_id = self._open_events[event.type] = str(uuid.uuid4())
            else:
                event_id = self._open_events.pop(event.type, "") or str(uuid.uuid4())
            records.append(event_record(self.unit.id, event, event_id, time))
        return records
