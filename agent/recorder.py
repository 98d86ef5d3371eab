"""The flight recorder: every decoded sample of a car, kept for the windows around events.

Per car, a ring holds every sample the monitor decodes (and every poll the controller
did not answer, as a link-down sample) at full poll rate, with every field the Evidence
record carries. It is I/O-free and clock-explicit bookkeeping: the monitor feeds it each
sample with its UTC time and each event record, and it hands back the Evidence records
to keep. Detection (`agent.detect`) knows nothing of it.

Memory, stated and bounded: the ring is arrays, one per column (time int64, position,
speed, load, floor and fault code 32-bit each, the packed discrete state 64-bit), so a
sample costs `RING_BYTES_PER_SAMPLE` = 36 bytes, allocated once. Its length covers the
longest window it must cut: ``pre_s`` before an onset that precedes its raise by up to
the unit's longest detection threshold, to ``max_s`` after the raise, at the bus's poll
rate with a quarter more for jitter. With the defaults at 10 Hz that is 9,000 samples,
324,000 bytes per car (`Recorder.ring_bytes`; tests/agent/test_recorder.py measures it).

The windows of an event (``[recorder]`` and ``[unit.recorder]`` in the agent's TOML):

- at the raise: an Evidence with end RAISE holding ``[onset - pre_s, raise]``, committed
  with the event, so that a kill -9 just after the raise loses nothing before the onset;
- ``post_s`` after the raise, still raised: end POST, ``[onset - pre_s, raise + post_s]``;
- cleared within ``max_s`` of the raise: end CLEARED, to the clear (or to
  ``raise + post_s`` when it cleared before that), so the rescue is in it;
- still raised ``max_s`` after the raise: end MAX, and the window is closed;
- the agent stopping with a window open: end SHUTDOWN, to the stop.

Each later Evidence of an event supersedes the earlier ones at the fleet.

The 64 kB bound: a sample costs at most 7.4 bytes on the wire (a car moving at 1 m/s,
measured in tests/protos/test_evidence_codec.py; 6.0 standing), so at 10 Hz a window of
``pre_s + longest threshold + max_s`` seconds must stay within 880 s. The default
``max_s`` of 600 s is the largest round value that keeps the default window (60 + 60 +
600 = 720 s, 7,200 samples, at most 53 kB) under 64 kB with room for a longer
threshold; `window_problems` (run by check-config) refuses windows past the bound.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from google.protobuf.timestamp_pb2 import Timestamp

from agent.detect.config import DetectionConfig
from agent.records import evidence_record, state_wire
from agent.state import CarState
from liftconf.schema import bounded
from protos.evidence import FLAGS, encode_columns, pack_state
from protos.liftwatch.v1 import records_pb2

RING_BYTES_PER_SAMPLE = 36  # time 8, five 32-bit numbers 20, packed state 8
# The bound on one event's evidence, at the reference poll rate.
EVIDENCE_LIMIT_BYTES = 64 * 1024
REFERENCE_HZ = 10.0
# The most one sample costs on the wire (7.4 measured, moving car) and what an Evidence
# costs besides its samples (ids, timestamps, tags), both rounded up.
WIRE_BYTES_PER_SAMPLE = 7.5
WIRE_OVERHEAD_BYTES = 256
# The ring holds this much more than the longest window: polls arrive with jitter.
RING_MARGIN = 1.25
# Detection keys ending in _s that are not onset-to-raise thresholds (besides the speeds,
# *_mm_s: millimetres per second, see onset_lag_s).
_NOT_THRESHOLDS = frozenset({"nuisance_dedup_s"})
_I32_LOW, _I32_HIGH, _U32_HIGH = -(2**31), 2**31 - 1, 2**32 - 1
_EMPTY: tuple[records_pb2.Record, ...] = ()


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """The ``[recorder]`` table (defaults for every unit) and ``[unit.recorder]`` (a unit's
    overrides): the evidence windows, in whole seconds."""

    pre_s: int = bounded(60, 0, 3600)  # before the onset
    post_s: int = bounded(30, 0, 3600)  # after the raise, the event still raised
    max_s: int = bounded(600, 1, 3600)  # at most this long after the raise, to the clear


class RequestError(ValueError):
    """An on-demand request the recorder cannot answer; the message says why."""


def onset_lag_s(detect: DetectionConfig) -> float:
    """The longest time by which an event's onset may precede its raise for a unit with
    ``detect``: its longest time threshold (the ring must reach back that far, plus
    ``pre_s``, at the raise)."""
    lags = [
        float(value)
        for f in fields(detect)
        # rated_speed_mm_s ends in _s too, but is a speed: 1600 (mm/s) is no 1600 s lag.
        if f.name.endswith("_s") and not f.name.endswith("_mm_s") and f.name not in _NOT_THRESHOLDS
        for value in (getattr(detect, f.name),)
        if isinstance(value, int | float)
    ]
    return max(lags, default=0.0)


def window_s(config: RecorderConfig, lag_s: float) -> float:
    """The longest window an event of the unit can need, in seconds."""
    return config.pre_s + lag_s + max(config.max_s, config.post_s)


def fitted(config: RecorderConfig, lag_s: float) -> RecorderConfig:
    """``config`` with ``max_s`` lowered to what fits the 64 kB bound for a unit whose
    longest threshold is ``lag_s`` (never below ``post_s``), for a unit whose ``max_s``
    was not set: the default of 600 s suits the default thresholds, and a site that sets
    a long threshold (a 300 s stopped-outside-the-zone, say) should get a shorter wait
    for the clear rather than an agent that refuses to start. A ``max_s`` set by hand is
    checked as given (`window_problems`)."""
    room = (EVIDENCE_LIMIT_BYTES - WIRE_OVERHEAD_BYTES) / (REFERENCE_HZ * WIRE_BYTES_PER_SAMPLE)
    fits = math.floor(room - config.pre_s - lag_s)
    if config.max_s <= fits:
        return config
    return replace(config, max_s=max(fits, config.post_s, 1))


def window_problems(config: RecorderConfig, lag_s: float) -> list[tuple[str, str]]:
    """What is wrong with ``config`` for a unit whose longest threshold is ``lag_s``, as
    ``(key, message)`` (key relative to the recorder table); empty when it is fine."""
    problems: list[tuple[str, str]] = []
    if config.post_s > config.max_s:
        problems.append(("post_s", f"{config.post_s} s is longer than max_s ({config.max_s} s)"))
    longest = window_s(config, lag_s)
    worst = longest * REFERENCE_HZ * WIRE_BYTES_PER_SAMPLE + WIRE_OVERHEAD_BYTES
    if worst > EVIDENCE_LIMIT_BYTES:
        room = (EVIDENCE_LIMIT_BYTES - WIRE_OVERHEAD_BYTES) / (REFERENCE_HZ * WIRE_BYTES_PER_SAMPLE)
        problems.append(
            (
                "max_s",
                f"pre_s {config.pre_s} s + the longest detection threshold {lag_s:g} s + "
                f"max_s {config.max_s} s make a {longest:g} s window, up to "
                f"{worst / 1024:.0f} kB of evidence at {REFERENCE_HZ:g} Hz; an event's "
                f"evidence must stay under {EVIDENCE_LIMIT_BYTES // 1024} kB: "
                f"max_s <= {max(0, math.floor(room - config.pre_s - lag_s))}",
            )
        )
    return problems


@dataclass(slots=True)
class _Window:
    """An event whose evidence is still being recorded."""

    event_id: str
    onset_us: int
    raised_us: int
    post_at_us: int
    max_at_us: int
    cleared_us: int | None = None
    post_sent: bool = False

    def due_at(self) -> int:
        """When this window next has an Evidence to write."""
        if self.cleared_us is not None:
            return max(self.cleared_us, self.post_at_us)
        return self.max_at_us if self.post_sent else self.post_at_us


class Recorder:
    """The ring of one car's samples and the evidence windows of its open events."""

    def __init__(
        self, unit_id: str, config: RecorderConfig, *, lag_s: float, poll_hz: float
    ) -> None:
        self.unit_id = unit_id
        self.config = config
        self.capacity = max(2, math.ceil(window_s(config, lag_s) * poll_hz * RING_MARGIN))
        self._period_us = round(1e6 / poll_hz)
        cap = self.capacity
        # array * n allocates exactly n items (array(code, bytes) over-allocates ~6 %).
        self._time = array("q", [0]) * cap
        self._position = array("i", [0]) * cap
        self._speed = array("I", [0]) * cap
        self._load = array("I", [0]) * cap
        self._floor = array("i", [0]) * cap
        self._fault = array("I", [0]) * cap
        self._state = array("Q", [0]) * cap
        self._numbers = (self._position, self._speed, self._load, self._floor, self._fault)
        self._next = 0  # where the next sample goes
        self._count = 0
        self._last_us = -(2**62)
        self._windows: dict[str, _Window] = {}
        self._due_us = math.inf
        # The packed state of each combination of discrete values seen (few per car).
        self._packed: dict[tuple[object, ...], int] = {}
        self._link_down = pack_state(0, 0, 0, False, [None] * len(FLAGS), 0b11111)

    @property
    def ring_bytes(self) -> int:
        """The bytes the ring's columns hold (allocated once, never more)."""
        return sum(a.itemsize * len(a) for a in (self._time, self._state, *self._numbers))

    @property
    def ring_seconds(self) -> int:
        """How far back the ring reaches at the configured poll rate, in whole seconds:
        the longest on-demand request it answers."""
        return self.capacity * self._period_us // 1_000_000

    def record(self, time_us: int, sample: CarState) -> Sequence[records_pb2.Record]:
        """Keep one decoded sample taken at UTC ``time_us`` (microseconds); return the
        Evidence records of windows that its time closes (usually none)."""
        if time_us < self._last_us:
            time_us = self._last_us  # a wall clock stepped back: keep the ring in order
        self._last_us = time_us
        i = self._next
        self._time[i] = time_us
        # Unrolled (this runs for every sample of every car): a value the wire cannot
        # carry (outside sint32/uint32) is kept as absent, like a missing one.
        absent = 0
        value = sample.position_mm
        if value is None or not _I32_LOW <= value <= _I32_HIGH:
            value, absent = 0, 0b00001
        self._position[i] = value
        value = sample.speed_mm_s
        if value is None or not 0 <= value <= _U32_HIGH:
            value, absent = 0, absent | 0b00010
        self._speed[i] = value
        value = sample.load_percent
        if value is None or not 0 <= value <= _U32_HIGH:
            value, absent = 0, absent | 0b00100
        self._load[i] = value
        value = sample.floor
        if value is None or not _I32_LOW <= value <= _I32_HIGH:
            value, absent = 0, absent | 0b01000
        self._floor[i] = value
        value = sample.fault_code
        if value is None or not 0 <= value <= _U32_HIGH:
            value, absent = 0, absent | 0b10000
        self._fault[i] = value
        key = (
            sample.door,
            sample.direction,
            sample.mode,
            sample.moving,
            sample.door_zone,
            sample.levelled,
            sample.door_lock_closed,
            sample.safety_circuit_closed,
            sample.occupied,
            sample.alarm_button,
            sample.overload,
            sample.mains_ok,
            sample.reopen_active,
            absent,
        )
        state = self._packed.get(key)
        if state is None:
            if len(self._packed) >= 4096:
                self._packed.clear()  # bounded; refilled by the few combinations in use
            door, direction, mode = state_wire(sample)
            state = self._packed[key] = pack_state(
                door, direction, mode, True, [getattr(sample, name) for name in FLAGS], absent
            )
        self._state[i] = state
        self._advance()
        return self.due(time_us) if time_us >= self._due_us else _EMPTY

    def record_link_down(self, time_us: int) -> Sequence[records_pb2.Record]:
        """Keep a poll the controller did not answer at UTC ``time_us``; return the
        Evidence records of windows its time closes."""
        if time_us < self._last_us:
            time_us = self._last_us
        self._last_us = time_us
        i = self._next
        self._time[i] = time_us
        for column in self._numbers:
            column[i] = 0
        self._state[i] = self._link_down
        self._advance()
        return self.due(time_us) if time_us >= self._due_us else _EMPTY

    def _advance(self) -> None:
        self._next = (self._next + 1) % self.capacity
        if self._count < self.capacity:
            self._count += 1

    def on_event(self, record: records_pb2.Record) -> list[records_pb2.Record]:
        """Follow one event record: a raise opens a window and returns its RAISE Evidence
        (to be committed with the event); a clear of an open window marks it, and
        returns its CLEARED Evidence when the window ends at once."""
        event = record.event
        now_us = _us(record.time)
        if event.phase == records_pb2.PHASE_RAISED:
            onset_us = min(_us(event.onset), now_us)
            window = _Window(
                event.event_id,
                onset_us,
                now_us,
                now_us + self.config.post_s * 1_000_000,
                now_us + self.config.max_s * 1_000_000,
            )
            self._windows[window.event_id] = window
            self._due_us = min(self._due_us, window.due_at())
            return [self._evidence(window, now_us, records_pb2.EVIDENCE_END_RAISE)]
        window_or_none = self._windows.get(event.event_id)
        if event.phase != records_pb2.PHASE_CLEARED or window_or_none is None:
            return []
        window_or_none.cleared_us = max(now_us, window_or_none.raised_us)
        self._due_us = min(self._due_us, window_or_none.due_at())
        return self.due(now_us)

    def due(self, now_us: int) -> list[records_pb2.Record]:
        """The Evidence records of windows due by UTC ``now_us`` (the monitor calls it at
        the end of each poll cycle too, so that a silent controller closes them)."""
        if now_us < self._due_us:
            return []
        out: list[records_pb2.Record] = []
        for window in list(self._windows.values()):
            at = window.due_at()
            if at > now_us:
                continue
            if window.cleared_us is not None:
                out.append(self._evidence(window, at, records_pb2.EVIDENCE_END_CLEARED))
                del self._windows[window.event_id]
            elif window.post_sent or window.post_at_us >= window.max_at_us:
                out.append(self._evidence(window, at, records_pb2.EVIDENCE_END_MAX))
                del self._windows[window.event_id]
            else:
                out.append(self._evidence(window, at, records_pb2.EVIDENCE_END_POST))
                window.post_sent = True
        self._due_us = min((w.due_at() for w in self._windows.values()), default=math.inf)
        return out

    def shutdown(self, now_us: int) -> list[records_pb2.Record]:
        """The agent stops: an Evidence (end SHUTDOWN) of every open window, to ``now_us``."""
        out = [
            self._evidence(w, now_us, records_pb2.EVIDENCE_END_SHUTDOWN)
            for w in self._windows.values()
        ]
        self._windows.clear()
        self._due_us = math.inf
        return out

    def request(self, request_id: str, seconds: int, now_us: int) -> records_pb2.Record:
        """The Evidence (end REQUEST) of the last ``seconds`` up to UTC ``now_us``, for the
        on-demand request ``request_id``. Reads the ring only. Raises `RequestError` when
        ``seconds`` is not 1..`ring_seconds`."""
        if not 1 <= seconds <= self.ring_seconds:
            raise RequestError(
                f"seconds must be 1..{self.ring_seconds} (the recorder's reach), got {seconds}"
            )
        start_us = now_us - seconds * 1_000_000
        evidence = records_pb2.Evidence(
            request_id=request_id,
            end=records_pb2.EVIDENCE_END_REQUEST,
            pre_s=self.config.pre_s,
            post_s=self.config.post_s,
            max_s=self.config.max_s,
        )
        self._cut(evidence, start_us, now_us)
        return evidence_record(self.unit_id, evidence, now_us / 1e6)

    def _evidence(
        self, window: _Window, end_us: int, end: records_pb2.EvidenceEnd
    ) -> records_pb2.Record:
        evidence = records_pb2.Evidence(
            event_id=window.event_id,
            end=end,
            pre_s=self.config.pre_s,
            post_s=self.config.post_s,
            max_s=self.config.max_s,
        )
        evidence.onset.FromMicroseconds(window.onset_us)
        evidence.raised.FromMicroseconds(window.raised_us)
        if window.cleared_us is not None and window.cleared_us <= end_us:
            evidence.cleared.FromMicroseconds(window.cleared_us)
        self._cut(evidence, window.onset_us - self.config.pre_s * 1_000_000, end_us)
        return evidence_record(self.unit_id, evidence, end_us / 1e6)

    def _cut(self, evidence: records_pb2.Evidence, start_us: int, end_us: int) -> None:
        """Fill ``evidence`` with the ring's samples from ``start_us`` to ``end_us``."""
        count, cap = self._count, self.capacity
        oldest = (self._next - count) % cap
        times = self._time

        def time_at(k: int) -> int:
            return times[(oldest + k) % cap]

        first = bisect.bisect_left(range(count), start_us, key=time_at)
        last = bisect.bisect_right(range(count), end_us, key=time_at)
        # Short of the start by more than a poll: the ring did not reach back (the agent
        # had just started, or the window outgrew it).
        evidence.truncated = count == 0 or time_at(0) > start_us + self._period_us
        a, b = (oldest + first) % cap, (oldest + last) % cap
        n = last - first

        def take(column: array[int]) -> list[int]:
            if n <= 0:
                return []
            if a < b:
                return column[a:b].tolist()
            return column[a:].tolist() + column[:b].tolist()

        encode_columns(
            take(self._time),
            [take(column) for column in self._numbers],
            take(self._state),
            evidence,
        )


def _us(timestamp: Timestamp) -> int:
    return int(timestamp.ToMicroseconds())
