"""One unit's detectors behind one object, and the thresholds that configure them.

`DetectionConfig` is every per-unit threshold with its default (docs/events.md explains
each). `UnitDetectors` holds one car's detector states and feeds each sample through the
pure ``step`` functions of every detector family; it is still pure (no I/O, no clock), just
mutable for the caller's convenience. One instance per car, used from one task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from agent.detect import doors, entrapment
from agent.detect.events import Event, EventType
from agent.state import CarState

_CAR_STATE_FIELDS = frozenset(f.name for f in fields(CarState))


class DetectionConfigError(ValueError):
    """Overrides that do not make a `DetectionConfig`; ``problems`` lists every one as
    ``(key, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Every detection threshold of one unit, in seconds or percent of rated load.

    - ``entrapment_between_floors_s`` (30): T1, trapped outside the door zone;
    - ``entrapment_at_landing_s`` (60): T2, trapped at a landing with doors shut;
    - ``entrapment_alarm_debounce_s`` (1): alarm button held this long while trapped
      raises ENTRAPMENT at once (0 raises on the first pressed sample);
    - ``entrapment_empty_load_percent`` (5): without an occupancy sensor, a load above
      this counts as occupied;
    - ``door_close_failure_s`` (20): DOOR_CLOSE_FAILURE threshold;
    - ``door_open_failure_s`` (10): DOOR_OPEN_FAILURE threshold.
    """

    entrapment_between_floors_s: float = 30.0
    entrapment_at_landing_s: float = 60.0
    entrapment_alarm_debounce_s: float = 1.0
    entrapment_empty_load_percent: float = 5.0
    door_close_failure_s: float = 20.0
    door_open_failure_s: float = 10.0

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every override key `from_mapping` accepts, in declaration order."""
        return _KEYS

    @classmethod
    def problems(cls, overrides: Mapping[str, object]) -> list[tuple[str, str]]:
        """Every problem with ``overrides`` as ``(key, message)``; empty when they are valid.

        Checks unknown keys, types (a number; a boolean is not one) and ranges.
        """
        found: list[tuple[str, str]] = []
        for key, value in overrides.items():
            if key not in _KEYS:
                found.append((key, f"unknown key (known: {', '.join(_KEYS)})"))
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                found.append((key, f"must be a number, got {type(value).__name__}"))
                continue
            if not math.isfinite(value):
                found.append((key, f"must be finite, got {value}"))
                continue
            low, low_inclusive, high = _RANGES[key]
            if value < low or (value == low and not low_inclusive):
                found.append(
                    (key, f"must be {'>=' if low_inclusive else '>'} {low:g}, got {value}")
                )
            elif high is not None and value > high:
                found.append((key, f"must be <= {high:g}, got {value}"))
        return found

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, object]) -> DetectionConfig:
        """The defaults with ``overrides`` applied, e.g. ``{"entrapment_between_floors_s": 3}``.

        Raises `DetectionConfigError` listing every problem (see `problems`) if any.
        """
        found = cls.problems(overrides)
        if found:
            raise DetectionConfigError(found)
        values = {
            key: float(value)
            for key, value in overrides.items()
            if isinstance(value, int | float)  # always true after problems(); narrows for mypy
        }
        return cls(**values)

    def entrapment_config(self) -> entrapment.EntrapmentConfig:
        """The ENTRAPMENT detector's view of these thresholds."""
        return entrapment.EntrapmentConfig(
            between_floors_s=self.entrapment_between_floors_s,
            at_landing_s=self.entrapment_at_landing_s,
            alarm_debounce_s=self.entrapment_alarm_debounce_s,
            empty_load_percent=self.entrapment_empty_load_percent,
        )

    def doors_config(self) -> doors.DoorsConfig:
        """The door detectors' view of these thresholds."""
        return doors.DoorsConfig(
            close_failure_s=self.door_close_failure_s,
            open_failure_s=self.door_open_failure_s,
        )


_KEYS = tuple(f.name for f in fields(DetectionConfig))

