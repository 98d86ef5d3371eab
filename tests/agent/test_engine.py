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
    assert DetectionConfig.keys() == tuple(f.name for f in fields(DetectionConfig))


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


def test_a_full_profile_can_detect_every_implemented_event() -> None:
    can, cannot = UnitDetectors.detectable(ALL_FIELDS)
    implemented = {EventType.ENTRAPMENT, EventType.DOOR_CLOSE_FAILURE, EventType.DOOR_OPEN_FAILURE}
    assert can == implemented
    assert cannot == set(EventType) - implemented - {EventType.CONTROLLER_LINK_LOST}
    reasons = UnitDetectors.undetectable_reasons(ALL_FIELDS)
    assert reasons[EventType.OVERSPEED] == "no detector yet"


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
    assert can == {EventType.ENTRAPMENT}
    reasons = UnitDetectors.undetectable_reasons(signals)
    assert "door_close_command" in reasons[EventType.DOOR_CLOSE_FAILURE]
    assert "door_open_command" in reasons[EventType.DOOR_OPEN_FAILURE]


def test_unknown_signal_names_are_refused() -> None:
    with pytest.raises(ValueError, match="ocupied"):
        UnitDetectors.detectable(frozenset({"ocupied", "door"}))
