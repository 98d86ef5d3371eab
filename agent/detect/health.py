"""Health counters of one car: trips, door cycles, run hours, door opening and closing
times with running medians and a trend, and re-openings per landing.

`HealthCounters` is fed the same samples as the detectors. It does no I/O and reads no
clock; unlike the detectors it mutates itself, because its windows of door times would
otherwise be copied on every cycle for nothing. `HealthCounters.snapshot` returns a frozen
`HealthSnapshot`, which the agent turns into a Counters record.

Where the counts come from
    Each of ``trips``, ``door_cycles`` and ``run_hours`` is the controller's own counter
    (``CarState.trips`` and so on) when the latest sample has it: they survive agent
    restarts and count what the controller saw. Otherwise they are counted here from
    transitions since the agent started: a trip is the car going from not running to
    running; a door cycle is the door starting to open (entering OPENING or OPEN); run time
    is the time between consecutive samples while running, not counting gaps longer than
    ``max_gap_s`` (a link outage is not run time).

Door times
    An opening time runs from the first OPENING sample after CLOSED to the first OPEN
    sample after it; a closing time from the first CLOSING after OPEN to the first CLOSED
    (`doors.door_cycle`: a re-opening out of a close is no stroke). Times are taken in NORMAL
    or UNKNOWN mode only (inspection and fire service run doors at other speeds), kept
    over the last ``window`` (101) cycles per direction, and reported as their median in
    milliseconds. The trend is the median of the last ``recent`` (11) cycles over the
    median of the whole window: 1.0 is steady, 1.2 means the door is 20 % slower lately.
    It is None until the window holds twice ``recent`` times.

Re-openings
    Within one stop (until the car runs again), every door opening after the first is a
    re-opening, counted against the floor the car stands at.

Levelling faults
    ``levelling_faults`` counts the stops at which the car stood still inside the door
    zone but not levelled for at least `OFF_LEVEL_COUNTED_S` (1 s, longer than the skew
    between the zone, level and moving signals of one arrival), in NORMAL or UNKNOWN mode:
    one per spell, whether or not it lasted long enough for LEVELLING_FAULT (5 s) or was
    re-levelled in time. A rising count is a drive or brake losing its stopping accuracy.
    The Counters wire record has no field for it (the wire contract is fixed): it lives
    in the snapshot only.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from agent.detect.doors import TIMED_MODES, door_cycle
from agent.detect.latch import running
from agent.state import CarState, DoorState

_OPENINGS = frozenset({DoorState.OPENING, DoorState.OPEN})

#: An off-level stop shorter than this is the signals of one arrival settling, not a stop.
OFF_LEVEL_COUNTED_S = 1.0


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Health of one car at the time of the latest sample.

    Medians are milliseconds, None until a time has been measured; trends are ratios
    (see the module doc); ``reopenings_by_landing`` is ``(floor, count)`` sorted by floor;
    ``door_*_cycles_timed`` is how many times each median is taken over.
    """

    trips: int = 0
    door_cycles: int = 0
    run_hours: float = 0.0
    door_open_median_ms: int | None = None
    door_close_median_ms: int | None = None
    door_open_trend: float | None = None
    door_close_trend: float | None = None
    door_open_cycles_timed: int = 0
    door_close_cycles_timed: int = 0
    reopenings_by_landing: tuple[tuple[int, int], ...] = ()
    levelling_faults: int = 0


def _median_ms(times: deque[float]) -> int | None:
    if not times:
        return None
    return round(statistics.median(times) * 1000)


def _trend(times: deque[float], recent: int) -> float | None:
    if len(times) < 2 * recent:
        return None
    whole = statistics.median(times)
    if whole <= 0:
        return None
    latest = statistics.median(list(times)[-recent:])
    return round(latest / whole, 3)


