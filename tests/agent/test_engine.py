"""DetectionConfig parsing and UnitDetectors' bookkeeping."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from agent.detect.engine import DetectionConfig, DetectionConfigError, UnitDetectors
from agent.detect.events import EventType, Phase
from agent.state import CarState
from tests.agent.detect_helpers import TRAPPED_BETWEEN_FLOORS, at, spell

ALL_FIELDS = frozenset(f.name for f in fields(CarState)) - {"t"}


def test_defaults_are_the_documented_ones() -> None:
    config = DetectionConfig()
    assert config.entrapment_between_floors_s == 30.0
    assert config.entrapment_at_landing_s == 60.0
    assert config.entrapment_alarm_debounce_s == 1.0
    assert config.entrapment_empty_load_percent == 5.0
    assert config.door_close_failure_s == 20.0
    assert config.door_open_failure_s == 10.0
    assert config.door_reopen_loop_s == 60.0
    assert config.door_reopen_loop_reopenings == 3
    assert config.levelling_fault_s == 5.0
    assert config.door_held_open_s == 60.0
    assert config.stopped_outside_door_zone_s == 15.0
    assert config.run_time_limit_s == 60.0
    assert config.overspeed_factor == 1.15
    assert config.rated_speed_mm_s is None
    assert config.safety_circuit_debounce_s == 0.15
    assert config.door_lock_bypass_s == 2.0
    # Every field is a [detect] key but the profile's fault map, which the agent sets.
    assert DetectionConfig.keys() == tuple(
        f.name for f in fields(DetectionConfig) if f.name != "fault_events"
    )


def test_from_mapping_applies_overrides_as_floats() -> None:
    config = DetectionConfig.from_mapping({"entrapment_between_floors_s": 3})
    assert config.entrapment_between_floors_s == 3.0
    assert isinstance(config.entrapment_between_floors_s, float)
    assert config.entrapment_at_landing_s == 60.0
    assert DetectionConfig.from_mapping({}) == DetectionConfig()


def test_every_problem_is_listed_at_once() -> None:
    overrides: dict[str, object] = {
        "entrapment_between_floor_s": 3,  # typo
        "entrapment_at_landing_s": "60",
        "door_close_failure_s": True,
        "door_open_failure_s": -1,
        "entrapment_alarm_debounce_s": math.nan,
        "entrapment_empty_load_percent": 150,
    }
    problems = dict(DetectionConfig.problems(overrides))
    assert set(problems) == set(overrides)
    assert problems["entrapment_between_floor_s"].startswith("unknown key")
    assert "entrapment_between_floors_s" in problems["entrapment_between_floor_s"]
    assert problems["entrapment_at_landing_s"] == "must be a number, got str"
    assert problems["door_close_failure_s"] == "must be a number, got bool"
    assert problems["door_open_failure_s"] == "must be > 0, got -1"
    assert problems["entrapment_alarm_debounce_s"] == "must be finite, got nan"
    assert problems["entrapment_empty_load_percent"] == "must be <= 100, got 150"
    with pytest.raises(DetectionConfigError) as caught:
        DetectionConfig.from_mapping(overrides)
    assert sorted(caught.value.problems) == sorted(DetectionConfig.problems(overrides))
    assert "entrapment_between_floor_s: unknown key" in str(caught.value)


def test_zero_is_allowed_only_where_it_means_something() -> None:
    assert DetectionConfig.problems({"entrapment_alarm_debounce_s": 0}) == []
    assert DetectionConfig.problems({"entrapment_empty_load_percent": 0}) == []
    assert DetectionConfig.problems({"entrapment_between_floors_s": 0}) == [
        ("entrapment_between_floors_s", "must be > 0, got 0")
    ]


def test_feed_returns_events_of_every_family_from_one_sample() -> None:
    config = DetectionConfig.from_mapping(
        {"entrapment_between_floors_s": 5, "door_close_failure_s": 5}
    )
    unit = UnitDetectors(config)
    # Trapped with the close command stuck on and the lock circuit open: both rules run.
    stuck = [
        at(TRAPPED_BETWEEN_FLOORS, float(t), door_close_command=True, door_lock_closed=False)
        for t in range(6)
    ]
    decided = [unit.feed(s) for s in stuck]
    assert all(events == [] for events in decided[:5])
    assert sorted((e.type.value, e.phase, e.at) for e in decided[5]) == [
        ("DOOR_CLOSE_FAILURE", Phase.RAISED, 5.0),
        ("ENTRAPMENT", Phase.RAISED, 5.0),
    ]


def test_blind_never_emits() -> None:
    unit = UnitDetectors()
    for sample in spell(TRAPPED_BETWEEN_FLOORS, 0.0, 40.0):
        unit.feed(sample)
    assert unit.blind(41.0) == []
    assert unit.blind(42.0) == []


def test_a_full_profile_detects_everything_once_the_unit_facts_are_configured() -> None:
    # Called on the class: default config, which knows no rated speed and no landings.
    can, cannot = UnitDetectors.detectable(ALL_FIELDS)
    assert cannot == {EventType.OVERSPEED, EventType.POSITION_LOST}
    assert can == set(EventType) - cannot - {EventType.CONTROLLER_LINK_LOST}
    reasons = UnitDetectors.undetectable_reasons(ALL_FIELDS)
    assert reasons[EventType.OVERSPEED] == "needs rated_speed_mm_s in the unit's config"
    assert "top_landing and bottom_landing" in reasons[EventType.POSITION_LOST]
    configured = UnitDetectors(
        DetectionConfig.from_mapping(
            {"rated_speed_mm_s": 1000, "top_landing": 12, "bottom_landing": -1}
        )
    )
    can, cannot = configured.detectable(ALL_FIELDS)
    assert cannot == set()
    assert can == set(EventType) - {EventType.CONTROLLER_LINK_LOST}


def test_overtravel_falls_back_to_the_terminal_landings_without_final_limits() -> None:
    signals = ALL_FIELDS - {"up_final_limit", "down_final_limit"}
    _, cannot = UnitDetectors.detectable(signals)
    assert {EventType.OVERTRAVEL_TOP, EventType.OVERTRAVEL_BOTTOM} <= cannot
    unit = UnitDetectors(DetectionConfig.from_mapping({"top_landing": 9, "bottom_landing": 0}))
    can, _ = unit.detectable(signals)
    assert {EventType.OVERTRAVEL_TOP, EventType.OVERTRAVEL_BOTTOM} <= can
    _, cannot = unit.detectable(signals - {"position_mm", "direction"})
    assert EventType.OVERTRAVEL_TOP in cannot


def test_entrapment_is_undetectable_without_any_occupancy_signal() -> None:
    signals = ALL_FIELDS - {"occupied", "load_percent"}
    can, cannot = UnitDetectors.detectable(signals)
    assert EventType.ENTRAPMENT in cannot
    assert EventType.DOOR_CLOSE_FAILURE in can
    reason = UnitDetectors.undetectable_reasons(signals)[EventType.ENTRAPMENT]
    assert reason == "needs one of: load_percent, occupied"
    can, _ = UnitDetectors.detectable(ALL_FIELDS - {"occupied"})
    assert EventType.ENTRAPMENT in can


def test_a_retrofit_module_with_lock_and_zone_contacts_only() -> None:
    # A discrete-input module: door zone, door-lock circuit, a load cell; no door operator.
    signals = frozenset({"door_zone", "door_lock_closed", "load_percent", "speed_mm_s"})
    can, _ = UnitDetectors.detectable(signals)
    assert can == {
        EventType.ENTRAPMENT,
        EventType.STOPPED_OUTSIDE_DOOR_ZONE,
        EventType.UNINTENDED_MOVEMENT,
        EventType.RUN_TIME_EXCEEDED,
        EventType.DOOR_OPEN_WHILE_MOVING,
    }
    reasons = UnitDetectors.undetectable_reasons(signals)
    assert "door_close_command" in reasons[EventType.DOOR_CLOSE_FAILURE]
    assert "door_open_command" in reasons[EventType.DOOR_OPEN_FAILURE]
    assert reasons[EventType.DOOR_HELD_OPEN] == "needs one of: mode"


def test_unknown_signal_names_are_refused() -> None:
    with pytest.raises(ValueError, match="ocupied"):
        UnitDetectors.detectable(frozenset({"ocupied", "door"}))
