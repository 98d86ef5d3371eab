"""Profile model: a register map as validated, frozen data.

A profile names, per signal (a `CarState` field name), where its value lives: a holding or
input register (optionally one bit of it), a coil or a discrete input, with its type,
scale, word order, declared valid range and polling rate. The full format is documented
in agent/profiles/template.toml, which is itself a valid profile. `agent.decode.parser`
loads and validates a profile into these types; `agent.decode.decoder` decodes samples
with it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.bus.plan import CostModel, PollPlan, Rate, Span, Table, plan_polls
from agent.state import ServiceMode

if TYPE_CHECKING:
    from agent.decode.decoder import Decoder

#: Raw values read from one slave, keyed by (table, address); bits are 0 or 1.
Values = Mapping[tuple[Table, int], int]


class ValueType(enum.Enum):
    """How the raw item(s) become a number."""

    BOOL = "bool"
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"

    @property
    def words(self) -> int:
        """Registers the value spans."""
        return 2 if self in (ValueType.UINT32, ValueType.INT32) else 1


@dataclass(frozen=True, slots=True)
class Point:
    """Where one raw value lives and how to read it."""

    table: Table
    address: int
    type: ValueType = ValueType.UINT16
    bit: int | None = None
    invert: bool = False
    scale: float = 1.0
    word_order: str = "big"
    valid: tuple[float, float] | None = None
    rate: Rate = Rate.FAST

    @property
    def span(self) -> Span:
        """The items a read must cover for this point."""
        return Span(self.table, self.address, self.type.words, self.rate)

    def raw(self, values: Values) -> int | None:
        """The point's integer value, or None when its items were not read this time."""
        first = values.get((self.table, self.address))
        if first is None:
            return None
        if self.table.is_bits:
            return int(bool(first) != self.invert)
        if self.bit is not None:
            return int(bool(first >> self.bit & 1) != self.invert)
        if self.type.words == 1:
            if self.type is ValueType.INT16 and first & 0x8000:
                return first - 0x10000
            return first
        second = values.get((self.table, self.address + 1))
        if second is None:
            return None
        high, low = (first, second) if self.word_order == "big" else (second, first)
        value = high << 16 | low
        if self.type is ValueType.INT32 and value & 0x8000_0000:
            value -= 0x1_0000_0000
        return value


@dataclass(frozen=True, slots=True)
class ValueSignal:
    """A bool or integer CarState field read from one point."""

    name: str
    point: Point


@dataclass(frozen=True, slots=True)
class ModeSignal:
    """``mode``: a register whose values map to service modes."""

    point: Point
    values: tuple[tuple[int, ServiceMode], ...]
    name: str = "mode"


@dataclass(frozen=True, slots=True)
class DirectionSignal:
    """``direction``: an up and a down bit."""

    up: Point
    down: Point
    name: str = "direction"


@dataclass(frozen=True, slots=True)
class DoorSignal:
    """``door``: limit switches and operator bits, by precedence open, closed, opening,
    closing; neither limit made and the operator idle is PARTLY_OPEN."""

    parts: tuple[tuple[str, Point], ...]
    name: str = "door"


Signal = ValueSignal | ModeSignal | DirectionSignal | DoorSignal


@dataclass(frozen=True, slots=True)
class Expect:
    """A register that must hold ``value`` for the block to be what the profile says."""

    point: Point
    value: int
    what: str


@dataclass(frozen=True, slots=True)
class IdentityString:
    """An ASCII string (two characters per register, high byte first)."""

    name: str
    table: Table
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class Profile:
    """One register map, validated."""

    name: str
    source: str
    description: str
    vendor: str
    signals: tuple[Signal, ...]
    expects: tuple[Expect, ...] = ()
    identity: tuple[IdentityString, ...] = ()
    fault_events: tuple[tuple[int, str], ...] = ()
    # Compiled on the first decode, once per profile rather than per sample: see
    # `agent.decode.decoder.Decoder`.
    _decoder: Decoder | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def signal_names(self) -> frozenset[str]:
        """The CarState fields this profile provides."""
        return frozenset(s.name for s in self.signals)

    def spans(self) -> list[Span]:
        """Every item a poll of this profile must read, with its rate."""
        spans = [e.point.span for e in self.expects]
        for signal in self.signals:
            spans.extend(p.span for p in _points(signal))
        spans.extend(Span(i.table, i.address, i.count, Rate.IDENTITY) for i in self.identity)
        return spans

    def plan(self, cost: CostModel) -> PollPlan:
        """The coalesced reads of one slave speaking this profile."""
        return plan_polls(self.spans(), cost)

    def fault_event(self, code: int) -> str | None:
        """The taxonomy event name a controller fault code maps to, if the profile says."""
        return dict(self.fault_events).get(code)


def _points(signal: Signal) -> list[Point]:
    if isinstance(signal, ValueSignal | ModeSignal):
        return [signal.point]
    if isinstance(signal, DirectionSignal):
        return [signal.up, signal.down]
    return [p for _, p in signal.parts]
