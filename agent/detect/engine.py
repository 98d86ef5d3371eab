"""One unit's detectors behind one object, and the thresholds that configure them.

`DetectionConfig` is every per-unit threshold with its default (docs/events.md explains
each). `UnitDetectors` holds one car's detector states and feeds each sample through
every `rule.Rule` (`rules`), and through the health counters; it is still pure (no I/O,
no clock), just mutable for the caller's convenience. One instance per car, used from one
task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from typing import Any, Generic, TypeVar

from agent.detect import circuits, controller, doors, entrapment, motion
from agent.detect.config import DetectionConfig, DetectionConfigError
from agent.detect.events import Event, EventType, Phase
from agent.detect.health import HealthCounters, HealthSnapshot
from agent.detect.latch import POWER_SETTLE_S
from agent.detect.rule import NamedRules, Rule
from agent.state import CarState

__all__ = ["DetectionConfig", "DetectionConfigError", "UnitDetectors", "rules"]

_CAR_STATE_FIELDS = frozenset(f.name for f in fields(CarState))


#: Each rule family's rules for a unit's config, in the order the families run.
_FAMILIES: tuple[Callable[[DetectionConfig], NamedRules], ...] = (
    entrapment.rules,
    doors.rules,
    motion.rules,
    circuits.rules,
    controller.rules,
)


def rules(config: DetectionConfig) -> tuple[Rule[Any], ...]:
    """Every detection rule of a unit with ``config``, one per rule (`rule.Rule`), in the
    order they run on a sample (the order their events come in)."""
    return tuple(rule for family in _FAMILIES for _, rule in family(config))


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
        # Mains read OK and not lost lately (the usual sample) needs no call.
        power_out = (
            self._power_out(sample)
            if self._mains_back is not None or sample.mains_ok is False
            else False
        )
        states = self._states
        events: list[Event] | None = None
        for i, rule_step in enumerate(self._steps):
            state, more = rule_step(states[i], sample, now, since, power_out)
            states[i] = state
            if more:
                if events is None:
                    events = list(more)
                else:
                    events.extend(more)
        self._health.feed(sample)
        if events is None:
            return []
        return self._one_per_type(events)

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
