"""`DetectionConfig`: every per-unit detection threshold, each default typed once here.

The rule families' own configs (`entrapment.EntrapmentConfig`, `doors.DoorsConfig`, ...)
take their defaults from `DEFAULTS` and are built from a unit's config by their
``from_detection``; this module imports no rule family, so every family may import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from agent.detect.events import EventType

if TYPE_CHECKING:  # the families import this module for their defaults
    from agent.detect.circuits import CircuitsConfig
    from agent.detect.controller import ControllerConfig
    from agent.detect.doors import DoorsConfig, DoorWatchConfig
    from agent.detect.entrapment import EntrapmentConfig
    from agent.detect.motion import MotionConfig


class DetectionConfigError(ValueError):
    """Overrides that do not make a `DetectionConfig`; ``problems`` lists every one as
    ``(key, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))


def _key(
    default: Any, low: float | None = None, *, above: bool = False, high: float | None = None
) -> Any:
    """A `DetectionConfig` key: its default (THE default) and the values it allows: from
    ``low`` (excluded when ``above``) to ``high``."""
    return field(default=default, metadata={"range": (low, not above, high)})


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Every detection threshold of one unit. docs/events.md documents each key; seconds
    unless the name says otherwise. Keys defaulting to None are unit facts with no
    sensible default: the rules that need them are undetectable until they are set.

    Entrapment: ``entrapment_between_floors_s`` (30, T1), ``entrapment_at_landing_s``
    (60, T2), ``entrapment_alarm_debounce_s`` (1; 0 raises on the first pressed sample),
    ``entrapment_empty_load_percent`` (5; without an occupancy sensor a load above it is
    occupied). Doors: ``door_close_failure_s`` (20), ``door_open_failure_s`` (10),
    ``door_reopen_loop_s`` (60), ``door_reopen_loop_reopenings`` (3),
    ``door_held_open_s`` (60), ``door_slowing_margin_percent`` (30),
    ``door_slowing_baseline_cycles`` (500), ``door_slowing_min_cycles`` (20),
    ``door_slowing_cycles`` (3), ``nuisance_dedup_s`` (600), ``nuisance_daily_cap`` (10).
    Motion: ``stopped_outside_door_zone_s`` (15), ``levelling_fault_s`` (5),
    ``unintended_movement_samples`` (2), ``run_time_limit_s`` (60), ``rated_speed_mm_s``
    (None), ``overspeed_factor`` (1.15), ``overspeed_s`` (0.1), ``top_landing`` and
    ``bottom_landing`` (None). Circuits: ``safety_circuit_debounce_s`` (0.15),
    ``door_open_while_moving_debounce_s`` (0.1), ``door_lock_bypass_s`` (2). Controller:
    ``alarm_button_debounce_s`` (1).

    ``fault_events`` is not a TOML key: it is the unit's profile's fault-code map
    (``(code, event)`` pairs, from its ``[faults]`` table), which the agent's config
    loader sets from the source that reads ``fault_code``.
    """

    entrapment_between_floors_s: float = _key(30.0, 0.0, above=True)
    entrapment_at_landing_s: float = _key(60.0, 0.0, above=True)
    entrapment_alarm_debounce_s: float = _key(1.0, 0.0)
    entrapment_empty_load_percent: float = _key(5.0, 0.0, high=100.0)
    door_close_failure_s: float = _key(20.0, 0.0, above=True)
    door_open_failure_s: float = _key(10.0, 0.0, above=True)
    door_reopen_loop_s: float = _key(60.0, 0.0, above=True)
    door_reopen_loop_reopenings: int = _key(3, 1)
    door_held_open_s: float = _key(60.0, 0.0, above=True)
    door_slowing_margin_percent: float = _key(30.0, 0.0)
    door_slowing_baseline_cycles: int = _key(500, 2)
    door_slowing_min_cycles: int = _key(20, 2)
    door_slowing_cycles: int = _key(3, 1)
    nuisance_dedup_s: float = _key(600.0, 0.0)
    nuisance_daily_cap: int = _key(10, 0)
    stopped_outside_door_zone_s: float = _key(15.0, 0.0, above=True)
    levelling_fault_s: float = _key(5.0, 0.0, above=True)
    unintended_movement_samples: int = _key(2, 1)
    run_time_limit_s: float = _key(60.0, 0.0, above=True)
    rated_speed_mm_s: float | None = _key(None, 0.0, above=True)
    overspeed_factor: float = _key(1.15, 1.0)
    overspeed_s: float = _key(0.1, 0.0)
    top_landing: int | None = _key(None)
    bottom_landing: int | None = _key(None)
    safety_circuit_debounce_s: float = _key(0.15, 0.0)
    door_open_while_moving_debounce_s: float = _key(0.1, 0.0)
    door_lock_bypass_s: float = _key(2.0, 0.0)
    alarm_button_debounce_s: float = _key(1.0, 0.0)
    fault_events: tuple[tuple[int, EventType], ...] = ()

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every override key `from_mapping` accepts, in declaration order."""
        return _KEYS

    @classmethod
    def problems(cls, overrides: Mapping[str, object]) -> list[tuple[str, str]]:
        """Every problem with ``overrides`` as ``(key, message)``; empty when they are valid.

        Checks unknown keys, types (a number, an integer for counts and landings; a
        boolean is neither), ranges, and that ``top_landing`` is above ``bottom_landing``
        and ``door_slowing_baseline_cycles`` at least ``door_slowing_min_cycles`` when both
        are given.
        """
        found: list[tuple[str, str]] = []
        for key, value in overrides.items():
            if key in _RETIRED_KEYS:
                found.append((key, _RETIRED_KEYS[key]))
                continue
            if key not in _KEYS:
                found.append((key, f"unknown key (known: {', '.join(_KEYS)})"))
                continue
            integer, low, low_inclusive, high = _RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                found.append((key, f"must be a number, got {type(value).__name__}"))
                continue
            if integer and not isinstance(value, int):
                found.append((key, f"must be an integer, got {value!r}"))
                continue
            if not math.isfinite(value):
                found.append((key, f"must be finite, got {value}"))
                continue
            if low is not None and (value < low or (value == low and not low_inclusive)):
                found.append(
                    (key, f"must be {'>=' if low_inclusive else '>'} {low:g}, got {value}")
                )
            elif high is not None and value > high:
                found.append((key, f"must be <= {high:g}, got {value}"))
        if not found:
            for high_key, low_key, word in _ORDERED_PAIRS:
                top, bottom = overrides.get(high_key), overrides.get(low_key)
                if (
                    isinstance(top, int | float)
                    and isinstance(bottom, int | float)
                    and (top < bottom or (top == bottom and high_key == "top_landing"))
                ):
                    found.append((high_key, f"must be {word} {low_key} ({bottom})"))
        return found

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, object]) -> DetectionConfig:
        """The defaults with ``overrides`` applied, e.g. ``{"entrapment_between_floors_s": 3}``.

        Counts and landings become ints, every other value a float. Raises
        `DetectionConfigError` listing every problem (see `problems`) if any.
        """
        found = cls.problems(overrides)
        if found:
            raise DetectionConfigError(found)
        values: dict[str, float | int] = {}
        for key, value in overrides.items():
            if isinstance(value, int | float):  # always true after problems(); narrows
                values[key] = int(value) if _RANGES[key][0] else float(value)
        return cls(**values)  # type: ignore[arg-type]  # keys and types checked above

    # The families' views of these thresholds. Imported where called: each family module
    # imports this one for its defaults (`DEFAULTS`).

    def entrapment_config(self) -> EntrapmentConfig:
        """The ENTRAPMENT detector's view of these thresholds."""
        from agent.detect.entrapment import EntrapmentConfig

        return EntrapmentConfig.from_detection(self)

    def doors_config(self) -> DoorsConfig:
        """The door-fault detectors' view of these thresholds."""
        from agent.detect.doors import DoorsConfig

        return DoorsConfig.from_detection(self)

    def door_watch_config(self) -> DoorWatchConfig:
        """The nuisance door events' view of these thresholds."""
        from agent.detect.doors import DoorWatchConfig

        return DoorWatchConfig.from_detection(self)

    def motion_config(self) -> MotionConfig:
        """The motion detectors' view of these thresholds."""
        from agent.detect.motion import MotionConfig

        return MotionConfig.from_detection(self)

    def circuits_config(self) -> CircuitsConfig:
        """The circuit detectors' view of these thresholds."""
        from agent.detect.circuits import CircuitsConfig

        return CircuitsConfig.from_detection(self)

    def controller_config(self) -> ControllerConfig:
        """The controller detectors' view of these thresholds."""
        from agent.detect.controller import ControllerConfig

        return ControllerConfig.from_detection(self)


