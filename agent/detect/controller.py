"""What the controller reports about itself: RESTART_PREVENTED (其他阻止再启动的故障, GB/T
24476-2017 code 8), POWER_FAILURE (停电, code 41), MODE_CHANGE (codes 40, 42-47) and
ALARM_BUTTON (报警按钮, code 90).

RESTART_PREVENTED and mapped fault codes (immediate)
    ``fault_code`` reads non-zero. A code the unit's profile maps to an event (its
    ``[faults]`` table, `ControllerConfig.fault_events`) raises that event, with that
    event's own GB/T code: a code mapped to POSITION_LOST raises POSITION_LOST (code 7), one
    mapped to OVERTRAVEL_TOP raises OVERTRAVEL_TOP. Only a code the profile does not map
    raises RESTART_PREVENTED (code 8), the standard's "other fault preventing restart".
    The code is in the reason. The controller holds one code at a time, so one code
    occurrence is open at a time: the code returning to 0 clears it (the controller
    reset its fault), and a different non-zero code clears it and raises the new code's
    event, so every code is reported. Mode suppression follows the mapped event's own
    rule (`CODE_SUPPRESSED_MODES`; a code mapped to STOPPED_OUTSIDE_DOOR_ZONE is watched
    in NORMAL and UNKNOWN only, one mapped to ENTRAPMENT in the entrapment modes, and so
    on); RESTART_PREVENTED is watched in every mode but INSPECTION: a fault is often what
    takes a controller out of service, so STOPPED must not hide it. A code seen in a
    suppressed mode raises nothing even when the mode changes later: it is raised when
    the code is next seen in a watched mode. Likewise a code whose event a mains failure
    explains (`latch.POWER_EXPLAINED`: RESTART_PREVENTED, the door, motion and circuit
    faults) raises nothing while mains is out and for `latch.POWER_SETTLE_S` after it
    returns (the controller reporting its own power loss); still there after that, it is
    raised then. When a sample-driven rule of the same family
    raises the same type meanwhile, `UnitDetectors` reports one occurrence of the type,
    open while either holds. Needs ``fault_code``.

POWER_FAILURE (immediate)
    ``mains_ok`` reads False (the agent runs on its UPS). CLEARED when it reads True.
    Watched in every mode. Needs ``mains_ok``.

MODE_CHANGE (event)
    RAISED when the car leaves NORMAL for another known mode, with the mode's name in the
    reason; a change between two non-normal modes clears the occurrence and raises one for
    the new mode; CLEARED when the car is back in NORMAL. Every MODE_CHANGE record carries
    the GB/T code of the mode the car is in after it (`MODE_CODES`): a RAISED the code of
    the mode entered (42-47), a CLEARED 40 when the car is back in normal service, or,
    when the car went straight to another non-normal mode, that mode's code (a RAISED
    with the same code follows on the same sample). So a platform reading any one record
    learns the mode the car is in, never "normal" for a car that went into inspection.
    The first sample after start in a non-normal mode raises too (a car found out of
    service is worth reporting); a mode changed during a link outage is reported when
    the link returns. UNKNOWN (no mode signal, or a value the map does not know) neither
    raises nor clears. Needs ``mode``.

ALARM_BUTTON (debounce 1 s, ``alarm_button_debounce_s``)
    ``alarm_button`` pressed for the debounce, counted from the last sample that read it
    released (`latch.advance`); onset is the first pressed sample. CLEARED
    when released. Watched in every mode: a person is pressing it. Needs ``alarm_button``.

Alarms and power failures are never de-duplicated or capped. `blind` forgets a pending
alarm press and keeps raised events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from agent.detect.config import DEFAULTS, DetectionConfig
from agent.detect.doors import REOPEN_SUPPRESSED_MODES, TIMED_MODES
from agent.detect.entrapment import ENTRAPMENT_MODES
from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import (
    FAULT_SUPPRESSED_MODES,
    IDLE,
    INSPECTION_ONLY,
    POWER_EXPLAINED,
    Latch,
    LatchRule,
    judged,
)
from agent.detect.motion import STOPPED_OUTSIDE_MODES
from agent.detect.reasons import Reason, coded
from agent.detect.rule import NO_EVENTS, NamedRules, blind_all, step_all
from agent.state import CarState, ServiceMode

#: GB/T 24476 code of each service mode for MODE_CHANGE: 40 normal service, then 42-47 in
#: the order shared/DESIGN.md lists the modes beside "40, 42-47" (41 is the power failure).
#: UNKNOWN has none: it neither raises nor clears.
MODE_CODES: dict[ServiceMode, int] = {
    ServiceMode.NORMAL: 40,
    ServiceMode.STOPPED: 42,
    ServiceMode.INSPECTION: 43,
    ServiceMode.FIRE_RETURN: 44,
    ServiceMode.FIREFIGHTER: 45,
    ServiceMode.EMERGENCY_POWER: 46,
    ServiceMode.EARTHQUAKE: 47,
}

_ALL_MODES = frozenset(ServiceMode)

#: Events a controller fault code cannot stand for: the mode is its own signal and the
#: link is judged by the poller. A profile mapping a code to one of them is refused.
UNMAPPABLE = frozenset({EventType.MODE_CHANGE, EventType.CONTROLLER_LINK_LOST})

#: Modes in which a fault code mapped to each event raises nothing, the event's own rule's
#: (docs/events.md, "Modes"); a type not listed is watched in every mode but INSPECTION.
CODE_SUPPRESSED_MODES: dict[EventType, frozenset[ServiceMode]] = {
    **dict.fromkeys(
        (
            EventType.DOOR_CLOSE_FAILURE,
            EventType.DOOR_OPEN_FAILURE,
            EventType.RUN_TIME_EXCEEDED,
            EventType.POSITION_LOST,
            EventType.SAFETY_CIRCUIT_OPEN,
            EventType.DOOR_OPEN_WHILE_MOVING,
            EventType.DOOR_LOCK_BYPASS,
        ),
        FAULT_SUPPRESSED_MODES,
    ),
    EventType.STOPPED_OUTSIDE_DOOR_ZONE: _ALL_MODES - STOPPED_OUTSIDE_MODES,
    EventType.LEVELLING_FAULT: _ALL_MODES - STOPPED_OUTSIDE_MODES,
    EventType.ENTRAPMENT: _ALL_MODES - ENTRAPMENT_MODES,
    EventType.DOOR_REOPEN_LOOP: REOPEN_SUPPRESSED_MODES,
    EventType.DOOR_HELD_OPEN: _ALL_MODES - {ServiceMode.NORMAL},
    EventType.DOOR_SLOWING: _ALL_MODES - TIMED_MODES,
    EventType.POWER_FAILURE: frozenset(),
    EventType.ALARM_BUTTON: frozenset(),
}

_MODE_NAMES = {
    ServiceMode.STOPPED: "out of service",
    ServiceMode.INSPECTION: "inspection",
    ServiceMode.FIRE_RETURN: "fire return",
    ServiceMode.FIREFIGHTER: "firefighter",
    ServiceMode.EMERGENCY_POWER: "emergency power",
    ServiceMode.EARTHQUAKE: "earthquake",
}


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Thresholds of the controller rules, and the profile's fault-code map:
    ``fault_events`` is ``(code, event)`` pairs, codes 1..65535, no event in `UNMAPPABLE`
    (the profile loader checks both). The defaults are `DetectionConfig`'s."""

    alarm_button_debounce_s: float = DEFAULTS.alarm_button_debounce_s
    fault_events: tuple[tuple[int, EventType], ...] = DEFAULTS.fault_events
    _events_by_code: dict[int, EventType] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_events_by_code", dict(self.fault_events))

    @classmethod
    def from_detection(cls, config: DetectionConfig) -> ControllerConfig:
        """The controller rules' view of a unit's thresholds and fault-code map."""
        return cls(
            alarm_button_debounce_s=config.alarm_button_debounce_s,
            fault_events=config.fault_events,
        )

    def code_event(self, code: int) -> EventType | None:
        """The event a non-zero fault ``code`` raises: its mapped event, else
        RESTART_PREVENTED; None for 0."""
        if code == 0:
            return None
        return self._events_by_code.get(code, EventType.RESTART_PREVENTED)


