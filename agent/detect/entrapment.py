"""ENTRAPMENT (困人, a regional extension of GB/T 24476-2017): passengers shut in a stopped car.

Rule
    The car is *trapping* while, on one sample, all of these hold:

    - occupied: ``occupied`` is True; when the profile has no occupancy sensor
      (``occupied`` is None), ``load_percent`` above ``empty_load_percent`` (default 5 %);
    - stationary: ``moving`` is False; without a ``moving`` signal, ``speed_mm_s == 0``;
    - doors closed: ``door`` is CLOSED; when the profile has no door-state signals
      (``door`` is UNKNOWN), the door-lock circuit is made (``door_lock_closed``). A door
      that is opening, open or partly open is not closed, so "no door opening" is implied;
    - the service mode is one in which passengers ride unattended (see *Modes*).

    ENTRAPMENT is RAISED when the car has been trapping continuously for
    ``between_floors_s`` (T1, default 30 s) while not at a landing (outside the door zone
    or not levelled), or for ``at_landing_s`` (T2, default 60 s) at a landing; or at once
    when the alarm button has been held for ``alarm_debounce_s`` (default 1 s) while
    trapping. ``onset`` is the time of the first trapping sample, not the time the
    threshold passed; a passenger standing at a landing with the doors closed for less
    than T2 is not trapped.

    Both phases carry ``at_landing``, where the car stands (True level in the door zone,
    False between floors or off level, None without ``door_zone``): a regional platform
    codes an entrapment at floor level apart (Chongqing 93).

    It is CLEARED when the doors open (OPEN or OPENING) at a landing, which covers the
    car that moves on and levels at a landing with doors opening, or when the car is
    known to be empty. Nothing else clears it: a car that moves without opening its
    doors, a mode change or a link outage do not free anyone.

Modes
    Trapping counts in NORMAL, and in the automatic emergency modes FIRE_RETURN,
    EMERGENCY_POWER and EARTHQUAKE: each of those is meant to bring the car to a landing
    and open its doors, so an occupied car standing shut in one of them means the
    recovery failed, during a fire or a power cut, when rescue matters most. It never
    counts in INSPECTION (a mechanic drives the car), FIREFIGHTER (firefighters ride with
    the doors shut on purpose) or STOPPED (out of service; nobody rides). An UNKNOWN mode,
    which includes a profile without a mode signal, counts: on such a site a needless
    rescue call is cheaper than a missed entrapment.

Link outages
    `blind` forgets a pending onset without raising and keeps a raised entrapment raised.
    After the link returns, trapping must be seen for the full threshold again, with the
    onset at the first trapping sample after the outage.

Degradation without a signal
    - no ``occupied`` and no ``load_percent``: occupancy is undecidable, nothing is
      raised and nothing is cleared by emptiness; the agent reports ENTRAPMENT as
      undetectable for the profile (see ``REQUIRED_SIGNALS``);
    - no ``moving`` and no ``speed_mm_s``: stationarity is undecidable, nothing is raised;
    - no ``door`` and no ``door_lock_closed``: closure is undecidable, nothing is raised;
    - no ``door_zone``: the car's place is unknown, so the longer T2 applies everywhere
      (a slower alarm rather than false ones for people waiting at a landing), and doors
      opening anywhere clear the event;
    - no ``alarm_button``: only the timed rules raise;
    - no ``mode``: see *Modes*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.detect.config import DEFAULTS, DetectionConfig
from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import TIME_SLACK
from agent.detect.reasons import Reason, coded
from agent.detect.rule import NO_EVENTS, NamedRules
from agent.state import CarState, DoorState, ServiceMode

#: Modes in which an occupied, stopped, closed car counts as trapping (see the module doc).
ENTRAPMENT_MODES = frozenset(
    {
        ServiceMode.NORMAL,
        ServiceMode.FIRE_RETURN,
        ServiceMode.EMERGENCY_POWER,
        ServiceMode.EARTHQUAKE,
        ServiceMode.UNKNOWN,
    }
)

#: CarState fields the rule needs: one field out of each group must be readable.
REQUIRED_SIGNALS: tuple[frozenset[str], ...] = (
    frozenset({"occupied", "load_percent"}),
    frozenset({"moving", "speed_mm_s"}),
    frozenset({"door", "door_lock_closed"}),
)

_OPENING_DOORS = frozenset({DoorState.OPEN, DoorState.OPENING})


@dataclass(frozen=True, slots=True)
class EntrapmentConfig:
    """Thresholds of the ENTRAPMENT rule, in seconds and percent of rated load; the
    defaults are `DetectionConfig`'s."""

    between_floors_s: float = DEFAULTS.entrapment_between_floors_s
    at_landing_s: float = DEFAULTS.entrapment_at_landing_s
    alarm_debounce_s: float = DEFAULTS.entrapment_alarm_debounce_s
    empty_load_percent: float = DEFAULTS.entrapment_empty_load_percent

    @classmethod
    def from_detection(cls, config: DetectionConfig) -> EntrapmentConfig:
        """The ENTRAPMENT rule's view of a unit's thresholds."""
        return cls(
            between_floors_s=config.entrapment_between_floors_s,
            at_landing_s=config.entrapment_at_landing_s,
            alarm_debounce_s=config.entrapment_alarm_debounce_s,
            empty_load_percent=config.entrapment_empty_load_percent,
        )


@dataclass(frozen=True, slots=True)
class EntrapmentState:
    """Detector memory for one car.

    ``onset`` is the start of the pending (``raised`` False) or raised occurrence, or None
    when the car is not trapping. ``alarm_since`` is when the alarm button was first seen
    held during the current trapping spell. ``at_landing`` is where the raised car stands
    (`CarState.at_landing`), reported on both phases: a trapped car does not move.
    """

    onset: float | None = None
    raised: bool = False
    alarm_since: float | None = None
    at_landing: bool | None = None


