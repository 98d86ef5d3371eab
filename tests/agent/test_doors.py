"""DOOR_CLOSE_FAILURE and DOOR_OPEN_FAILURE scenarios."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.detect import doors
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, DoorState, ServiceMode
from tests.agent import detect_helpers
from tests.agent.detect_helpers import at, spell

# An empty car at a landing, doors open, in service: no rule is anywhere near firing.
PARKED_OPEN = CarState(
    t=0.0,
    floor=2,
    moving=False,
    speed_mm_s=0,
    door_zone=True,
    levelled=True,
    door=DoorState.OPEN,
    door_lock_closed=False,
    occupied=False,
    load_percent=0,
    mode=ServiceMode.NORMAL,
    door_open_command=False,
    door_close_command=False,
)
CLOSING = replace(PARKED_OPEN, door=DoorState.CLOSING, door_close_command=True)
CLOSED = replace(PARKED_OPEN, door=DoorState.CLOSED, door_lock_closed=True)
ARRIVED_SHUT = replace(CLOSED, door_open_command=True)


def feed_all(samples: list[CarState], config: DetectionConfig | None = None) -> list[Event]:
    # Other rules see these doors too (held open, a car "running" for minutes); these
    # scenarios are about the two door faults alone.
    return of_family(detect_helpers.feed_all(samples, config))


FAILURES = frozenset({EventType.DOOR_CLOSE_FAILURE, EventType.DOOR_OPEN_FAILURE})


def of_family(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type in FAILURES]


def of_type(events: list[Event], event_type: EventType) -> list[tuple[Phase, float, float]]:
    return [(e.phase, e.onset, e.at) for e in events if e.type is event_type]


def test_door_close_failure_raises_at_20_s_and_clears_on_close() -> None:
    samples = [
        at(PARKED_OPEN, 9.5),
        *spell(CLOSING, 10.0, 14.5, 0.5),
        *spell(CLOSING, 15.0, 35.0, 0.5, door=DoorState.PARTLY_OPEN),
        at(CLOSED, 35.5, door_close_command=True),
    ]
    unit = UnitDetectors()
    decided = [(s.t, of_family(unit.feed(s))) for s in samples]
    non_empty = [(t, ev) for t, ev in decided if ev]
    assert [t for t, _ in non_empty] == [30.0, 35.5]
    raised, cleared = non_empty[0][1][0], non_empty[1][1][0]
    assert (raised.type, raised.phase, raised.onset, raised.floor) == (
        EventType.DOOR_CLOSE_FAILURE,
        Phase.RAISED,
        10.0,
        2,
    )
    assert (cleared.type, cleared.phase, cleared.onset, cleared.at) == (
        EventType.DOOR_CLOSE_FAILURE,
        Phase.CLEARED,
        10.0,
        35.5,
    )


def test_a_door_that_closes_in_time_raises_nothing() -> None:
    samples = spell(CLOSING, 0.0, 19.5, 0.5) + spell(CLOSED, 20.0, 60.0)
    assert feed_all(samples) == []


def test_a_dropped_close_command_ends_the_attempt() -> None:
    first = spell(CLOSING, 0.0, 15.0)
    reopened = spell(PARKED_OPEN, 16.0, 18.0)
    second = spell(CLOSING, 19.0, 45.0)
    events = feed_all(first + reopened + second)
    assert of_type(events, EventType.DOOR_CLOSE_FAILURE) == [(Phase.RAISED, 19.0, 39.0)]


def test_closed_but_unlocked_is_not_closed() -> None:
    samples = spell(CLOSING, 0.0, 5.0) + spell(
        CLOSING, 6.0, 25.0, door=DoorState.CLOSED, door_lock_closed=False
    )
    events = feed_all([*samples, at(CLOSED, 26.0)])
    assert of_type(events, EventType.DOOR_CLOSE_FAILURE) == [
        (Phase.RAISED, 0.0, 20.0),
        (Phase.CLEARED, 0.0, 26.0),
    ]


def test_without_a_close_command_signal_the_operator_state_is_the_command() -> None:
    no_command = replace(CLOSING, door_close_command=None)
    samples = spell(no_command, 0.0, 10.0) + spell(
        no_command, 11.0, 25.0, door=DoorState.PARTLY_OPEN
    )
    events = feed_all(samples)
    assert of_type(events, EventType.DOOR_CLOSE_FAILURE) == [(Phase.RAISED, 0.0, 20.0)]
    idle_partly_open = spell(no_command, 0.0, 100.0, door=DoorState.PARTLY_OPEN)
    assert feed_all(idle_partly_open) == []


@pytest.mark.parametrize("mode", [ServiceMode.INSPECTION, ServiceMode.STOPPED])
def test_door_rules_are_suppressed_in_inspection_and_out_of_service(mode: ServiceMode) -> None:
    closing = spell(CLOSING, 0.0, 100.0, mode=mode)
    opening = spell(ARRIVED_SHUT, 0.0, 100.0, mode=mode)
    assert feed_all(closing) == []
    assert feed_all(opening) == []


def test_link_outage_forgets_a_pending_close_attempt() -> None:
    unit = UnitDetectors()
    events: list[Event] = []
    for sample in spell(CLOSING, 0.0, 15.0):
        events += unit.feed(sample)
    assert unit.blind(16.0) == []
    for sample in spell(CLOSING, 30.0, 49.0):
        events += unit.feed(sample)
    assert events == []
    events += unit.feed(at(CLOSING, 50.0))
    assert of_type(events, EventType.DOOR_CLOSE_FAILURE) == [(Phase.RAISED, 30.0, 50.0)]


def test_door_open_failure_raises_at_10_s_and_clears_when_fully_open() -> None:
    samples = [
        *spell(ARRIVED_SHUT, 0.0, 12.0),
        at(ARRIVED_SHUT, 13.0, door=DoorState.OPENING, door_lock_closed=False),
        at(PARKED_OPEN, 14.0, door_open_command=True),
    ]
    events = feed_all(samples)
    assert of_type(events, EventType.DOOR_OPEN_FAILURE) == [
        (Phase.RAISED, 0.0, 10.0),
        (Phase.CLEARED, 0.0, 14.0),
    ]


def test_door_open_failure_needs_the_car_level_and_stopped() -> None:
    riding = spell(ARRIVED_SHUT, 0.0, 60.0, moving=True)
    outside_zone = spell(ARRIVED_SHUT, 0.0, 60.0, door_zone=False)
    not_levelled = spell(ARRIVED_SHUT, 0.0, 60.0, levelled=False)
    for samples in (riding, outside_zone, not_levelled):
        assert feed_all(samples) == []


def test_door_open_failure_without_door_state_watches_the_lock_circuit() -> None:
    blind_door = replace(ARRIVED_SHUT, door=DoorState.UNKNOWN)
    never_unlocks = spell(blind_door, 0.0, 10.0)
    events = feed_all([*never_unlocks, at(blind_door, 11.0, door_lock_closed=False)])
    assert of_type(events, EventType.DOOR_OPEN_FAILURE) == [
        (Phase.RAISED, 0.0, 10.0),
        (Phase.CLEARED, 0.0, 11.0),
    ]


def test_door_thresholds_come_from_config() -> None:
    config = DetectionConfig.from_mapping({"door_close_failure_s": 5, "door_open_failure_s": 2.5})
    closing = of_type(
        feed_all(spell(CLOSING, 0.0, 10.0, 0.5), config), EventType.DOOR_CLOSE_FAILURE
    )
    assert closing == [(Phase.RAISED, 0.0, 5.0)]
    opening = of_type(
        feed_all(spell(ARRIVED_SHUT, 0.0, 10.0, 0.5), config), EventType.DOOR_OPEN_FAILURE
    )
    assert opening == [(Phase.RAISED, 0.0, 2.5)]


def test_step_keeps_the_state_object_while_idle() -> None:
    state = doors.DoorsState()
    same, events = doors.step(state, at(PARKED_OPEN, 1.0), 1.0, doors.DoorsConfig())
    assert same is state
    assert events == []
