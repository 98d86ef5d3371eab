"""One unit's detectors behind one object, and the thresholds that configure them.

`DetectionConfig` is every per-unit threshold with its default (docs/events.md explains
each). `UnitDetectors` holds one car's detector states and feeds each sample through
every `rule.Rule` (`rules`), and through the health counters; it is still pure (no I/O,
no clock), just mutable for the caller's convenience. One instance per car, used from one
task.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, TypeVar

from agent.detect import circuits, controller, doors, entrapment, motion
from agent.detect.events import Event, EventType, Phase
from agent.detect.health import HealthCounters, HealthSnapshot
from agent.detect.latch import POWER_SETTLE_S
from agent.detect.rule import Rule
from agent.state import CarState

_CAR_STATE_FIELDS = frozenset(f.name for f in fields(CarState))


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

    def entrapment_config(self) -> entrapment.EntrapmentConfig:
        """The ENTRAPMENT detector's view of these thresholds."""
        return entrapment.EntrapmentConfig(
            between_floors_s=self.entrapment_between_floors_s,
            at_landing_s=self.entrapment_at_landing_s,
            alarm_debounce_s=self.entrapment_alarm_debounce_s,
            empty_load_percent=self.entrapment_empty_load_percent,
        )

    def doors_config(self) -> doors.DoorsConfig:
        """The door-fault detectors' view of these thresholds."""
        return doors.DoorsConfig(
            close_failure_s=self.door_close_failure_s,
            open_failure_s=self.door_open_failure_s,
        )

    def door_watch_config(self) -> doors.DoorWatchConfig:
        """The nuisance door events' view of these thresholds."""
        return doors.DoorWatchConfig(
            reopen_loop_s=self.door_reopen_loop_s,
            reopen_loop_reopenings=self.door_reopen_loop_reopenings,
            held_open_s=self.door_held_open_s,
            slowing_margin_percent=self.door_slowing_margin_percent,
            slowing_baseline_cycles=self.door_slowing_baseline_cycles,
            slowing_min_cycles=self.door_slowing_min_cycles,
            slowing_cycles=self.door_slowing_cycles,
            dedup_s=self.nuisance_dedup_s,
            daily_cap=self.nuisance_daily_cap,
        )

    def motion_config(self) -> motion.MotionConfig:
        """The motion detectors' view of these thresholds."""
        return motion.MotionConfig(
            stopped_outside_door_zone_s=self.stopped_outside_door_zone_s,
            levelling_fault_s=self.levelling_fault_s,
            unintended_movement_samples=self.unintended_movement_samples,
            run_time_limit_s=self.run_time_limit_s,
            overspeed_factor=self.overspeed_factor,
            overspeed_s=self.overspeed_s,
            rated_speed_mm_s=self.rated_speed_mm_s,
            top_landing=self.top_landing,
            bottom_landing=self.bottom_landing,
        )

    def circuits_config(self) -> circuits.CircuitsConfig:
        """The circuit detectors' view of these thresholds."""
        return circuits.CircuitsConfig(
            safety_circuit_debounce_s=self.safety_circuit_debounce_s,
            door_open_while_moving_debounce_s=self.door_open_while_moving_debounce_s,
            door_lock_bypass_s=self.door_lock_bypass_s,
        )

    def controller_config(self) -> controller.ControllerConfig:
        """The controller detectors' view of these thresholds."""
        return controller.ControllerConfig(
            alarm_button_debounce_s=self.alarm_button_debounce_s, fault_events=self.fault_events
        )


def rules(config: DetectionConfig) -> tuple[Rule[Any], ...]:
    """Every detection rule of a unit with ``config``, in the order they run on a sample
    (the order their events come in)."""
    return (
        entrapment.EntrapmentRules(config.entrapment_config()),
        doors.DoorRules(config.doors_config(), config.door_watch_config()),
        motion.MotionRules(config.motion_config()),
        circuits.CircuitsRules(config.circuits_config()),
        controller.ControllerRules(config.controller_config()),
    )


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

