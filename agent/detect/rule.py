"""The one shape every detection rule has for the engine: `Rule`.

A rule owns a piece of detector memory (its state, a frozen value) and advances it by one
sample at a time. `UnitDetectors` (agent/detect/engine.py) keeps one state per rule and
loops over its rules for every sample and every link outage; it knows no rule by name.
Each family module (entrapment, doors, motion, circuits, controller) offers its rules as
one `Rule` over the family's state, because those rules share what they derive from a
sample (running, closed and locked, the door zone) and their state is one value; inside
the family each rule is its own function.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from agent.detect.events import Event
from agent.state import CarState

S = TypeVar("S")


class Rule(Protocol[S]):
    """A detection rule over detector memory of type ``S``; pure, like everything here."""

    def start(self) -> S:
        """The memory of a car nothing is known of yet."""
        ...

    def step(
        self, state: S, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[S, list[Event]]:
        """``state`` advanced by ``sample`` at ``now``, and the events decided.

        ``since`` is the previous sample's time, which holds count from
        (`latch.advance`); ``power_out`` whether a mains failure explains the lift-fault
        rules (`latch.POWER_EXPLAINED`). Returns the same state object when nothing
        changed. Never raises for any CarState.
        """
        ...

    def blind(self, state: S, now: float) -> S:
        """``state`` after the controller link was lost at ``now``: pending onsets
        forgotten, raised events kept. Emits nothing."""
        ...
