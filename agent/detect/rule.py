"""The one shape every detection rule has for the engine: `Rule`.

A rule decides one event type (ENTRAPMENT, DOOR_CLOSE_FAILURE, ...; the controller's
fault-code rule the events its profile maps codes to). It owns a piece of detector
memory (its state, a frozen value) and advances it by one sample at a time.
`UnitDetectors` (agent/detect/engine.py) keeps one state per rule and loops over its rules
for every sample and every link outage; it knows no rule by name. A rule whose decision
depends on another rule's memory (DOOR_HELD_OPEN is not raised while a close attempt is
under way or a re-opening loop is raised) keeps its own copy of that memory, advanced by
the same code, so that every rule stays one state and one step.

Each family module (entrapment, doors, motion, circuits, controller) lists its rules in
``rules(config)`` and keeps a family ``step``/``blind`` over a family state (one field per
rule, `step_all`) for the rules' unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from agent.detect.events import Event
from agent.state import CarState

S = TypeVar("S")
F = TypeVar("F")

#: The events of a step that decides none: shared, so an idle step allocates nothing.
NO_EVENTS: tuple[Event, ...] = ()


class Rule(Protocol[S]):
    """A detection rule over detector memory of type ``S``; pure, like everything here."""

    def start(self) -> S:
        """The memory of a car nothing is known of yet."""
        ...

    def step(
        self, state: S, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[S, Sequence[Event]]:
        """``state`` advanced by ``sample`` at ``now``, and the events decided.

        ``since`` is the previous sample's time, which holds count from
        (`latch.advance`); ``power_out`` whether a mains failure explains the lift-fault
        rules (`latch.POWER_EXPLAINED`). Returns the same state object when nothing
        changed, and `NO_EVENTS` (or another empty sequence) when nothing is decided.
        Never raises for any CarState.
        """
        ...

    def blind(self, state: S, now: float) -> S:
        """``state`` after the controller link was lost at ``now``: pending onsets
        forgotten, raised events kept. Emits nothing."""
        ...


#: A family's rules, each with the name of its field in the family's state.
NamedRules = tuple[tuple[str, Rule[Any]], ...]


def step_all(
    rules: NamedRules,
    state: F,
    sample: CarState,
    now: float,
    since: float | None,
    power_out: bool,
) -> tuple[F, list[Event]]:
    """A family state (a frozen dataclass with one field per rule of ``rules``) advanced
    by every rule in order, as the engine does, and the events in that order. Returns
    the same state object when no rule changed its memory."""
    changed: dict[str, Any] = {}
    events: list[Event] = []
    for name, rule in rules:
        old = getattr(state, name)
        new, more = rule.step(old, sample, now, since, power_out)
        events.extend(more)
        if new is not old:
            changed[name] = new
    return (replace(state, **changed) if changed else state), events  # type: ignore[type-var]


def blind_all(rules: NamedRules, state: F, now: float) -> F:
    """A family state after a link outage at ``now``: every rule's `Rule.blind`."""
    changed: dict[str, Any] = {}
    for name, rule in rules:
        old = getattr(state, name)
        new = rule.blind(old, now)
        if new is not old:
            changed[name] = new
    return replace(state, **changed) if changed else state  # type: ignore[type-var]