_Groups = tuple[frozenset[str], ...]

#: The signal groups each event needs (one field of every group); OVERSPEED, OVERTRAVEL_*
#: and POSITION_LOST also depend on the unit's config (see `_config_reason`).
_REQUIREMENTS: dict[EventType, _Groups] = {
    EventType.ENTRAPMENT: entrapment.REQUIRED_SIGNALS,
    EventType.DOOR_CLOSE_FAILURE: doors.CLOSE_REQUIRED_SIGNALS,
    EventType.DOOR_OPEN_FAILURE: doors.OPEN_REQUIRED_SIGNALS,
    EventType.DOOR_REOPEN_LOOP: doors.REOPEN_REQUIRED_SIGNALS,
    EventType.DOOR_HELD_OPEN: doors.HELD_OPEN_REQUIRED_SIGNALS,
    EventType.DOOR_SLOWING: doors.SLOWING_REQUIRED_SIGNALS,
    EventType.STOPPED_OUTSIDE_DOOR_ZONE: (
        frozenset({"door_zone"}),
        frozenset({"moving", "speed_mm_s"}),
        frozenset({"door", "door_lock_closed"}),
    ),
    EventType.UNINTENDED_MOVEMENT: (
        frozenset({"door_zone"}),
        frozenset({"door", "door_lock_closed"}),
    ),
    EventType.LEVELLING_FAULT: (
        frozenset({"door_zone"}),
        frozenset({"levelled"}),
        frozenset({"moving", "speed_mm_s"}),
    ),
    EventType.RUN_TIME_EXCEEDED: (frozenset({"moving", "speed_mm_s"}),),
    EventType.OVERSPEED: (frozenset({"speed_mm_s"}),),
    EventType.POSITION_LOST: (frozenset({"floor"}),),
    EventType.SAFETY_CIRCUIT_OPEN: (
        frozenset({"safety_circuit_closed"}),
        frozenset({"moving", "speed_mm_s"}),
    ),
    EventType.DOOR_OPEN_WHILE_MOVING: (
        frozenset({"door_zone"}),
        frozenset({"moving", "speed_mm_s"}),
        frozenset({"door", "door_lock_closed"}),
    ),
    EventType.DOOR_LOCK_BYPASS: (frozenset({"door"}), frozenset({"door_lock_closed"})),
    EventType.RESTART_PREVENTED: (frozenset({"fault_code"}),),
    EventType.POWER_FAILURE: (frozenset({"mains_ok"}),),
    EventType.MODE_CHANGE: (frozenset({"mode"}),),
    EventType.ALARM_BUTTON: (frozenset({"alarm_button"}),),
}

# Every event decided from samples; link loss is decided by whoever polls the controller.
_SAMPLE_DRIVEN: tuple[EventType, ...] = tuple(
    t for t in EventType if t is not EventType.CONTROLLER_LINK_LOST
)
assert set(_REQUIREMENTS) | {EventType.OVERTRAVEL_TOP, EventType.OVERTRAVEL_BOTTOM} == set(
    _SAMPLE_DRIVEN
), "every sample-driven event needs its signal requirements"


def _needs(groups: _Groups, signals: frozenset[str]) -> str | None:
    missing = [g for g in groups if not g & signals]
    if not missing:
        return None
    return "; ".join("needs one of: " + ", ".join(sorted(g)) for g in missing)


def _overtravel_reason(
    signals: frozenset[str], limit_signal: str, landing: int | None, landing_key: str
) -> str | None:
    if limit_signal in signals:
        return None
    if landing is None:
        return f"needs {limit_signal}, or {landing_key} in the unit's config"
    return _needs(
        (
            frozenset({"floor"}),
            frozenset({"door_zone"}),
            frozenset({"position_mm", "direction"}),
        ),
        signals,
    )


