"""`latch.judged`, the one step of every rule whose memory is one `Latch`: it must decide
exactly what `latch.advance` and `latch.decided` decided together, and return the same
latch object when nothing changed (a rule's state is replaced only when it is a new
object)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import IDLE, advance, decided, judged
from agent.detect.reasons import Reason, coded
from agent.state import CarState

RAISED_REASON = coded("raised for the test", "test_raised")
CLEARED_REASON = coded("cleared for the test", "test_cleared")


@dataclass
class CountingRule:
    """A `latch.Reasoned` that counts how often it is asked why it raised."""

    hold_s: float
    event_type: EventType = EventType.ALARM_BUTTON
    cleared_reason: Reason = CLEARED_REASON
    asked: list[CarState] = field(default_factory=list)

    def raised_reason(self, sample: CarState) -> Reason:
        """The fixed raised reason; remembers the sample it was asked on."""
        self.asked.append(sample)
        return RAISED_REASON


def _random_sample(rng: random.Random, t: float) -> CarState:
    # door_zone and levelled make at_landing True, False or None.
    return CarState(
        t=t,
        floor=rng.choice([None, 0, 3]),
        door_zone=rng.choice([None, True, False]),
        levelled=rng.choice([None, True, False]),
    )


def _as_compared(events: Sequence[Event]) -> list[tuple[object, ...]]:
    # The reason's code and parameters are not part of an Event's equality.
    return [(e, e.reason_code, e.reason_params) for e in events]


def test_judged_decides_what_advance_and_decided_decided() -> None:
    rng = random.Random(20261207)
    phases = {Phase.RAISED: 0, Phase.CLEARED: 0}
    for _ in range(400):
        hold_s = rng.choice([0.0, 0.1, 0.15, 1.0, 2.0])
        rule = CountingRule(hold_s)
        old, ref, now = IDLE, IDLE, 0.0
        for _ in range(40):
            since = rng.choice([None, now])
            now += rng.choice([0.0, 0.05, 0.1, 0.5, 1.0])
            sample = _random_sample(rng, now)
            active, clear = rng.random() < 0.6, rng.random() < 0.3
            new, events = judged(rule, old, sample, now, active, clear, hold_s, since)
            # What the rules wrote before `judged`. The place is passed on every sample, as
            # OVERTRAVEL_* did (`advance` keeps it only where an occurrence starts), so this
            # also shows that `judged` reading it only there changes nothing.
            ref_new, phase = advance(ref, active, clear, now, hold_s, sample.at_landing, since)
            ref_events: Sequence[Event] = []
            if phase is not None:
                ref_events = decided(
                    rule.event_type, phase, ref, ref_new, sample, now, RAISED_REASON, CLEARED_REASON
                )
            assert new == ref_new
            assert (new is old) == (ref_new is ref), "a new object only when the latch changed"
            assert _as_compared(events) == _as_compared(ref_events)
            for e in events:
                phases[e.phase] += 1
            old, ref = new, ref_new
    # The walk reached both phases often, so the comparison covered them.
    assert phases[Phase.RAISED] > 100 and phases[Phase.CLEARED] > 100, phases


def test_the_raised_reason_is_asked_only_on_the_raising_sample() -> None:
    rule = CountingRule(hold_s=1.0)
    base = CarState(t=0.0, door_zone=False, levelled=False)
    old = IDLE
    raised_on = None
    for i in range(6):
        sample = CarState(t=i * 0.5, door_zone=False, levelled=False)
        old, events = judged(rule, old, sample, sample.t, True, False, 1.0, sample.t - 0.5)
        if events:
            raised_on = sample
    assert raised_on is not None and raised_on.t == 0.5  # held 1 s from the clean sample
    assert rule.asked == [raised_on]
    old, events = judged(rule, old, base, 3.5, False, True, 1.0)
    assert [e.phase for e in events] == [Phase.CLEARED]
    assert events[0].reason == CLEARED_REASON.text
    assert rule.asked == [raised_on], "clearing does not ask why it raised"
