"""CONTROLLER_LINK_LOST: no valid answer from a controller for ``link_lost_after_s``.

The unit is blind then, not faulty: while this event is raised no fault rule may fire from
the missing data (the agent tells the other detectors the unit is blind). Onset is the
first failed request after the last good answer; cleared by the next good answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase


@dataclass(frozen=True, slots=True)
class LinkState:
    last_ok: float | None = None
    failing_since: float | None = None
    lost: bool = False


def step(
    state: LinkState, ok: bool, now: float, lost_after_s: float
) -> tuple[LinkState, list[Event]]:
    """Advance the link watch by one request outcome at monotonic time ``now``."""
    if ok:
        if state.lost:
            onset = state.failing_since if state.failing_since is not None else now
            cleared = Event(
                EventType.CONTROLLER_LINK_LOST,
                Phase.CLEARED,
                onset,
                now,
                reason="controller answers again",
            )
            return LinkState(last_ok=now), [cleared]
        return LinkState(last_ok=now), []
    since = state.failing_since if state.failing_since is not None else now
    if not state.lost and now - since >= lost_after_s:
        raised = Event(
            EventType.CONTROLLER_LINK_LOST,
            Phase.RAISED,
            since,
            now,
            reason=f"no valid answer for {now - since:.1f} s",
        )
        return LinkState(state.last_ok, since, True), [raised]
    return LinkState(state.last_ok, since, state.lost), []