def _reasons(config: DetectionConfig, profile_signals: Iterable[str]) -> dict[EventType, str]:
    """Each sample-driven event that cannot be detected with ``profile_signals`` (CarState
    field names) and ``config``, with a short reason ("needs one of: ..." or "needs ... in
    the unit's config"). Raises ValueError naming any field CarState does not have."""
    signals = frozenset(profile_signals)
    unknown = sorted(signals - _CAR_STATE_FIELDS)
    if unknown:
        raise ValueError(f"not CarState fields: {', '.join(unknown)}")
    reasons: dict[EventType, str] = {}
    for event_type, groups in _REQUIREMENTS.items():
        reason = _needs(groups, signals)
        if reason is not None:
            reasons[event_type] = reason
    if config.rated_speed_mm_s is None:
        reasons[EventType.OVERSPEED] = "needs rated_speed_mm_s in the unit's config" + (
            f"; {reasons[EventType.OVERSPEED]}" if EventType.OVERSPEED in reasons else ""
        )
    if config.top_landing is None or config.bottom_landing is None:
        reasons[EventType.POSITION_LOST] = (
            "needs top_landing and bottom_landing in the unit's config"
            + (
                f"; {reasons[EventType.POSITION_LOST]}"
                if EventType.POSITION_LOST in reasons
                else ""
            )
        )
    for event_type, limit_signal, landing, key in (
        (EventType.OVERTRAVEL_TOP, "up_final_limit", config.top_landing, "top_landing"),
        (EventType.OVERTRAVEL_BOTTOM, "down_final_limit", config.bottom_landing, "bottom_landing"),
    ):
        reason = _overtravel_reason(signals, limit_signal, landing, key)
        if reason is not None:
            reasons[event_type] = reason
    return {t: reasons[t] for t in _SAMPLE_DRIVEN if t in reasons}


def _split(
    config: DetectionConfig, profile_signals: Iterable[str]
) -> tuple[set[EventType], set[EventType]]:
    """The sample-driven events as (detectable, undetectable) for a profile reading
    ``profile_signals`` on a unit with ``config``; `_reasons` says why. CONTROLLER_LINK_LOST
    is in neither: the poller decides link loss and reports it through `blind`. Raises
    ValueError naming any field CarState does not have."""
    cannot = set(_reasons(config, profile_signals))
    return set(_SAMPLE_DRIVEN) - cannot, cannot


_R = TypeVar("_R")


class _ConfigAware(Generic[_R]):
    """A method callable on the class (with the default `DetectionConfig`) or on an
    instance (with its own), so ``UnitDetectors.detectable(signals)`` keeps working while
    ``UnitDetectors(config).detectable(signals)`` accounts for per-unit facts such as the
    rated speed."""

    def __init__(self, func: Callable[[DetectionConfig, Iterable[str]], _R]) -> None:
        self._func = func
        self.__doc__ = func.__doc__

    def __get__(
        self, obj: UnitDetectors | None, owner: type | None = None
    ) -> Callable[[Iterable[str]], _R]:
        config = obj.config if obj is not None else _DEFAULT_CONFIG
        return functools.partial(self._func, config)


_DEFAULT_CONFIG = DetectionConfig()