# Fields set by the agent from the unit's profile, not by [detect] tables.
_PROFILE_FIELDS = frozenset({"fault_events"})
_KEYS = tuple(f.name for f in fields(DetectionConfig) if f.name not in _PROFILE_FIELDS)

# Keys an older config may still set, with what replaced them: refused with this message
# rather than silently ignored, so a site's tuning is carried over by a person.
_RETIRED_KEYS = {
    "door_reopen_loop_count": (
        "no longer a key: DOOR_REOPEN_LOOP is time-based since issue 13; set "
        "door_reopen_loop_s (seconds the loop must last, default 60) and "
        "door_reopen_loop_reopenings (re-openings it needs, default 3) instead"
    ),
}

# key -> (integer, lower bound or None, lower bound allowed, upper bound or None), from
# each field's _key declaration (integer keys are those typed int).
_RANGES: dict[str, tuple[bool, float | None, bool, float | None]] = {
    f.name: (str(f.type).startswith("int"), *f.metadata["range"])
    for f in fields(DetectionConfig)
    if "range" in f.metadata
}
assert set(_RANGES) == set(_KEYS), "every DetectionConfig key needs a range"

# (key that must be the larger, key it is compared with, wording)
_ORDERED_PAIRS = (
    ("top_landing", "bottom_landing", "above"),
    ("door_slowing_baseline_cycles", "door_slowing_min_cycles", "at least"),
)

#: The defaults, which the families' own configs default to.
DEFAULTS = DetectionConfig()
