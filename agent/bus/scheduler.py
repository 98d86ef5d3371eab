"""One scheduler per physical bus: the slaves on it polled in turn, fairly, forever.

`BusPolicy` is the pure part (explicit clock, no I/O): which slave gets a turn in a cycle
and which reads the turn holds. Every healthy slave gets exactly one turn per cycle, in
an order that rotates so none is always last. A slave whose turn fails is backed off:
after k failed turns in a row it waits min(backoff_max_s, period x 2^(k-1)) before it is
probed again, so a dead controller costs the line at most one timeout per back-off
interval instead of one per cycle, and cannot starve the others. Identity strings are
read at start, every identity_poll_s and after every recovery; slow spans (counters) on
one cycle every slow_poll_s, staggered across slaves.

`BusScheduler` runs the policy over a `ModbusLink`: it keeps the configured silence
before each request, counts each outcome in the slave's `LinkStats`, and hands raw values
with the monotonic time of the read to a `PollSink`, then tells the sink when the cycle's
turns are done. Nothing raised by a read or by the sink ends the loop: the only way out
is cancellation (a sink may raise `CancelledError` to stop it). A sink that raises is
logged with its traceback on the first failure and then at most every
`SINK_FAILURE_LOG_S` with the count since (the sink itself counts and reports its
failures; see `agent.app`), so a sink failing on every sample cannot flood the log.

The silence (RTU's 3.5 characters, 1.75 ms above 19200 baud) is counted from the last
byte the link received, which is never before the frame ended on the wire: the time the
answer took to reach the scheduler and the sink's work on it already count toward it,
and only the rest is waited, on a `FineTimer` that wakes within tens of microseconds of
its deadline instead of asyncio's whole milliseconds rounded up. It is never shortened.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.bus.health import LinkStats
from agent.bus.link import LinkError, LinkFault, ModbusLink
from agent.bus.plan import PollPlan, Read, Table
from agent.bus.timer import FineTimer

log = logging.getLogger(__name__)

SINK_FAILURE_LOG_S = 30.0

#: Raw items read in one turn, keyed by (table, address); bits are 0 or 1.
RawValues = dict[tuple[Table, int], int]


class TurnKind(enum.Enum):
    """What a turn reads besides the fast spans."""

    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True, slots=True)
class Station:
    """One slave on the bus, its poll plan and its link statistics."""

    slave: int
    plan: PollPlan
    stats: LinkStats = field(default_factory=LinkStats, compare=False)


@dataclass(frozen=True, slots=True)
class Turn:
    """The reads one slave gets in one cycle."""

    slave: int
    identity: tuple[Read, ...]
    reads: tuple[Read, ...]
    kind: TurnKind


@dataclass(slots=True)
class _Schedule:
    failures: int = 0
    next_try: float = float("-inf")
    next_slow: float = float("-inf")
    next_identity: float = float("-inf")
    first_slow_after_s: float = 0.0


class BusPolicy:
    """Decides the turns of each cycle and backs off slaves that stop answering."""

    def __init__(
        self,
        stations: Sequence[Station],
        *,
        period_s: float,
        slow_poll_s: float,
        identity_poll_s: float,
        backoff_max_s: float,
    ) -> None:
        self._stations = {s.slave: s for s in stations}
        self._order = [s.slave for s in stations]
        self._period_s = period_s
        self._slow_poll_s = slow_poll_s
        self._identity_poll_s = identity_poll_s
        self._backoff_max_s = backoff_max_s
        # Everything is read on the first turn; after it, slow turns are staggered so
        # that the slaves do not all read their counters in the same cycle.
        n = max(len(stations), 1)
        self._state = {
            s.slave: _Schedule(first_slow_after_s=slow_poll_s * (i + 1) / n)
            for i, s in enumerate(stations)
        }
        self._rotation = 0

    def turns(self, now: float) -> list[Turn]:
        """The turns of the cycle starting at ``now``: one per slave that is due."""
        order = self._order[self._rotation :] + self._order[: self._rotation]
        self._rotation = (self._rotation + 1) % max(len(self._order), 1)
        turns = []
        for slave in order:
            state = self._state[slave]
            if now < state.next_try:
                continue
            plan = self._stations[slave].plan
            identity = plan.identity if now >= state.next_identity else ()
            slow = now >= state.next_slow and state.failures == 0
            reads = plan.slow_cycle if slow else plan.fast
            turns.append(Turn(slave, identity, reads, TurnKind.SLOW if slow else TurnKind.FAST))
        return turns

    def identity_read(self, slave: int, now: float) -> None:
        """The identity reads of ``slave`` succeeded at ``now``."""
        self._state[slave].next_identity = now + self._identity_poll_s

    def turn_done(self, turn: Turn, ok: bool, now: float) -> None:
        """Record how ``turn`` ended at ``now``: back off on failure, reset on success."""
        state = self._state[turn.slave]
        if ok:
            if state.failures:
                # Recovered: a rebooted or swapped controller may have new firmware.
                state.next_identity = float("-inf")
            state.failures = 0
            state.next_try = float("-inf")
            if turn.kind is TurnKind.SLOW:
                if state.next_slow == float("-inf"):
                    state.next_slow = now + state.first_slow_after_s
                else:
                    # From the deadline, not from now: cycles must not drift the cadence.
                    state.next_slow += self._slow_poll_s
                    if state.next_slow < now:  # after an outage: restart the cadence
                        state.next_slow = now + self._slow_poll_s
            return
        state.failures += 1
        delay = min(self._backoff_max_s, self._period_s * 2 ** (state.failures - 1))
        state.next_try = now + delay

    def backed_off(self, slave: int, now: float) -> bool:
        """True while ``slave`` is skipped for failing."""
        return now < self._state[slave].next_try


class PollSink(Protocol):
    """Where the scheduler delivers what it read (raw values, never decoded)."""

    def on_identity(self, slave: int, values: RawValues, t: float) -> None:
        """A good read of the identity strings of ``slave`` at monotonic ``t``."""

    def on_sample(self, slave: int, values: RawValues, kind: TurnKind, t: float) -> None:
        """A good read of the fast (and on slow turns, slow) spans of ``slave``."""

    def on_failure(self, slave: int, fault: LinkFault, t: float) -> None:
        """A request to ``slave`` that got no usable answer at monotonic ``t``."""

    def on_cycle_end(self, t: float) -> None:
        """Every due slave has had its turn of this cycle, at monotonic ``t``."""


class BusScheduler:
    """Polls the stations of one bus through one link until cancelled."""

    def __init__(
        self,
        name: str,
        link: ModbusLink,
        stations: Sequence[Station],
        sink: PollSink,
        clock: Callable[[], float],
        *,
        period_s: float,
        frame_gap_s: float = 0.0,
        slow_poll_s: float = 5.0,
        identity_poll_s: float = 3600.0,
        backoff_max_s: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._link = link
        self.stations = {s.slave: s for s in stations}
        self._sink = sink
        self._clock = clock
        self._period_s = period_s
        self._frame_gap_s = frame_gap_s
        # The default sleep is this bus's own timerfd (see `FineTimer`); tests pass a
        # fake clock's sleep instead.
        self._timer = FineTimer()
        self._sleep = sleep if sleep is not None else self._timer.sleep
        self.policy = BusPolicy(
            stations,
            period_s=period_s,
            slow_poll_s=slow_poll_s,
            identity_poll_s=identity_poll_s,
            backoff_max_s=backoff_max_s,
        )
        self._last_frame_end = float("-inf")
        self.sink_failures = 0
        self._sink_failures_unlogged = 0
        self._sink_log_at = float("-inf")

    async def run(self) -> None:
        """Poll until cancelled; failures go to the sink and the stats, never up."""
        next_cycle = self._clock()
        try:
            while True:
                await self.cycle()
                next_cycle += self._period_s
                delay = next_cycle - self._clock()
                if delay < 0:
                    # Behind schedule: start the next cycle now rather than bursting to
                    # catch up, which would only crowd the bus.
                    next_cycle = self._clock()
                    delay = 0.0
                await self._sleep(delay)
        finally:
            self.close()

    def close(self) -> None:
        """Release the link and the timer (`run` does when it ends); a later cycle
        reopens them."""
        self._link.close()
        self._timer.close()

    async def cycle(self) -> None:
        """One cycle: every due slave gets its turn, then the sink hears the cycle ended."""
        for turn in self.policy.turns(self._clock()):
            try:
                ok = await self._turn(turn)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a sink must not end the polling of the bus
                log.exception("bus %s: slave %d: turn failed", self.name, turn.slave)
                ok = False
            self.policy.turn_done(turn, ok, self._clock())
        self._deliver(self._sink.on_cycle_end, self._clock())

    async def _turn(self, turn: Turn) -> bool:
        if turn.identity:
            values = await self._read_all(turn.slave, turn.identity)
            if values is None:
                return False
            now = self._clock()
            self.policy.identity_read(turn.slave, now)
            self._deliver(self._sink.on_identity, turn.slave, values, now)
        values = await self._read_all(turn.slave, turn.reads)
        if values is None:
            return False
        now = self._clock()
        self._deliver(self._sink.on_sample, turn.slave, values, turn.kind, now)
        return True

    def _deliver(self, call: Callable[..., None], *args: object) -> None:
        try:
            call(*args)
        except Exception:
            self.sink_failures += 1
            now = self._clock()
            if now < self._sink_log_at:
                self._sink_failures_unlogged += 1
                return
            self._sink_log_at = now + SINK_FAILURE_LOG_S
            log.exception(
                "bus %s: sink failed (%d more failure(s) since the last report)",
                self.name,
                self._sink_failures_unlogged,
            )
            self._sink_failures_unlogged = 0

    async def _read_all(self, slave: int, reads: Sequence[Read]) -> RawValues | None:
        values: RawValues = {}
        stats = self.stations[slave].stats
        for read in reads:
            if self._frame_gap_s > 0:
                await self._keep_silence()
            start = self._clock()
            try:
                items = await self._link.read(slave, read)
            except LinkError as exc:
                fault, detail = exc.fault, str(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # pymodbus raising something unforeseen
                fault, detail = LinkFault.MALFORMED, f"{type(exc).__name__}: {exc}"
            else:
                end = self._clock()
                self._last_frame_end = self._received_by(start, end)
                stats.answered(end - start)
                for offset, item in enumerate(items):
                    values[(read.table, read.address + offset)] = item
                continue
            self._last_frame_end = now = self._clock()
            stats.failed(fault)
            if stats.consecutive_failures == 1:
                log.warning("bus %s: slave %d: %s", self.name, slave, detail)
            self._deliver(self._sink.on_failure, slave, fault, now)
            return None
        return values

    async def _keep_silence(self) -> None:
        # RTU needs this much silence between frames. It began when the last byte arrived
        # (the answer's end, or noise or a late answer since), so the time spent since,
        # delivering the answer and deciding the next turn, is not paid twice.
        quiet_since = self._last_frame_end
        now = self._clock()
        last_byte = self._link.last_byte_at
        if last_byte is not None and quiet_since < last_byte <= now:
            quiet_since = last_byte
        wait = quiet_since + self._frame_gap_s - now
        if wait > 0:
            await self._sleep(wait)

    def _received_by(self, start: float, end: float) -> float:
        """When the answer to a request sent at ``start`` and returned at ``end`` ended:
        its last byte's arrival as the link saw it, or ``end`` when the link cannot tell
        or its stamp is not within the request (another clock), later and so safe."""
        last_byte = self._link.last_byte_at
        if last_byte is not None and start <= last_byte <= end:
            return last_byte
        return end
