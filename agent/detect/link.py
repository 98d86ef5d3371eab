"""CONTROLLER_LINK_LOST: no valid answer from a controller for ``link_lost_after_s``.

The unit is blind then, not faulty: while this event is raised no fault rule may fire from
the missing data (the agent tells the other detectors the unit is blind).

The silence is counted from the last valid answer, not from the first failed request: a
request that fails is only noticed after its timeout, and a silent slave is retried on a
back-off (1, 2, 4 ... poll periods, up to ``backoff_max_s``), so failures arrive late and
seldom. `step` takes each request outcome; `tick` is called on every poll cycle, whether
or not the slave had a turn, so the event is RAISED on the first cycle at which
``link_lost_after_s`` has passed since the last valid answer, whatever the back-off.
Both need at least one failed request since that answer: a poll loop that stalls (the
host is busy) is not a silent controller. Onset is the time of the last valid answer
(before any answer since start: the first failed request), so the event's onset is when
the controller fell silent; the reason states the silence and the failed requests.
CLEARED by the next valid answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase
from agent.detect.reasons import coded


@dataclass(frozen=True, slots=True)
class LinkState:
    """``last_ok``: time of the last valid answer (None before the first);
    ``failing_since``: the first failed request since then; ``failures`` how many;
    ``lost``: the RAISED was emitted, with onset ``silent_since``."""

    last_ok: float | None = None
    failing_since: float | None = None
    lost: bool = False
    failures: int = 0

    @property
    def silent_since(self) -> float | None:
        """When the controller fell silent: its last valid answer, else (no answer since
        start) the first failed request; None while it answers."""
        if self.failing_since is None:
            return None
        return self.last_ok if self.last_ok is not None else self.failing_since


def step(
    state: LinkState, ok: bool, now: float, lost_after_s: float
) -> tuple[LinkState, list[Event]]:
    """Advance the link watch by one request outcome at monotonic time ``now``: ``ok`` a
    valid answer, else a failed request. Returns the new state and the events decided (a
    CLEARED on the first answer after a loss, a RAISED once the silence reaches
    ``lost_after_s``)."""
    if ok:
        if state.lost:
            onset = state.silent_since
            back = coded("controller answers again", "link_back")
            cleared = Event(
                EventType.CONTROLLER_LINK_LOST,
                Phase.CLEARED,
                onset if onset is not None else now,
                now,
                reason=back.text,
                reason_code=back.code,
            )
            return LinkState(last_ok=now), [cleared]
        if state.last_ok == now and state.failing_since is None:
            return state, []
        return LinkState(last_ok=now), []
    failing = LinkState(
        state.last_ok,
        state.failing_since if state.failing_since is not None else now,
        state.lost,
        state.failures + 1,
    )
    return tick(failing, now, lost_after_s)


def tick(state: LinkState, now: float, lost_after_s: float) -> tuple[LinkState, list[Event]]:
    """The poll cycle at monotonic ``now`` ended: raise CONTROLLER_LINK_LOST if a request
    has failed and the controller has been silent for ``lost_after_s``. Returns the same
    state object when nothing changed."""
    since = state.silent_since
    if state.lost or since is None or now - since < lost_after_s:
        return state, []
    lost = coded(
        f"no valid answer for {now - since:.1f} s "
        f"({state.failures} failed request{'s' if state.failures != 1 else ''} since the "
        "last valid one)",
        "link_lost",
        s=f"{now - since:.1f}",
        n=state.failures,
    )
    raised = Event(
        EventType.CONTROLLER_LINK_LOST,
        Phase.RAISED,
        since,
        now,
        reason=lost.text,
        reason_code=lost.code,
        reason_params=lost.params,
    )
    return LinkState(state.last_ok, state.failing_since, True, state.failures), [raised]
