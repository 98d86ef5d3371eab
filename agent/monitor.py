"""`UnitMonitor`: everything the agent knows about one unit, turned into records.

It takes what the bus read from each of the unit's sources (raw values with their
monotonic read time, identity strings, link failures), decodes them with the sources'
profiles, runs the detectors, and returns the records to keep: a CarState on every
meaningful change and at least every ``state_interval_s``, every event phase, Counters
at a steady interval, ControllerInfo when the identity changes, and LinkStatus when the
link goes down or comes back and every ``counters_interval_s``. With a flight recorder
(agent/recorder.py), every sample and every unanswered poll goes into its ring, and the
Evidence records it cuts go beside the event records (the raise's in the same list, so
in the same commit). No I/O here: the caller keeps the records.

Source 0 is the unit's primary slave: its answers decide CONTROLLER_LINK_LOST and each
of its samples is one CarState. Extra sources (an I/O module) contribute their latest
signals to it; a failing extra leaves its signals None. Slow signals (counters) are
carried from the last slow read between slow reads, and forgotten when the link fails,
so a dead controller never looks alive through stale values.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from time import perf_counter

from agent.bus.health import LinkStats
from agent.bus.link import LinkFault
from agent.bus.plan import Rate
from agent.config import UnitConfig
from agent.decode.decoder import SampleRejectedError, decode, decode_identity
from agent.decode.model import Values, ValueSignal
from agent.detect import link
from agent.detect.engine import UnitDetectors
from agent.detect.events import Event, EventType, Phase
from agent.recorder import Recorder
from agent.records import (
    TimeBase,
    car_state_record,
    controller_info,
    controller_info_record,
    counters_record,
    event_record,
    link_status_record,
)
from agent.state import CarState, state_at, state_values
from protos.liftwatch.v1 import records_pb2

log = logging.getLogger(__name__)


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
        link_stats: Sequence[LinkStats] | None = None,
        on_detection_cost: Callable[[float], None] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.unit = unit
        # The flight recorder (agent/recorder.py): fed every sample and event, it hands
        # back the Evidence records to keep beside them. None: no evidence.
        self.recorder = recorder
        # Seconds spent in all detectors for one sample (a metrics histogram's observe).
        self.on_detection_cost = on_detection_cost
        self.detectors = UnitDetectors(unit.detect)
        self.identity: records_pb2.ControllerInfo | None = None
        self.link_stats = (
            list(link_stats) if link_stats is not None else [LinkStats() for _ in unit.sources]
        )
        self.implausible_values = 0
        self._link_state = link.LinkState()
        self._link_lost_after_s = link_lost_after_s
        self._state_interval_s = state_interval_s
        self._counters_interval_s = counters_interval_s
        self._last_key: tuple[object, ...] | None = None
        self._last_state_t = float("-inf")
        self._last_counters_t: float | None = None
        self._last_link_status_t: float | None = None
        self._open_events: dict[EventType, str] = {}
        self._slow_names = [
            tuple(
                s.name
                for s in source.profile.signals
                if isinstance(s, ValueSignal) and s.point.rate is Rate.SLOW
            )
            for source in unit.sources
        ]
        # Per source: the signals taken from it, or None when it gives every signal of its
        # profile (the usual case), so that its fields need no filtering per sample.
        self._wanted: list[frozenset[str] | None] = [
            None if source.signals >= source.profile.signal_names else source.signals
            for source in unit.sources
        ]
        self._reads_counters = bool(unit.signals & _COUNTERS)
        # Per source: the slow signals of its last slow read, and (extras) its last fields.
        self._carried: list[dict[str, object]] = [{} for _ in unit.sources]
        self._fields: list[dict[str, object] | None] = [None for _ in unit.sources]
        # Per source: the raw values its fields were decoded from. Most samples of a car
        # standing at a landing repeat the last one register for register; decoding is
        # pure, so they keep those fields. None: decode the next read (after a failure,
        # or when the last one had implausible values, which are counted every time).
        self._decoded_from: list[Values | None] = [None for _ in unit.sources]
        # Every CarState field but t from every source's fields (later sources winning),
        # until one source's fields change.
        self._state_values: tuple[object, ...] | None = None
        self._key: tuple[object, ...] = ()  # _change_key of those values
        self.last_sample: CarState | None = None

    @property
    def link_up(self) -> bool:
        """False while CONTROLLER_LINK_LOST is raised for this unit."""
        return not self._link_state.lost

    def detectable(self) -> tuple[set[EventType], set[EventType]]:
        """The events this unit's profiles let the agent detect, and those they cannot."""
        detectable, undetectable = self.detectors.detectable(self.unit.signals)
        return detectable | {EventType.CONTROLLER_LINK_LOST}, undetectable

    def undetectable_reasons(self) -> dict[EventType, str]:
        """Why each undetectable event cannot be detected for this unit."""
        return self.detectors.undetectable_reasons(self.unit.signals)

    def on_sample(
        self, source: int, values: Values, t: float, time: TimeBase
    ) -> list[records_pb2.Record]:
        """Records caused by one good read of source ``source`` at monotonic ``t``."""
        if values != self._decoded_from[source] and not self._decode(source, values):
            return self._on_link_outcome(False, t, time) if source == 0 else []
        if source != 0:
            return []
        values_now = self._state_values
        if values_now is None:
            merged: dict[str, object] = {}
            for fields in self._fields:
                if fields is not None:
                    merged.update(fields)
            values_now = self._state_values = state_values(merged)
            sample = state_at(t, values_now)
            self._key = _change_key(sample)  # it follows the fields, never t
        else:
            sample = state_at(t, values_now)
        records = self._on_link_outcome(True, t, time)
        recorder = self.recorder
        if recorder is not None:
            # Before detection: the sample that raises an event is in its evidence.
            closed = recorder.record(_utc_us(time, t), sample)
            if closed:
                records += closed
        self.last_sample = sample
        began = perf_counter()
        events = self.detectors.feed(sample)
        if self.on_detection_cost is not None:
            self.on_detection_cost(perf_counter() - began)
        if events:
            records += self._events(events, time)
        key = self._key
        if key != self._last_key or t - self._last_state_t >= self._state_interval_s:
            records.append(car_state_record(self.unit.id, sample, time))
            self._last_key, self._last_state_t = key, t
        # Counters wait for the first slow read that brings the controller's own counters,
        # so the first record does not report zero trips for a car with a million.
        counters_known = sample.trips is not None or not self._reads_counters
        if counters_known and (
            self._last_counters_t is None or t - self._last_counters_t >= self._counters_interval_s
        ):
            records.append(counters_record(self.unit.id, self.detectors.health, t, time))
            self._last_counters_t = t
        last = self._last_link_status_t
        if last is None or t - last >= self._counters_interval_s:
            records.append(self._periodic_link_status(t, time))
        return records

    def _decode(self, source: int, values: Values) -> bool:
        """Decode ``values`` into the fields of ``source``; False if the sample is refused."""
        profile = self.unit.sources[source].profile
        try:
            decoded = decode(profile, values)
        except SampleRejectedError as exc:
            # Not the block the profile describes: nothing of it reaches the detectors,
            # and it is not a valid answer for the link watch either.
            self.implausible_values += 1
            log.warning("unit %s: sample refused: %s", self.unit.id, exc)
            self._forget(source)
            return False
        if decoded.implausible:
            self.implausible_values += len(decoded.implausible)
            log.warning(
                "unit %s: implausible value(s) dropped: %s",
                self.unit.id,
                "; ".join(decoded.implausible),
            )
        fields = decoded.fields
        wanted = self._wanted[source]
        if wanted is not None:
            fields = {k: v for k, v in fields.items() if k in wanted}
        carried = self._carried[source]
        for name in self._slow_names[source]:
            if name in fields:
                carried[name] = fields[name]
        if carried:
            fields = {**carried, **fields}
        self._fields[source] = fields
        self._state_values = None
        # A copy: the cache must not change with the caller's dict.
        self._decoded_from[source] = None if decoded.implausible else dict(values)
        return True

    def _forget(self, source: int) -> None:
        self._carried[source] = {}
        self._fields[source] = None
        self._decoded_from[source] = None
        self._state_values = None

    def on_identity(
        self, source: int, values: Values, t: float, time: TimeBase
    ) -> list[records_pb2.Record]:
        """A ControllerInfo record when the primary's identity strings changed."""
        if source != 0:
            return []
        profile = self.unit.sources[0].profile
        identity = decode_identity(profile, values)
        if identity is None:
            return []
        info = controller_info(identity, profile.name)
        if info == self.identity:
            return []
        if self.identity is not None:
            log.info(
                "unit %s: controller identity changed: firmware %r -> %r",
                self.unit.id,
                self.identity.firmware,
                info.firmware,
            )
        self.identity = info
        return [controller_info_record(self.unit.id, info, time.to_utc(t))]

    def on_failure(
        self, source: int, fault: LinkFault, t: float, time: TimeBase
    ) -> list[records_pb2.Record]:
        """Records caused by a request to source ``source`` that got no usable answer."""
        self._forget(source)
        if source != 0:
            return []
        return self._on_link_outcome(False, t, time)

    def on_cycle_end(self, t: float, time: TimeBase) -> list[records_pb2.Record]:
        """Records decided by time alone when a poll cycle of the unit's bus ends at ``t``:
        CONTROLLER_LINK_LOST once the primary slave has been silent ``link_lost_after_s``
        since its last valid answer, however seldom its back-off lets it be retried."""
        closed = self.recorder.due(_utc_us(time, t)) if self.recorder is not None else []
        if self._link_state.failing_since is None or self._link_state.lost:
            return closed  # the common case: answering, or already reported lost
        return closed + self._link_changed(
            *link.tick(self._link_state, t, self._link_lost_after_s), t, time
        )

    def _on_link_outcome(self, ok: bool, t: float, time: TimeBase) -> list[records_pb2.Record]:
        closed: Sequence[records_pb2.Record] = ()
        if not ok and self.recorder is not None:
            closed = self.recorder.record_link_down(_utc_us(time, t))
        changed = self._link_changed(
            *link.step(self._link_state, ok, t, self._link_lost_after_s), t, time
        )
        return [*closed, *changed] if closed else changed

    def _link_changed(
        self, state: link.LinkState, events: list[Event], t: float, time: TimeBase
    ) -> list[records_pb2.Record]:
        was_lost = self._link_state.lost
        self._link_state = state
        last = self.last_sample  # the last valid sample: where the car stood as it fell silent
        if events and last is not None and last.at_landing is not None:
            events = [replace(e, at_landing=last.at_landing) for e in events]
        if not events and was_lost == self._link_state.lost:
            return []  # the common case: nothing happened to the link
        records: list[records_pb2.Record] = []
        if events and not was_lost:
            # Blind, not trapped: pending fault onsets are dropped without raising.
            records += self._events(self.detectors.blind(t), time)
        records += self._events(events, time)
        if was_lost != self._link_state.lost:
            records.append(link_status_record(self.unit.id, self.link_status(), time.to_utc(t)))
            self._last_link_status_t = t
        return records

    def _periodic_link_status(self, t: float, time: TimeBase) -> records_pb2.Record:
        self._last_link_status_t = t
        return link_status_record(self.unit.id, self.link_status(), time.to_utc(t))

    def link_status(self) -> records_pb2.LinkStatus:
        """The link's counters as they stand, over all sources, in wire form.

        The wire has one bucket for frame-level noise: ``crc_errors`` counts garbled
        frames, answers from the wrong slave id and malformed answers; ``timeouts``
        counts silence and a lost connection.
        """
        faults = dict.fromkeys(LinkFault, 0)
        requests = responses = 0
        latencies = []
        for stats in self.link_stats:
            requests += stats.requests
            responses += stats.responses
            for fault, n in stats.faults.items():
                faults[fault] += n
        primary = self.link_stats[0].latency_p50_ms() if self.link_stats else None
        if primary is not None:
            latencies.append(primary)
        return records_pb2.LinkStatus(
            up=self.link_up,
            requests=requests,
            responses=responses,
            timeouts=faults[LinkFault.TIMEOUT] + faults[LinkFault.DISCONNECTED],
            crc_errors=faults[LinkFault.CRC]
            + faults[LinkFault.WRONG_SLAVE]
            + faults[LinkFault.MALFORMED],
            exception_responses=faults[LinkFault.EXCEPTION_RESPONSE],
            implausible_values=self.implausible_values,
            latency_ms_p50=round(latencies[0]) if latencies else 0,
        )

    def _events(self, events: list[Event], time: TimeBase) -> list[records_pb2.Record]:
        records = []
        for event in events:
            if event.phase is Phase.RAISED:
                event_id = self._open_events[event.type] = str(uuid.uuid4())
            else:
                event_id = self._open_events.pop(event.type, "") or str(uuid.uuid4())
            record = event_record(self.unit.id, event, event_id, time)
            records.append(record)
            if self.recorder is not None:
                # The RAISE evidence goes with its event, in the same commit.
                records += self.recorder.on_event(record)
        return records


_COUNTERS = frozenset({"trips", "door_cycles", "run_hours"})


def _utc_us(time: TimeBase, t: float) -> int:
    """UTC microseconds of monotonic ``t`` (the recorder's clock)."""
    return round(time.to_utc(t) * 1e6)