class UnitDetectors:
    """The detector states and health counters of one car, fed one sample at a time.

    Feed samples in time order; call `blind` whenever the controller link is lost (and
    keep calling `feed` once it returns). Events come back in the order decided. `health`
    is the car's `HealthSnapshot` as of the latest sample.

    One occurrence per type is open at a time, as the agent's event ids need: where two
    families hold the same type at once (a profile maps a fault code to POSITION_LOST
    while the floor is out of range), the first RAISED stands for both and its CLEARED
    comes, with its onset, when the last of them clears.
    """

    __slots__ = (
        "_health",
        "_mains_back",
        "_open",
        "_period",
        "_prev_t",
        "_rules",
        "_states",
        "_steps",
        "config",
    )

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config if config is not None else DetectionConfig()
        self._rules = rules(self.config)
        # One state per rule, in the same order.
        self._states: list[Any] = [rule.start() for rule in self._rules]
        # Bound once: this loop runs for every sample of every car.
        self._steps = tuple(rule.step for rule in self._rules)
        self._health = HealthCounters()
        # Type -> (the RAISED reported, how many families hold it now).
        self._open: dict[EventType, tuple[Event, int]] = {}
        # The previous sample's time and the interval before it: holds count from the
        # previous sample (`latch.advance`), but never from more than one such interval
        # back, so a stalled poll is not taken for time the condition held. None after an
        # outage, when nothing is known of the time in between.
        self._prev_t: float | None = None
        self._period: float | None = None
        # The last sample that read mains lost, while within its settle (else None).
        self._mains_back: float | None = None

    def _power_out(self, sample: CarState) -> bool:
        """Whether a mains failure explains the lift-fault rules on ``sample``: mains reads
        lost, or read lost less than `POWER_SETTLE_S` ago (`latch.POWER_EXPLAINED`)."""
        mains = sample.mains_ok
        if mains is False:
            self._mains_back = sample.t  # the settle counts from the last sample reading lost
            return True
        back = self._mains_back
        if back is None:
            return False
        if mains is True and sample.t - back >= POWER_SETTLE_S:
            self._mains_back = None
            return False
        return True

    def feed(self, sample: CarState) -> list[Event]:
        """Run every detector and the health counters on ``sample`` at its time
        ``sample.t``; the events it decides.

        Never raises for any CarState; returns a fresh list the caller may keep.
        """
        now = sample.t
        prev, period = self._prev_t, self._period
        since = None
        if prev is not None and period is not None:
            since = now - min(now - prev, period)
        if prev is not None:
            self._period = now - prev
        self._prev_t = now
        power_out = self._power_out(sample)
        states = self._states
        events: list[Event] = []
        for i, rule_step in enumerate(self._steps):
            states[i], more = rule_step(states[i], sample, now, since, power_out)
            if more:
                events.extend(more)
        self._health.feed(sample)
        if events:
            return self._one_per_type(events)
        return events

    def _one_per_type(self, events: list[Event]) -> list[Event]:
        """``events`` with a second family's occurrence of an already open type folded
        into the open one (see the class doc)."""
        out: list[Event] = []
        open_ = self._open
        for e in events:
            held = open_.get(e.type)
            if e.phase is Phase.RAISED:
                if held is None:
                    open_[e.type] = (e, 1)
                    out.append(e)
                else:
                    open_[e.type] = (held[0], held[1] + 1)
            elif held is None:
                out.append(e)  # not opened through here (cannot happen); pass it on
            elif held[1] > 1:
                open_[e.type] = (held[0], held[1] - 1)
            else:
                del open_[e.type]
                raised = held[0]
                if e.onset != raised.onset or e.at_landing != raised.at_landing:
                    e = replace(e, onset=raised.onset, at_landing=raised.at_landing)
                out.append(e)
        return out

    def blind(self, now: float) -> list[Event]:
        """The controller link is lost at ``now``: every family forgets its pending onsets,
        nothing is raised, and raised events stay raised (a link outage is not a rescue).

        Returns the events decided, which is always none.
        """
        states = self._states
        for i, rule in enumerate(self._rules):
            states[i] = rule.blind(states[i], now)
        self._health.blind(now)
        self._prev_t = self._period = None
        return []

    @property
    def health(self) -> HealthSnapshot:
        """The car's health counters as of the latest sample (computes medians: read it at
        the Counters record interval, not per sample)."""
        return self._health.snapshot()

    #: ``detectable(profile_signals) -> (detectable, undetectable)``: see `_split`. On the
    #: class it uses the default config, on an instance the unit's own.
    detectable = _ConfigAware(_split)
    #: ``undetectable_reasons(profile_signals) -> {event: reason}``: see `_reasons`.
    undetectable_reasons = _ConfigAware(_reasons)
