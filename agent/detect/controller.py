"""What the controller reports about itself: RESTART_PREVENTED (其他阻止再启动的故障, GB/T
24476-2017 code 8), POWER_FAILURE (停电, code 41), MODE_CHANGE (codes 40, 42-47) and
ALARM_BUTTON (报警按钮, code 90).

RESTART_PREVENTED (immediate)
    ``fault_code`` reads non-zero and is not one of ``mapped_codes`` (codes a profile maps
    to another event; none yet). RAISED on the first such sample with the code in the
    reason; a different non-zero code clears the occurrence and raises a new one, so
    every code is reported; CLEARED when the code returns to 0. Watched in every mode but
    INSPECTION: a fault is often what takes a controller out of service, so STOPPED must
    not hide it. Needs ``fault_code``.

POWER_FAILURE (immediate)
    ``mains_ok`` reads False (the agent runs on its UPS). CLEARED when it reads True.
    Watched in every mode. Needs ``mains_ok``.

MODE_CHANGE (event)
    RAISED when the car leaves NORMAL for another known mode, with the mode's name in the
    reason; a change between two non-normal modes clears the occurrence and raises one for
    the new mode; CLEARED when the car is back in NORMAL. The first sample after start in
    a non-normal mode raises too (a car found out of service is worth reporting); a mode
    changed during a link outage is reported when the link returns. UNKNOWN (no mode
    signal, or a value the map does not know) neither raises nor clears. Needs ``mode``.

ALARM_BUTTON (debounce 1 s, ``alarm_button_debounce_s``)
    ``alarm_button`` pressed for the debounce; onset is the first pressed sample. CLEARED
    when released. Watched in every mode: a person is pressing it. Needs ``alarm_button``.

Alarms and power failures are never de-duplicated or capped. `blind` forgets a pending
alarm press and keeps raised events.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import IDLE, INSPECTION_ONLY, Latch, advance, event, forget_pending
from agent.state import CarState, ServiceMode

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
    """Thresholds of the controller rules, and the fault codes handled elsewhere."""

    alarm_button_debounce_s: float = 1.0
    mapped_codes: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Detector memory: ``fault_onset``/``fault_code`` of the raised RESTART_PREVENTED,
    ``mode_onset``/``mode`` of the raised MODE_CHANGE."""

    fault_onset: float | None = None
    fault_code: int = 0
    power: Latch = IDLE
    mode_onset: float | None = None
    mode: ServiceMode = ServiceMode.NORMAL
    alarm: Latch = IDLE


def step(
    state: ControllerState, sample: CarState, now: float, config: ControllerConfig
) -> tuple[ControllerState, list[Event]]:
    """Advance the controller rules by one sample taken at monotonic time ``now``.

    Returns the new state (the same object when nothing changed) and the events decided
    on this sample: at most a CLEARED and a RAISED per rule. ``now`` must not decrease.
    Never raises.
    """
    events: list[Event] = []
    floor = sample.floor

    fault_onset, fault_code = state.fault_onset, state.fault_code
    code = sample.fault_code
    if code is not None:
        blocking = code if code != 0 and code not in config.mapped_codes else 0
        if fault_onset is not None and blocking != fault_code:
            reason = "fault code cleared" if blocking == 0 else f"fault code now {blocking}"
            events.append(
                Event(EventType.RESTART_PREVENTED, Phase.CLEARED, fault_onset, now, floor, reason)
            )
            fault_onset, fault_code = None, 0
        if fault_onset is None and blocking != 0 and sample.mode not in INSPECTION_ONLY:
            fault_onset, fault_code = now, blocking
            events.append(
                Event(
                    EventType.RESTART_PREVENTED,
                    Phase.RAISED,
                    now,
                    now,
                    floor,
                    f"controller fault code {blocking}",
                )
            )

    old = state.power
    mains = sample.mains_ok
    power, phase = advance(old, mains is False, mains is True, now, 0.0)
    if phase is not None:
        reason = "mains lost" if phase is Phase.RAISED else "mains restored"
        events.append(event(EventType.POWER_FAILURE, phase, old, power, sample, now, reason))

    mode_onset, mode = state.mode_onset, state.mode
    new_mode = sample.mode
    if new_mode is not ServiceMode.UNKNOWN and new_mode is not mode:
        if mode_onset is not None:
            events.append(
                Event(
                    EventType.MODE_CHANGE,
                    Phase.CLEARED,
                    mode_onset,
                    now,
                    floor,
                    "back to normal"
                    if new_mode is ServiceMode.NORMAL
                    else f"now {_MODE_NAMES[new_mode]}",
                )
            )
            mode_onset = None
        mode = new_mode
        if new_mode is not ServiceMode.NORMAL:
            mode_onset = now
            events.append(
                Event(EventType.MODE_CHANGE, Phase.RAISED, now, now, floor, _MODE_NAMES[new_mode])
            )

    old = state.alarm
    alarm, phase = advance(
        old,
        sample.alarm_button is True,
        sample.alarm_button is False,
        now,
        config.alarm_button_debounce_s,
    )
    if phase is not None:
        reason = (
            f"alarm button pressed for {config.alarm_button_debounce_s:g} s"
            if phase is Phase.RAISED
            else "alarm button released"
        )
        events.append(event(EventType.ALARM_BUTTON, phase, old, alarm, sample, now, reason))

    if (
        fault_onset == state.fault_onset
        and fault_code == state.fault_code
        and power is state.power
        and mode_onset == state.mode_onset
        and mode is state.mode
        and alarm is state.alarm
    ):
        return state, events
    return ControllerState(fault_onset, fault_code, power, mode_onset, mode, alarm), events


def blind(state: ControllerState, now: float) -> ControllerState:
    """The controller link is down at ``now``: forget a pending alarm press; raised events
    stay raised and the last mode is kept (a changed mode is reported when seen). Emits
    nothing."""
    alarm = forget_pending(state.alarm)
    if alarm is state.alarm:
        return state
    return ControllerState(
        state.fault_onset, state.fault_code, state.power, state.mode_onset, state.mode, alarm
    )