class HealthCounters:
    """Running health counters of one car (see the module doc). One per car."""

    __slots__ = (
        "_closing",
        "_door_cycles",
        "_door_since",
        "_last",
        "_levelling_faults",
        "_max_gap_s",
        "_off_level_counted",
        "_off_level_since",
        "_opening",
        "_openings_in_stop",
        "_prev_door",
        "_prev_run",
        "_prev_t",
        "_recent",
        "_reopenings",
        "_run_s",
        "_trips",
    )

    def __init__(self, window: int = 101, recent: int = 11, max_gap_s: float = 5.0) -> None:
        """``window`` door times per direction for the medians, ``recent`` of them for the
        trend; gaps between samples longer than ``max_gap_s`` add no run time."""
        if window < 1 or recent < 1 or 2 * recent > window:
            raise ValueError("need window >= 2 * recent >= 2")
        self._opening: deque[float] = deque(maxlen=window)
        self._closing: deque[float] = deque(maxlen=window)
        self._recent = recent
        self._max_gap_s = max_gap_s
        self._trips = 0
        self._door_cycles = 0
        self._run_s = 0.0
        self._reopenings: dict[int, int] = {}
        self._openings_in_stop = 0
        self._prev_door = DoorState.UNKNOWN
        self._door_since: float | None = None
        self._prev_run: bool | None = None
        self._prev_t: float | None = None
        self._last: CarState | None = None
        self._levelling_faults = 0
        self._off_level_since: float | None = None
        self._off_level_counted = False

    def feed(self, sample: CarState) -> None:
        """Count what ``sample`` (taken at ``sample.t``, after the previous one) shows."""
        t = sample.t
        run = running(sample)
        prev_run = self._prev_run
        if prev_run is True and self._prev_t is not None and t - self._prev_t <= self._max_gap_s:
            self._run_s += t - self._prev_t
        if run is True and prev_run is False:
            self._trips += 1
        if run is True:
            self._openings_in_stop = 0
        door = sample.door
        prev_door = self._prev_door
        if door is not prev_door:
            self._door_since, cycle = door_cycle(prev_door, self._door_since, door, t)
            if cycle is not None and sample.mode in TIMED_MODES:
                (self._opening if cycle[0] else self._closing).append(cycle[2])
            if door in _OPENINGS and prev_door not in _OPENINGS:
                self._door_cycles += 1
                self._openings_in_stop += 1
                floor = sample.floor
                if self._openings_in_stop > 1 and floor is not None:
                    self._reopenings[floor] = self._reopenings.get(floor, 0) + 1
            self._prev_door = door
        if (
            run is False
            and sample.door_zone is True
            and sample.levelled is False
            and sample.mode in TIMED_MODES
        ):
            if self._off_level_since is None:
                self._off_level_since, self._off_level_counted = t, False
            elif not self._off_level_counted and t - self._off_level_since >= OFF_LEVEL_COUNTED_S:
                self._levelling_faults += 1
                self._off_level_counted = True
        else:
            self._off_level_since = None
        self._prev_run = run
        self._prev_t = t
        self._last = sample

    def blind(self, now: float) -> None:
        """The controller link is down at ``now``: an unfinished door movement or run
        interval must not absorb the outage."""
        self._prev_door = DoorState.UNKNOWN
        self._door_since = None
        self._prev_run = None
        self._prev_t = None
        self._off_level_since = None

    def snapshot(self) -> HealthSnapshot:
        """The counters as they stand (computes the medians: call it at the record
        interval, not per sample)."""
        last = self._last
        # Each counter on its own: a profile may read trips but not run hours.
        trips = last.trips if last is not None and last.trips is not None else self._trips
        door_cycles = (
            last.door_cycles
            if last is not None and last.door_cycles is not None
            else self._door_cycles
        )
        run_hours = (
            float(last.run_hours)
            if last is not None and last.run_hours is not None
            else self._run_s / 3600
        )
        return HealthSnapshot(
            trips=trips,
            door_cycles=door_cycles,
            run_hours=run_hours,
            door_open_median_ms=_median_ms(self._opening),
            door_close_median_ms=_median_ms(self._closing),
            door_open_trend=_trend(self._opening, self._recent),
            door_close_trend=_trend(self._closing, self._recent),
            door_open_cycles_timed=len(self._opening),
            door_close_cycles_timed=len(self._closing),
            reopenings_by_landing=tuple(sorted(self._reopenings.items())),
            levelling_faults=self._levelling_faults,
        )
