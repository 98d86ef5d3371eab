"""The bus scheduler: fair turns, back-off of a silent slave, identity and slow cadence,
and a loop that no exception can end. Fake link and explicit clock: no real time."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

import pytest

from agent.bus.link import LinkError, LinkFault
from agent.bus.plan import RTU_COST, Read, Table
from agent.bus.scheduler import BusPolicy, BusScheduler, RawValues, Station, TurnKind
from agent.decode.parser import load_profile

PLAN = load_profile("reference").plan(RTU_COST)
PERIOD = 0.1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


@dataclass
class FakeLink:
    clock: FakeClock
    dead: set[int] = field(default_factory=set)
    broken: set[int] = field(default_factory=set)  # raise something pymodbus should not
    answer_s: float = 0.02
    timeout_s: float = 0.2
    log: list[tuple[int, Read]] = field(default_factory=list)
    closed: bool = False
    last_byte_at: float | None = None

    async def read(self, slave: int, read: Read) -> list[int]:
        self.log.append((slave, read))
        if slave in self.broken:
            raise RuntimeError("pymodbus surprise")
        if slave in self.dead:
            self.clock.now += self.timeout_s
            raise LinkError(LinkFault.TIMEOUT, f"slave {slave}")
        self.clock.now += self.answer_s
        return [1 if read.address == 0 else 0] * read.count

    def close(self) -> None:
        self.closed = True


@dataclass
class Sink:
    samples: list[tuple[int, TurnKind]] = field(default_factory=list)
    identities: list[int] = field(default_factory=list)
    failures: list[tuple[int, LinkFault]] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)  # samples delivered when each ended
    explode: bool = False

    def on_identity(self, slave: int, values: RawValues, t: float) -> None:
        self.identities.append(slave)

    def on_sample(self, slave: int, values: RawValues, kind: TurnKind, t: float) -> None:
        if self.explode:
            raise ValueError("bug in a monitor")
        self.samples.append((slave, kind))

    def on_failure(self, slave: int, fault: LinkFault, t: float) -> None:
        self.failures.append((slave, fault))

    def on_cycle_end(self, t: float) -> None:
        self.cycles.append(len(self.samples))


def make(
    slaves: list[int], **link_kwargs: object
) -> tuple[FakeClock, FakeLink, Sink, BusScheduler]:
    clock = FakeClock()
    link = FakeLink(clock, **link_kwargs)  # type: ignore[arg-type]
    sink = Sink()
    scheduler = BusScheduler(
        "bus1",
        link,
        [Station(s, PLAN) for s in slaves],
        sink,
        clock,
        period_s=PERIOD,
        frame_gap_s=0.002,
        slow_poll_s=1.0,
        identity_poll_s=10.0,
        backoff_max_s=1.0,
        sleep=clock.sleep,
    )
    return clock, link, sink, scheduler


async def run_cycles(clock: FakeClock, scheduler: BusScheduler, seconds: float) -> None:
    end = clock.now + seconds
    while clock.now < end:
        start = clock.now
        await scheduler.cycle()
        clock.now = max(clock.now, start + PERIOD)


def test_live_slaves_get_equal_turns_and_a_dead_one_cannot_starve_them() -> None:
    clock, link, sink, scheduler = make([1, 2, 3, 4], dead={3})
    asyncio.run(run_cycles(clock, scheduler, 30.0))
    turns = Counter(slave for slave, _ in sink.samples)
    assert turns[1] == turns[2] == turns[4] >= 250  # ~10 Hz despite a dead neighbour
    tries_on_dead = sum(1 for slave, _ in link.log if slave == 3)
    assert 25 <= tries_on_dead <= 40  # probed about once per backoff_max_s, never given up
    assert scheduler.stations[3].stats.faults[LinkFault.TIMEOUT] == tries_on_dead
    assert scheduler.stations[1].stats.responses > 0


def test_backoff_doubles_up_to_the_cap_and_recovery_rereads_identity() -> None:
    policy = BusPolicy(
        [Station(7, PLAN)],
        period_s=0.125,
        slow_poll_s=5.0,
        identity_poll_s=3600.0,
        backoff_max_s=1.0,
    )
    now = 0.0
    (turn,) = policy.turns(now)
    assert turn.identity and turn.kind is TurnKind.SLOW  # everything on the first turn
    policy.identity_read(7, now)
    gaps = []
    for _ in range(6):
        policy.turn_done(turn, False, now)
        start = now
        while not policy.turns(now):
            now += 0.125  # binary-exact steps: the test compares times exactly
        gaps.append(now - start)
        (turn,) = policy.turns(now)
    assert gaps == [0.125, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert turn.kind is TurnKind.FAST  # a probe, not a slow read
    policy.turn_done(turn, True, now)
    (turn,) = policy.turns(now + 0.125)
    assert turn.identity  # recovery: the controller may have been swapped or updated


def test_turn_order_rotates() -> None:
    policy = BusPolicy(
        [Station(s, PLAN) for s in (1, 2, 3)],
        period_s=0.1,
        slow_poll_s=5.0,
        identity_poll_s=3600.0,
        backoff_max_s=1.0,
    )
    firsts = [policy.turns(float(i))[0].slave for i in range(3)]
    assert sorted(firsts) == [1, 2, 3]


def test_identity_hourly_and_slow_reads_on_their_cadence() -> None:
    clock, link, sink, scheduler = make([1, 2])
    asyncio.run(run_cycles(clock, scheduler, 25.0))
    assert Counter(sink.identities) == {1: 3, 2: 3}  # at start, +10 s, +20 s
    slow = Counter(slave for slave, kind in sink.samples if kind is TurnKind.SLOW)
    assert 24 <= slow[1] <= 26 and 24 <= slow[2] <= 26  # every 1 s
    reads = {read for _, read in link.log}
    assert reads == {Read(Table.HOLDING, 0, 10), Read(Table.HOLDING, 0, 16), *PLAN.identity}


def test_no_exception_from_the_link_or_the_sink_ends_the_loop() -> None:
    clock, link, sink, scheduler = make([1, 2], broken={2})
    sink.explode = True
    asyncio.run(run_cycles(clock, scheduler, 2.0))
    assert scheduler.stations[2].stats.faults[LinkFault.MALFORMED] > 0
    sink.explode = False
    link.broken.clear()
    asyncio.run(run_cycles(clock, scheduler, 3.0))
    assert {slave for slave, _ in sink.samples} == {1, 2}


def test_run_keeps_the_frame_gap_and_closes_the_link_when_cancelled() -> None:
    clock, link, _sink, scheduler = make([1])
    gaps: list[float] = []
    real_sleep = clock.sleep

    async def sleep(seconds: float) -> None:
        gaps.append(seconds)
        if len(gaps) > 20:
            raise asyncio.CancelledError
        await real_sleep(seconds)

    scheduler._sleep = sleep
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scheduler.run())
    assert link.closed
    assert pytest.approx(0.002) in gaps  # the silence between identity and state reads


def test_the_sink_hears_each_cycle_end_after_its_samples() -> None:
    clock, _link, sink, scheduler = make([1, 2, 3])
    asyncio.run(run_cycles(clock, scheduler, 0.5))
    # Five cycles of three samples each, the end of each heard after all three.
    assert sink.cycles == [3, 6, 9, 12, 15]


@dataclass
class StampingLink(FakeLink):
    """Stamps its last received byte ``early_s`` before the read returns (the time the
    answer took to reach the scheduler), or at ``stamp`` when that is set."""

    early_s: float = 0.0005
    stamp: float | None = None

    async def read(self, slave: int, read: Read) -> list[int]:
        items = await super().read(slave, read)
        self.last_byte_at = self.stamp if self.stamp is not None else self.clock.now - self.early_s
        return items


def gaps_between_reads(link: FakeLink) -> list[float]:
    clock = link.clock
    scheduler = BusScheduler(
        "bus1",
        link,
        [Station(1, PLAN)],
        Sink(),
        clock,
        period_s=PERIOD,
        frame_gap_s=0.002,
        sleep=clock.sleep,
    )
    gaps: list[float] = []

    async def sleep(seconds: float) -> None:
        gaps.append(seconds)
        await clock.sleep(seconds)

    scheduler._sleep = sleep
    asyncio.run(scheduler.cycle())  # identity, then the first state read: one gap
    return gaps


def test_the_silence_counts_from_the_last_byte_received() -> None:
    clock = FakeClock()
    # The answer's last byte arrived 0.5 ms before the scheduler had it: only the rest of
    # the 2 ms silence is waited.
    assert gaps_between_reads(StampingLink(clock)) == [pytest.approx(0.0015)]


def test_a_stamp_outside_the_request_never_shortens_the_silence() -> None:
    clock = FakeClock()
    # A stamp from another clock (or a stale one) is not believed: the full gap is kept.
    assert gaps_between_reads(StampingLink(clock, stamp=1.0)) == [pytest.approx(0.002)]
    assert gaps_between_reads(StampingLink(clock, stamp=1e9)) == [pytest.approx(0.002)]


def test_bytes_arriving_after_the_answer_restart_the_silence() -> None:
    clock = FakeClock()
    link = StampingLink(clock)

    class NoisySink(Sink):
        def on_identity(self, slave: int, values: RawValues, t: float) -> None:
            # Handling the answer takes 1 ms, and a stray byte arrives in the middle.
            clock.now += 0.0005
            link.last_byte_at = clock.now
            clock.now += 0.0005

    scheduler = BusScheduler(
        "bus1", link, [Station(1, PLAN)], NoisySink(), clock, period_s=PERIOD, frame_gap_s=0.002
    )
    gaps: list[float] = []

    async def sleep(seconds: float) -> None:
        gaps.append(seconds)
        await clock.sleep(seconds)

    scheduler._sleep = sleep
    asyncio.run(scheduler.cycle())
    # 2 ms from the stray byte, of which 0.5 ms have passed: not from the answer's end.
    assert gaps == [pytest.approx(0.0015)]


def test_a_sink_failing_on_every_sample_is_logged_rarely_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, _, sink, scheduler = make([1])
    sink.explode = True
    with caplog.at_level(logging.ERROR, logger="agent.bus.scheduler"):
        asyncio.run(run_cycles(clock, scheduler, 65.0))  # 650 failing deliveries
    reports = [r.getMessage() for r in caplog.records if "sink failed" in r.getMessage()]
    assert scheduler.sink_failures >= 600
    # One report at the first failure, then one per SINK_FAILURE_LOG_S (30 s) with a count.
    assert len(reports) == 3
    assert reports[0].endswith("(0 more failure(s) since the last report)")
    reported = sum(int(r.split("(")[1].split()[0]) for r in reports) + len(reports)
    waiting = scheduler._sink_failures_unlogged  # since the last report, for the next one
    assert reported + waiting == scheduler.sink_failures
