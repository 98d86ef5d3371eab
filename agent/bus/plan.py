"""Poll planning: the registers a profile needs, coalesced into the fewest Modbus reads.

Pure: no I/O and no clock. The input is a set of `Span`s (a table, a first address, a
count and how often it is needed); the output is a `PollPlan` whose reads respect the
Modbus limits (125 registers, 2000 bits per read).

Cost model (documented because it decides every bridge). Each read costs a fixed
overhead plus its data, counted in bytes on the wire: the 8-byte request, the 5-byte
response header and CRC and the two silent intervals of 3.5 characters, 20 characters
in all (`CostModel.request_overhead_bytes`), plus 2 bytes per register or 1 per 8 bits.
Two neighbouring spans are read as one when the merged read costs no more than the two
separate ones, so a gap of up to 10 unused registers (or 160 bits) is bridged. For Modbus
TCP, where a read is a network round trip, a larger overhead bridges wider gaps.

Rates: ``FAST`` spans (status bits, floor, speed, door, circuits) are read every cycle.
``SLOW`` spans (counters) are read every few seconds: on such a cycle the fast and slow
spans are coalesced together (`PollPlan.slow_cycle`), which is cheaper than a separate
read when they are neighbours, as in the reference map. ``IDENTITY`` spans (firmware,
model, serial) are read on their own at start, hourly and after each link recovery.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass


class Table(enum.Enum):
    """The four Modbus data tables, each with the read function code that serves it."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    # Raw values are keyed by (Table, address), so every register of every sample hashes
    # a Table, and Enum's own __hash__ is Python code. Members are singletons that compare
    # by identity, so identity hashing is equivalent and runs in C.
    __hash__ = object.__hash__

    @property
    def function_code(self) -> int:
        """The Modbus *read* function code for this table (1, 2, 3 or 4)."""
        return _FUNCTION_CODES[self]

    @property
    def is_bits(self) -> bool:
        """True for coils and discrete inputs (read as bits, not 16-bit registers)."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def max_count(self) -> int:
        """The most items one read may ask for (Modbus application protocol limits)."""
        return MAX_BITS if self.is_bits else MAX_REGISTERS


_FUNCTION_CODES = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}
MAX_REGISTERS = 125
MAX_BITS = 2000


class Rate(enum.Enum):
    """How often a span is needed."""

    FAST = "fast"
    SLOW = "slow"
    IDENTITY = "identity"


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Items ``address .. address + count - 1`` of ``table``, needed at ``rate``."""

    table: Table
    address: int
    count: int
    rate: Rate = Rate.FAST

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class Read:
    """One read request: ``count`` items of ``table`` from ``address``."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + self.count

    def __str__(self) -> str:
        return f"{self.table.value} {self.address}..{self.end - 1}"


@dataclass(frozen=True, slots=True)
class CostModel:
    """Bytes on the wire: a fixed overhead per read plus the data it carries."""

    request_overhead_bytes: float = 20.0

    def cost(self, table: Table, count: int) -> float:
        """The cost of one read of ``count`` items of ``table``."""
        data = math.ceil(count / 8) if table.is_bits else 2 * count
        return self.request_overhead_bytes + data


RTU_COST = CostModel(20.0)
# On TCP a read is a round trip through a gateway, worth far more than its bytes.
TCP_COST = CostModel(200.0)


@dataclass(frozen=True, slots=True)
class PollPlan:
    """The reads of one slave: every cycle, on slow cycles, and for identity."""

    fast: tuple[Read, ...]
    slow_cycle: tuple[Read, ...]
    identity: tuple[Read, ...]


class PlanError(ValueError):
    """A span that no Modbus read can serve (negative address, past 65535, empty)."""


def coalesce(spans: Iterable[Span], cost: CostModel = RTU_COST) -> tuple[Read, ...]:
    """The fewest-cost reads covering ``spans``, each within its table's Modbus limit.

    Spans are merged left to right per table; a gap is bridged when one read costs no
    more than two (see the module docstring). Overlapping and duplicate spans are fine.
    """
    reads: list[Read] = []
    by_table: dict[Table, list[Span]] = {}
    for span in spans:
        if span.count < 1 or span.address < 0 or span.end > 0x10000:
            raise PlanError(f"{span.table.value} {span.address} x{span.count} is not readable")
        if span.count > span.table.max_count:
            raise PlanError(
                f"{span.table.value} {span.address} x{span.count} exceeds the "
                f"{span.table.max_count}-item limit of one read"
            )
        by_table.setdefault(span.table, []).append(span)
    for table in Table:
        start = end = -1
        for span in sorted(by_table.get(table, ())):
            if start < 0:
                start, end = span.address, span.end
                continue
            merged_end = max(end, span.end)
            fits = merged_end - start <= table.max_count
            overlapping = span.address <= end
            cheaper = cost.cost(table, merged_end - start) <= cost.cost(
                table, end - start
            ) + cost.cost(table, span.count)
            if fits and (overlapping or cheaper):
                end = merged_end
            else:
                reads.append(Read(table, start, end - start))
                start, end = span.address, span.end
        if start >= 0:
            reads.append(Read(table, start, end - start))
    return tuple(reads)


def plan_polls(spans: Iterable[Span], cost: CostModel = RTU_COST) -> PollPlan:
    """Split ``spans`` by rate and coalesce each cycle kind (see the module docstring)."""
    spans = list(spans)
    fast = [s for s in spans if s.rate is Rate.FAST]
    slow = [s for s in spans if s.rate is Rate.SLOW]
    identity = [s for s in spans if s.rate is Rate.IDENTITY]
    return PollPlan(
        fast=coalesce(fast, cost),
        slow_cycle=coalesce(fast + slow, cost),
        identity=coalesce(identity, cost),
    )