_IDLE = EntrapmentState()


def occupancy(sample: CarState, empty_load_percent: float) -> bool | None:
    """Whether the car holds someone: True, False, or None when the profile cannot tell."""
    occupied = sample.occupied
    if occupied is not None:
        return occupied
    load = sample.load_percent
    if load is None:
        return None
    return load > empty_load_percent


def _stationary(sample: CarState) -> bool | None:
    moving = sample.moving
    if moving is not None:
        return not moving
    speed = sample.speed_mm_s
    if speed is None:
        return None
    return speed == 0


def _doors_shut(sample: CarState) -> bool | None:
    door = sample.door
    if door is DoorState.CLOSED:
        return True
    if door is DoorState.UNKNOWN:
        return sample.door_lock_closed
    return False


def _stopped_reason(at_landing: bool | None, limit: float) -> Reason:
    """Why an entrapment was raised by time: where the car stopped, and for how long."""
    s = f"{limit:g}"
    if at_landing is None:
        text = f"occupied car stopped (place unknown) with doors closed for {s} s"
        return coded(text, "entrapment_place_unknown", s=s)
    if at_landing:
        text = f"occupied car stopped at a landing with doors closed for {s} s"
        return coded(text, "entrapment_at_landing", s=s)
    text = f"occupied car stopped between floors with doors closed for {s} s"
    return coded(text, "entrapment_between_floors", s=s)


def _doors_opened_at_landing(sample: CarState) -> bool:
    if sample.at_landing is False:
        # Rescuers opening doors between floors do not free anyone until the car empties.
        return False
    door = sample.door
    if door is DoorState.UNKNOWN:
        return sample.door_lock_closed is False
    return door in _OPENING_DOORS


def step(
    state: EntrapmentState, sample: CarState, now: float, config: EntrapmentConfig
) -> tuple[EntrapmentState, list[Event]]:
    """Advance the ENTRAPMENT rule by one sample taken at monotonic time ``now``.

    Returns the new state (the same object when nothing changed) and the events decided
    on this sample: at most one RAISED or one CLEARED. ``now`` must not decrease between
    calls. Never raises for any CarState.
    """
    new, events = Entrapment(config).step(state, sample, now, None, False)
    return new, list(events)


def blind(state: EntrapmentState, now: float) -> EntrapmentState:
    """The controller link is down at ``now``: forget any pending onset, keep a raised one.

    Emits nothing: a link outage neither raises nor clears an entrapment.
    """
    if state.raised or state.onset is None:
        return state
    return _IDLE


@dataclass(frozen=True, slots=True)
class Entrapment:
    """ENTRAPMENT as a `rule.Rule` for the engine (it needs neither ``since`` nor
    ``power_out``: a person shut in is judged whatever the power). Not `latch.advance`:
    the hold depends on where the car stands (T1 or T2) and the alarm button raises
    before it."""

    config: EntrapmentConfig

    def start(self) -> EntrapmentState:
        """See `rule.Rule.start`."""
        return EntrapmentState()

    def step(
        self,
        state: EntrapmentState,
        sample: CarState,
        now: float,
        since: float | None,
        power_out: bool,
    ) -> tuple[EntrapmentState, Sequence[Event]]:
        """See `rule.Rule.step` and the module doc; ``config`` is this rule's."""
        config = self.config
        occupied = occupancy(sample, config.empty_load_percent)

        if state.raised:
            if occupied is False:
                reason = coded("car empty", "car_empty")
            elif _doors_opened_at_landing(sample):
                reason = coded("doors opened at a landing", "doors_opened_at_landing")
            else:
                return state, NO_EVENTS
            assert state.onset is not None  # raised always carries its onset
            cleared = Event(
                EventType.ENTRAPMENT,
                Phase.CLEARED,
                state.onset,
                now,
                sample.floor,
                reason.text,
                at_landing=state.at_landing,
                reason_code=reason.code,
                reason_params=reason.params,
            )
            return _IDLE, [cleared]

        trapping = (
            occupied is True
            and sample.mode in ENTRAPMENT_MODES
            and _stationary(sample) is True
            and _doors_shut(sample) is True
        )
        if not trapping:
            return _IDLE, NO_EVENTS

        onset = state.onset if state.onset is not None else now
        alarm_since = state.alarm_since
        if sample.alarm_button:
            if alarm_since is None:
                alarm_since = now
        else:
            alarm_since = None

        at_landing = sample.at_landing
        limit = config.between_floors_s if at_landing is False else config.at_landing_s
        if now - onset >= limit - TIME_SLACK:
            reason = _stopped_reason(at_landing, limit)
        elif alarm_since is not None and now - alarm_since >= config.alarm_debounce_s - TIME_SLACK:
            reason = coded(
                "alarm button pressed in an occupied car stopped with doors closed",
                "entrapment_alarm_button",
            )
        else:
            if onset == state.onset and alarm_since == state.alarm_since:
                return state, NO_EVENTS
            return EntrapmentState(onset, False, alarm_since), NO_EVENTS

        raised = Event(
            EventType.ENTRAPMENT,
            Phase.RAISED,
            onset,
            now,
            sample.floor,
            reason.text,
            at_landing=at_landing,
            reason_code=reason.code,
            reason_params=reason.params,
        )
        return EntrapmentState(onset, True, None, at_landing), [raised]

    def blind(self, state: EntrapmentState, now: float) -> EntrapmentState:
        """See `blind`."""
        return blind(state, now)


def rules(config: DetectionConfig) -> NamedRules:
    """The family's rules for a unit with ``config``, in the order they run."""
    return (("entrapment", Entrapment(EntrapmentConfig.from_detection(config))),)