@dataclass(frozen=True, slots=True)
class FaultState:
    """The fault-code rule's memory: ``onset``/``code``/``type``/``place`` of the raised
    fault-code occurrence (``type`` None when none is)."""

    onset: float | None = None
    code: int = 0
    type: EventType | None = None
    place: bool | None = None


@dataclass(frozen=True, slots=True)
class ModeState:
    """MODE_CHANGE's memory: the mode the car was last seen in and ``onset`` of the raised
    occurrence (None in NORMAL)."""

    onset: float | None = None
    mode: ServiceMode = ServiceMode.NORMAL


_FAULT_START = FaultState()
_MODE_START = ModeState()


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Detector memory for one car's controller rules: each rule's own."""

    fault: FaultState = _FAULT_START
    power: Latch = IDLE
    mode: ModeState = _MODE_START
    alarm: Latch = IDLE


def step(
    state: ControllerState,
    sample: CarState,
    now: float,
    config: ControllerConfig,
    *,
    since: float | None = None,
    power_out: bool = False,
) -> tuple[ControllerState, list[Event]]:
    """Advance the controller rules by one sample taken at monotonic time ``now``.

    ``since`` is the previous sample's time (the alarm debounce counts from it, see
    `latch.advance`); ``power_out`` whether a mains failure explains a fault code's event
    (`latch.POWER_EXPLAINED`). Returns the new state (the same object when nothing
    changed) and the events decided on this sample: at most a CLEARED and a RAISED per
    rule. ``now`` must not decrease. Never raises.
    """
    return step_all(_rules(config), state, sample, now, since, power_out)


@dataclass(frozen=True, slots=True)
class FaultCode:
    """The controller's fault code as a `rule.Rule` (RESTART_PREVENTED, or the event the
    profile maps the code to). A changed code clears the occurrence and may raise
    another at once; not `latch.advance`, since there is no hold and a code is replaced
    rather than cleared."""

    config: ControllerConfig

    def start(self) -> FaultState:
        """See `rule.Rule.start`."""
        return _FAULT_START

    def step(
        self, state: FaultState, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[FaultState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        code = sample.fault_code
        if code is None or (code == 0 and state.type is None):
            return state, NO_EVENTS  # no code shows and none was raised: nothing to do
        events: list[Event] = []
        new = state
        if state.type is not None and code != state.code:
            assert state.onset is not None  # a raised occurrence carries its onset
            reason = (
                coded("fault code cleared", "fault_code_cleared")
                if code == 0
                else coded(f"fault code now {code}", "fault_code_now", code=code)
            )
            events.append(
                Event(
                    state.type,
                    Phase.CLEARED,
                    state.onset,
                    now,
                    sample.floor,
                    reason.text,
                    at_landing=state.place,
                    reason_code=reason.code,
                    reason_params=reason.params,
                )
            )
            new = _FAULT_START
        raises = self.config.code_event(code) if new.type is None else None
        if (
            raises is not None
            and sample.mode not in CODE_SUPPRESSED_MODES.get(raises, INSPECTION_ONLY)
            and not (power_out and raises in POWER_EXPLAINED)
        ):
            new = FaultState(now, code, raises, sample.at_landing)
            raised = (
                coded(f"controller fault code {code}", "fault_code", code=code)
                if raises is EventType.RESTART_PREVENTED
                else coded(
                    f"controller fault code {code} ({raises.name} in the profile)",
                    "fault_code_mapped",
                    code=code,
                    type=raises,
                )
            )
            events.append(
                Event(
                    raises,
                    Phase.RAISED,
                    now,
                    now,
                    sample.floor,
                    raised.text,
                    at_landing=new.place,
                    reason_code=raised.code,
                    reason_params=raised.params,
                )
            )
        return new, events

    def blind(self, state: FaultState, now: float) -> FaultState:
        """See `rule.Rule.blind`: a raised code stays raised (nothing is ever pending)."""
        return state


@dataclass(frozen=True, slots=True)
class PowerFailure(LatchRule):
    """POWER_FAILURE as a `rule.Rule`: ``mains_ok`` reads False, raised at once; cleared
    when it reads True."""

    event_type: ClassVar[EventType] = EventType.POWER_FAILURE
    cleared_reason: ClassVar[Reason] = coded("mains restored", "mains_restored")

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        mains = sample.mains_ok
        if old is IDLE and mains is not False:
            return old, NO_EVENTS  # nothing raised and mains not lost
        return judged(self, old, sample, now, mains is False, mains is True, 0.0)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded("mains lost", "mains_lost")


@dataclass(frozen=True, slots=True)
class ModeChange:
    """MODE_CHANGE as a `rule.Rule`: each mode other than NORMAL is its own occurrence,
    raised on the first sample that reads it. Not `latch.advance`: there is no hold, a
    mode is replaced rather than cleared (a CLEARED and a RAISED on one sample), and
    both carry the code of the mode entered."""

    def start(self) -> ModeState:
        """See `rule.Rule.start`."""
        return _MODE_START

    def step(
        self, state: ModeState, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[ModeState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        new_mode = sample.mode
        if new_mode is state.mode or new_mode is ServiceMode.UNKNOWN:
            return state, NO_EVENTS
        entered = MODE_CODES[new_mode]
        floor = sample.floor
        events: list[Event] = []
        if state.onset is not None:
            back = (
                coded("back to normal", "mode_normal")
                if new_mode is ServiceMode.NORMAL
                else coded(f"now {_MODE_NAMES[new_mode]}", "mode_now", mode=new_mode)
            )
            events.append(
                Event(
                    EventType.MODE_CHANGE,
                    Phase.CLEARED,
                    state.onset,
                    now,
                    floor,
                    back.text,
                    gb_code=entered,
                    at_landing=sample.at_landing,
                    reason_code=back.code,
                    reason_params=back.params,
                )
            )
        if new_mode is ServiceMode.NORMAL:
            return ModeState(None, new_mode), events
        entering = coded(_MODE_NAMES[new_mode], "mode_entered", mode=new_mode)
        events.append(
            Event(
                EventType.MODE_CHANGE,
                Phase.RAISED,
                now,
                now,
                floor,
                entering.text,
                gb_code=entered,
                at_landing=sample.at_landing,
                reason_code=entering.code,
                reason_params=entering.params,
            )
        )
        return ModeState(now, new_mode), events

    def blind(self, state: ModeState, now: float) -> ModeState:
        """See `rule.Rule.blind`: the last mode is kept (a changed mode is reported when
        seen)."""
        return state


@dataclass(frozen=True, slots=True)
class AlarmButton(LatchRule):
    """ALARM_BUTTON as a `rule.Rule`: ``alarm_button`` pressed for ``debounce_s``."""

    event_type: ClassVar[EventType] = EventType.ALARM_BUTTON
    cleared_reason: ClassVar[Reason] = coded("alarm button released", "alarm_button_released")
    debounce_s: float

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        pressed = sample.alarm_button
        if old is IDLE and pressed is not True:
            return old, NO_EVENTS  # nothing pending or raised and the button not pressed
        return judged(
            self, old, sample, now, pressed is True, pressed is False, self.debounce_s, since
        )

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"alarm button pressed for {self.debounce_s:g} s",
            "alarm_button_pressed",
            s=f"{self.debounce_s:g}",
        )


def _rules(config: ControllerConfig) -> NamedRules:
    return (
        ("fault", FaultCode(config)),
        ("power", PowerFailure()),
        ("mode", ModeChange()),
        ("alarm", AlarmButton(config.alarm_button_debounce_s)),
    )


def blind(state: ControllerState, now: float) -> ControllerState:
    """The controller link is down at ``now``: forget a pending alarm press; raised events
    stay raised and the last mode is kept (a changed mode is reported when seen). Emits
    nothing."""
    return blind_all(_rules(ControllerConfig()), state, now)


def rules(config: DetectionConfig) -> NamedRules:
    """The family's rules for a unit with ``config``, in the order they run."""
    return _rules(ControllerConfig.from_detection(config))
