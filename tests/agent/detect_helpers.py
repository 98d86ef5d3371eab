"""Sample builders shared by the detector tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event
from agent.state import CarState, DoorState, ServiceMode

# An occupied car standing between floors with its doors shut: the trapping baseline.
TRAPPED_BETWEEN_FLOORS = CarState(
    t=0.0,
    floor=3,
    moving=False,
    speed_mm_s=0,
    door_zone=False,
    levelled=False,
    door=DoorState.CLOSED,
    door_lock_closed=True,
    safety_circuit_closed=True,
    occupied=True,
    load_percent=30,
    alarm_button=False,
    mode=ServiceMode.NORMAL,
    door_open_command=False,
    door_close_command=False,
)
TRAPPED_AT_LANDING = replace(TRAPPED_BETWEEN_FLOORS, door_zone=True, levelled=True)


def at(base: CarState, t: float, **changes: Any) -> CarState:
    """``base`` taken at time ``t`` with ``changes`` applied."""
    return replace(base, t=t, **changes)


def spell(
    base: CarState, start: float, stop: float, step: float = 1.0, **changes: Any
) -> list[CarState]:
    """Samples of ``base`` (with ``changes``) every ``step`` seconds from ``start`` to ``stop``
    inclusive, computed from integers so times land exactly on the thresholds."""
    count = round((stop - start) / step)
    return [at(base, start + i * step, **changes) for i in range(count + 1)]


def feed_all(samples: Iterable[CarState], config: DetectionConfig | None = None) -> list[Event]:
    """Every event a fresh `UnitDetectors` decides over ``samples``."""
    unit = UnitDetectors(config)
    events: list[Event] = []
    for sample in samples:
        events.extend(unit.feed(sample))
    return events