# key -> (lower bound, lower bound allowed, upper bound or None)
_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "entrapment_between_floors_s": (0.0, False, None),
    "entrapment_at_landing_s": (0.0, False, None),
    "entrapment_alarm_debounce_s": (0.0, True, None),
    "entrapment_empty_load_percent": (0.0, True, 100.0),
    "door_close_failure_s": (0.0, False, None),
    "door_open_failure_s": (0.0, False, None),
}
assert set(_RANGES) == set(_KEYS), "every DetectionConfig key needs a range"

#: The signal groups each implemented event needs (one field of every group).
_REQUIREMENTS: dict[EventType, tuple[frozenset[str], ...]] = {
    EventType.ENTRAPMENT: entrapment.REQUIRED_SIGNALS,
    EventType.DOOR_CLOSE_FAILURE: doors.CLOSE_REQUIRED_SIGNALS,
    EventType.DOOR_OPEN_FAILURE: doors.OPEN_REQUIRED_SIGNALS,
}

# Every event decided from samples; link loss is decided by whoever polls the controller.
_SAMPLE_DRIVEN: tuple[EventType, ...] = tuple(
    t for t in EventType if t is not EventType.CONTROLLER_LINK_LOST
)


class UnitDetectors:
    """The detector states of one car, fed one sample at a time.

    Feed samples in time order; call `blind` whenever the controller link is lost (and
    keep calling `feed` once it returns). Events come back in the order decided.
    """

    __slots__ = ("_doors", "_doors_config", "_entrapment", "_entrapment_config", "config")

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config if config is not None else DetectionConfig()
        self._entrapment_config = self.config.entrapment_config()
        self._doors_config = self.config.doors_config()
        self._entrapment = entrapment.EntrapmentState()
        self._doors = doors.DoorsState()

    def feed(self, sample: CarState) -> list[Event]:
        """Run every detector on ``sample`` at its time ``sample.t``; the events it decides.

        Never raises for any CarState; returns a fresh list the caller may keep.
        """
        now = sample.t
        self._entrapment, events = entrapment.step(
            self._entrapment, sample, now, self._entrapment_config
        )
        self._doors, door_events = doors.step(self._doors, sample, now, self._doors_config)
        if door_events:
            events.extend(door_events)
        return events

    def blind(self, now: float) -> list[Event]:
        """The controller link is lost at ``now``: pending onsets are forgotten, nothing is
        raised, and raised events stay raised (a link outage is not a rescue).

        Returns the events decided, which for the current detectors is always none.
        """
        self._entrapment = entrapment.blind(self._entrapment, now)
        self._doors = doors.blind(self._doors, now)
        return []

    @staticmethod
    def detectable(
        profile_signals: Iterable[str],
    ) -> tuple[set[EventType], set[EventType]]:
        """Split the sample-driven events into (detectable, undetectable) for a profile that
        reads the CarState fields named in ``profile_signals``.

        Undetectable includes the events no detector implements yet; `undetectable_reasons`
        says which is which. CONTROLLER_LINK_LOST is in neither set: the caller decides
        link loss and reports it through `blind`. Raises ValueError naming any field
        CarState does not have.
        """
        cannot = set(UnitDetectors.undetectable_reasons(profile_signals))
        return set(_SAMPLE_DRIVEN) - cannot, cannot

    @staticmethod
    def undetectable_reasons(profile_signals: Iterable[str]) -> dict[EventType, str]:
        """Each sample-driven event that cannot be detected with ``profile_signals``, with a
        short reason ("needs one of: ..." or "no detector yet"). Raises ValueError on
        unknown fields."""
        signals = frozenset(profile_signals)
        unknown = sorted(signals - _CAR_STATE_FIELDS)
        if unknown:
            raise ValueError(f"not CarState fields: {', '.join(unknown)}")
        reasons: dict[EventType, str] = {}
        for event_type in _SAMPLE_DRIVEN:
            groups = _REQUIREMENTS.get(event_type)
            if groups is None:
                reasons[event_type] = "no detector yet"
                continue
            missing = [g for g in groups if not g & signals]
            if missing:
                reasons[event_type] = "; ".join(
                    "needs one of: " + ", ".join(sorted(g)) for g in missing
                )
        return reasons
