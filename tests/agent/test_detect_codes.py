"""Issue 13's agent rules at their thresholds: the profile's fault-code map, MODE_CHANGE's
codes, the door zone against levelling, the lock bypass from any door phase, and where the
car stood (``at_landing``) on every event."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.decode.parser import ProfileError, load_profile, parse_profile
from agent.detect.controller import MODE_CODES
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, DoorState, ServiceMode
from tests.agent.detect_helpers import TRAPPED_BETWEEN_FLOORS, at, feed_all, spell
from tests.agent.test_detect_rules import BETWEEN, IDLE, OPEN, RUNNING

TEMPLATE_CONFIG = """
[agent]
id = "a"
[fleet]
insecure = true
[[bus]]
name = "b"
url = "tcp://127.0.0.1:5020"
[[unit]]
id = "u1"
bus = "b"
slave = 1
profile = "template"
"""


def template_detect() -> DetectionConfig:
    """The detection config the agent builds for a unit speaking the template profile."""
    unit = parse_config(tomllib.loads(TEMPLATE_CONFIG), Path()).units[0]
    return replace(unit.detect, top_landing=9, bottom_landing=0)


def phases(events: list[Event]) -> list[tuple[EventType, Phase, float, float, int]]:
    return [(e.type, e.phase, e.onset, e.at, e.code) for e in events]


# --- fault codes -----------------------------------------------------------------------------


def test_the_template_profiles_fault_map_reaches_the_unit_detectors() -> None:
    assert template_detect().fault_events == (
        (17, EventType.RESTART_PREVENTED),
        (23, EventType.POSITION_LOST),
        (41, EventType.OVERTRAVEL_TOP),
    )


def test_a_mapped_code_raises_its_event_with_its_own_gb_code() -> None:
    config = template_detect()
    samples = [at(IDLE, 0.0), at(IDLE, 1.0, fault_code=23), at(IDLE, 2.0, fault_code=0)]
    assert phases(feed_all(samples, config)) == [
        (EventType.POSITION_LOST, Phase.RAISED, 1.0, 1.0, 7),
        (EventType.POSITION_LOST, Phase.CLEARED, 1.0, 2.0, 7),
    ]
    samples = [at(IDLE, 0.0, fault_code=41), at(IDLE, 1.0, fault_code=17)]
    assert phases(feed_all(samples, config)) == [
        (EventType.OVERTRAVEL_TOP, Phase.RAISED, 0.0, 0.0, 0),
        (EventType.OVERTRAVEL_TOP, Phase.CLEARED, 0.0, 1.0, 0),
        (EventType.RESTART_PREVENTED, Phase.RAISED, 1.0, 1.0, 8),
    ]
    (raised,) = feed_all([at(IDLE, 0.0, fault_code=23)], config)
    assert "23" in raised.reason and "POSITION_LOST" in raised.reason


def test_only_an_unmapped_code_raises_restart_prevented() -> None:
    config = template_detect()
    events = feed_all([at(IDLE, 0.0, fault_code=99), at(IDLE, 1.0, fault_code=0)], config)
    assert phases(events) == [
        (EventType.RESTART_PREVENTED, Phase.RAISED, 0.0, 0.0, 8),
        (EventType.RESTART_PREVENTED, Phase.CLEARED, 0.0, 1.0, 8),
    ]
    assert "99" in events[0].reason
    # Without the profile's map, as before issue 13: every code is RESTART_PREVENTED.
    (raised,) = feed_all([at(IDLE, 0.0, fault_code=23)])
    assert raised.type is EventType.RESTART_PREVENTED


def test_a_mapped_code_follows_its_events_modes() -> None:
    config = template_detect()
    # POSITION_LOST is not watched out of service; RESTART_PREVENTED is.
    stopped = [at(IDLE, 0.0, fault_code=23, mode=ServiceMode.STOPPED)]
    assert [e.type for e in feed_all(stopped, config)] == [EventType.MODE_CHANGE]
    stopped = [at(IDLE, 0.0, fault_code=99, mode=ServiceMode.STOPPED)]
    assert EventType.RESTART_PREVENTED in [e.type for e in feed_all(stopped, config)]
    # Overtravel is watched out of service (a car out of service must not move at all).
    stopped = [at(IDLE, 0.0, fault_code=41, mode=ServiceMode.STOPPED)]
    assert EventType.OVERTRAVEL_TOP in [e.type for e in feed_all(stopped, config)]
    # A code held through inspection is raised once the car is back in a watched mode.
    samples = [
        at(IDLE, 0.0, fault_code=23, mode=ServiceMode.INSPECTION),
        at(IDLE, 1.0, fault_code=23),
    ]
    lost = [e for e in feed_all(samples, config) if e.type is EventType.POSITION_LOST]
    assert [(e.phase, e.onset) for e in lost] == [(Phase.RAISED, 1.0)]


def test_a_code_and_a_rule_raising_the_same_type_make_one_occurrence() -> None:
    config = template_detect()
    samples = [
        at(IDLE, 0.0),
        at(IDLE, 1.0, floor=12),  # the floor rule: POSITION_LOST
        at(IDLE, 2.0, floor=12, fault_code=23),  # the controller agrees
        at(IDLE, 3.0, fault_code=23),  # floor back in range, the code stays
        at(IDLE, 4.0, fault_code=0),  # the controller reset
    ]
    lost = [e for e in feed_all(samples, config) if e.type is EventType.POSITION_LOST]
    assert [(e.phase, e.onset, e.at) for e in lost] == [
        (Phase.RAISED, 1.0, 1.0),
        (Phase.CLEARED, 1.0, 4.0),
    ]


def test_a_profile_cannot_map_a_code_to_the_mode_or_the_link() -> None:
    raw = tomllib.loads(
        """
        [profile]
        name = "bad"
        [signals]
        fault_code = { address = 1 }
        [faults]
        5 = "MODE_CHANGE"
        6 = "CONTROLLER_LINK_LOST"
        7 = "POSITION_LOST"
        """
    )
    with pytest.raises(ProfileError) as caught:
        parse_profile(raw, "bad.toml")
    text = str(caught.value)
    assert "faults.5" in text and "faults.6" in text and "faults.7" not in text
    assert load_profile("template").fault_event(23) == "POSITION_LOST"


# --- MODE_CHANGE codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        (ServiceMode.STOPPED, 42),
        (ServiceMode.INSPECTION, 43),
        (ServiceMode.FIRE_RETURN, 44),
        (ServiceMode.FIREFIGHTER, 45),
        (ServiceMode.EMERGENCY_POWER, 46),
        (ServiceMode.EARTHQUAKE, 47),
    ],
)
def test_mode_change_carries_the_code_of_the_mode_entered(mode: ServiceMode, code: int) -> None:
    samples = [at(IDLE, 0.0), at(IDLE, 1.0, mode=mode), at(IDLE, 2.0)]
    events = [e for e in feed_all(samples) if e.type is EventType.MODE_CHANGE]
    assert [(e.phase, e.code) for e in events] == [(Phase.RAISED, code), (Phase.CLEARED, 40)]


def test_a_mode_change_record_always_names_the_mode_the_car_is_in() -> None:
    samples = [
        at(IDLE, 0.0, mode=ServiceMode.INSPECTION),
        at(IDLE, 1.0, mode=ServiceMode.FIRE_RETURN),
        at(IDLE, 2.0),
    ]
    events = [e for e in feed_all(samples) if e.type is EventType.MODE_CHANGE]
    assert [(e.phase, e.onset, e.code) for e in events] == [
        (Phase.RAISED, 0.0, 43),
        (Phase.CLEARED, 0.0, 44),  # left inspection for fire return
        (Phase.RAISED, 1.0, 44),
        (Phase.CLEARED, 1.0, 40),  # back to normal service
    ]
    assert sorted(MODE_CODES.values()) == [40, 42, 43, 44, 45, 46, 47]


# --- door zone and levelling -----------------------------------------------------------------

OFF_LEVEL = replace(IDLE, levelled=False)


def test_inside_the_door_zone_off_level_is_a_levelling_fault_not_stopped_outside() -> None:
    events = feed_all(spell(OFF_LEVEL, 0.0, 30.0, 0.5))
    assert [(e.type, e.phase, e.onset, e.at) for e in events] == [
        (EventType.LEVELLING_FAULT, Phase.RAISED, 0.0, 5.0)
    ]
    assert events[0].code == 0 and events[0].at_landing is False


def test_levelling_fault_near_misses_and_clearing() -> None:
    # Re-levelled within 4.9 s; doors open meanwhile do not matter.
    relevels = [
        *spell(OFF_LEVEL, 0.0, 4.9, 0.1, door=DoorState.OPEN, door_lock_closed=False),
        at(IDLE, 5.0),
    ]
    assert feed_all(relevels) == []
    # A re-levelling run restarts the count, from the run's sample (4.5 s): off level
    # again from some moment after it, for under 5 s by 9.0 s.
    tries = [*spell(OFF_LEVEL, 0.0, 4.0), at(OFF_LEVEL, 4.5, moving=True), at(OFF_LEVEL, 5.0)]
    assert feed_all([*tries, *spell(OFF_LEVEL, 5.5, 9.0, 0.5)]) == []
    raised = feed_all([*tries, *spell(OFF_LEVEL, 5.5, 9.5, 0.5)])
    assert [(e.phase, e.onset, e.at) for e in raised] == [(Phase.RAISED, 5.0, 9.5)]
    # Only normal service is watched: fire service and inspection stop where they must.
    for mode in (ServiceMode.FIRE_RETURN, ServiceMode.INSPECTION, ServiceMode.EMERGENCY_POWER):
        events = feed_all(spell(OFF_LEVEL, 0.0, 30.0, 1.0, mode=mode))
        assert EventType.LEVELLING_FAULT not in {e.type for e in events}
    events = feed_all([*spell(OFF_LEVEL, 0.0, 6.0), at(IDLE, 7.0)])
    assert [(e.phase, e.onset, e.at) for e in events] == [
        (Phase.RAISED, 0.0, 5.0),
        (Phase.CLEARED, 0.0, 7.0),
    ]


def test_levelling_faults_are_counted_in_health() -> None:
    unit = UnitDetectors()
    arrivals = [
        *spell(OFF_LEVEL, 0.0, 0.5, 0.1),  # signals settling on arrival: not counted
        at(RUNNING, 1.0),
        *spell(OFF_LEVEL, 2.0, 3.5, 0.5),  # re-levelled after 1.5 s: counted
        at(RUNNING, 4.0),
        *spell(OFF_LEVEL, 5.0, 12.0, 0.5),  # the fault: counted once
    ]
    for sample in arrivals:
        unit.feed(sample)
    assert unit.health.levelling_faults == 2


def test_stopped_outside_the_door_zone_is_judged_on_the_zone() -> None:
    events = feed_all([*spell(BETWEEN, 0.0, 15.0), at(OFF_LEVEL, 16.0)])
    stopped = [e for e in events if e.type is EventType.STOPPED_OUTSIDE_DOOR_ZONE]
    assert [(e.phase, e.onset, e.at, e.code) for e in stopped] == [
        (Phase.RAISED, 0.0, 15.0, 4),
        (Phase.CLEARED, 0.0, 16.0, 4),  # back in the zone, even off level
    ]
    assert stopped[0].at_landing is False


# --- lock bypass ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "door", [DoorState.OPENING, DoorState.OPEN, DoorState.PARTLY_OPEN, DoorState.CLOSING]
)
def test_lock_bypass_counts_in_every_door_state_but_closed(door: DoorState) -> None:
    jumpered = spell(OPEN, 0.0, 2.0, 0.1, door=door, door_lock_closed=True)
    bypass = [e for e in feed_all(jumpered) if e.type is EventType.DOOR_LOCK_BYPASS]
    assert [(e.phase, e.onset, e.at) for e in bypass] == [(Phase.RAISED, 0.0, 2.0)]


def test_lock_bypass_raise_time_does_not_depend_on_the_door_phase() -> None:
    # A jumper fitted while the doors stand closed shows from the first OPENING sample:
    # 2 s later whether the doors take 1 s or 3 s to open.
    for opening_s in (1.0, 3.0):
        cycle = [
            *spell(IDLE, 0.0, 1.0),
            *spell(OPEN, 1.1, 1.0 + opening_s, door=DoorState.OPENING, door_lock_closed=True),
            *spell(OPEN, 1.1 + opening_s, 8.0, door_lock_closed=True),
        ]
        bypass = [e for e in feed_all(cycle) if e.type is EventType.DOOR_LOCK_BYPASS]
        assert [e.onset for e in bypass] == [1.1]
        assert bypass[0].at == pytest.approx(3.1)


def test_a_sound_lock_never_reads_as_bypassed() -> None:
    # The lock still made on the first OPENING sample, and made on the last CLOSING one.
    cycles: list[CarState] = []
    for k in range(20):
        t = 10.0 * k
        cycles += [
            at(IDLE, t),
            at(OPEN, t + 0.1, door=DoorState.OPENING, door_lock_closed=True),
            *spell(OPEN, t + 0.2, t + 2.0, door=DoorState.OPENING),
            *spell(OPEN, t + 2.1, t + 6.0),
            *spell(OPEN, t + 6.1, t + 8.9, door=DoorState.CLOSING),
            at(OPEN, t + 9.0, door=DoorState.CLOSING, door_lock_closed=True),
        ]
    assert EventType.DOOR_LOCK_BYPASS not in {e.type for e in feed_all(cycles)}


# --- at_landing ---------------------------------------------------------------------------


def test_entrapment_says_where_the_car_is() -> None:
    config = DetectionConfig.from_mapping({"entrapment_at_landing_s": 10})
    at_floor = replace(TRAPPED_BETWEEN_FLOORS, door_zone=True, levelled=True)
    for base, where in ((at_floor, True), (TRAPPED_BETWEEN_FLOORS, False)):
        samples = [*spell(base, 0.0, 40.0), at(base, 41.0, occupied=False)]
        trapped = [e for e in feed_all(samples, config) if e.type is EventType.ENTRAPMENT]
        assert [(e.phase, e.at_landing) for e in trapped] == [
            (Phase.RAISED, where),
            (Phase.CLEARED, where),
        ]
    no_zone = replace(TRAPPED_BETWEEN_FLOORS, door_zone=None, levelled=None)
    trapped = [e for e in feed_all(spell(no_zone, 0.0, 70.0)) if e.type is EventType.ENTRAPMENT]
    assert [e.at_landing for e in trapped] == [None]


def test_every_phase_carries_the_place_of_the_onset() -> None:
    # The doors open between floors at 0, the car then drifts level: the place is 0's.
    samples = [
        at(BETWEEN, 0.0, door=DoorState.OPEN, door_lock_closed=True),
        *spell(IDLE, 0.5, 3.0, 0.5, door=DoorState.OPEN, door_lock_closed=True),
        at(IDLE, 4.0, door=DoorState.OPEN, door_lock_closed=False),
    ]
    bypass = [e for e in feed_all(samples) if e.type is EventType.DOOR_LOCK_BYPASS]
    assert [(e.phase, e.at_landing) for e in bypass] == [
        (Phase.RAISED, False),
        (Phase.CLEARED, False),
    ]


def test_a_bypass_fitted_during_the_close_is_raised_t_after_it_shows() -> None:
    cycle = [
        *spell(OPEN, 0.0, 1.0, 0.1, door=DoorState.CLOSING),
        *spell(OPEN, 1.1, 4.0, 0.1, door=DoorState.CLOSING, door_lock_closed=True),
        *spell(IDLE, 4.1, 6.0, 0.1),
    ]
    bypass = [e for e in feed_all(cycle) if e.type is EventType.DOOR_LOCK_BYPASS]
    assert [e.onset for e in bypass] == [1.1]
    # 2 s after the last sample without it (1.0 s): it went in at some moment after that.
    assert bypass[0].at == pytest.approx(3.0)


def test_a_bypass_seen_late_in_the_dwell_is_raised_during_the_close() -> None:
    cycle = [
        *spell(OPEN, 0.0, 3.0, 0.1),
        *spell(OPEN, 3.1, 3.5, 0.1, door_lock_closed=True),  # the jumper goes in
        *spell(OPEN, 3.6, 6.0, 0.1, door=DoorState.CLOSING, door_lock_closed=True),
        *spell(IDLE, 6.1, 8.0, 0.1),
    ]
    bypass = [e for e in feed_all(cycle) if e.type is EventType.DOOR_LOCK_BYPASS]
    assert [e.onset for e in bypass] == [3.1]
    assert bypass[0].at == pytest.approx(5.0)
    # A lock made only on the last CLOSING sample starts nothing.
    close = [
        *spell(OPEN, 0.0, 1.0, door=DoorState.CLOSING),
        at(OPEN, 1.1, door=DoorState.CLOSING, door_lock_closed=True),
        *spell(IDLE, 1.2, 9.0),
    ]
    assert feed_all(close) == []


def test_the_fault_map_is_the_one_of_the_source_that_reads_the_code() -> None:
    extra = """
[[unit.extra]]
slave = 2
profile = "template"
signals = ["fault_code"]
"""
    base = TEMPLATE_CONFIG.replace('profile = "template"', 'profile = "reference"')
    unit = parse_config(tomllib.loads(base + extra), Path()).units[0]
    assert dict(unit.detect.fault_events)[23] is EventType.POSITION_LOST
    # The reference map defines no codes: its own fault_code raises RESTART_PREVENTED.
    unit = parse_config(tomllib.loads(base), Path()).units[0]
    assert unit.detect.fault_events == ()
