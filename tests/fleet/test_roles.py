"""One owner for the sweep and alarm dispatch (issue 18, item 3): of two instances on one
store (SQLite file or PostgreSQL), one holds each role; when it dies without a word (as
by SIGKILL: no release) the other takes the roles once the lease ran out, the dead one's
`holds` turning false by its own clock meanwhile; a clean stop hands them over at once."""

from __future__ import annotations

import asyncio
import datetime as dt

from fleet.serve.roles import DISPATCH, ROLES, SWEEPER, Roles
from fleet.store.open import open_store
from fleet.store.worker import StoreWorker
from tests.fleet.factories import T0

LEASE_S = 15.0


class Clocks:
    """The fleet's wall clock and a monotonic one, moved together by the test."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def now(self) -> dt.datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += dt.timedelta(seconds=seconds)
        self.mono += seconds


async def _instances(target: str, clocks: Clocks) -> tuple[list[StoreWorker], list[Roles]]:
    workers = [await StoreWorker.open(lambda: open_store(target)) for _ in range(2)]
    roles = [
        Roles(w, clocks.now, lease_s=LEASE_S, owner=name, monotonic=clocks.monotonic)
        for w, name in zip(workers, ("first", "second"), strict=True)
    ]
    return workers, roles


def test_the_roles_fail_over_when_their_holder_dies(store_target: str) -> None:
    async def scenario() -> None:
        clocks = Clocks()
        workers, (first, second) = await _instances(store_target, clocks)
        try:
            await first.round()
            await second.round()
            assert all(first.holds(r) for r in ROLES)
            assert not any(second.holds(r) for r in ROLES)
            # Renewed while alive: the second still gets nothing.
            clocks.advance(LEASE_S / 3)
            await first.round()
            await second.round()
            assert first.holds(SWEEPER) and not second.holds(SWEEPER)
            # The first dies silently (no round, no release). Just before its lease runs
            # out nothing moves; after it, the second takes both roles.
            clocks.advance(LEASE_S - 1)
            await second.round()
            assert not second.holds(DISPATCH)
            clocks.advance(2)
            assert not first.holds(DISPATCH)  # by its own clock it no longer owns it
            await second.round()
            assert all(second.holds(r) for r in ROLES)
            # Were the first only paused, it learns at its next round that it lost them.
            await first.round()
            assert not any(first.holds(r) for r in ROLES)
            assert all(second.holds(r) for r in ROLES)
        finally:
            for worker in workers:
                await worker.close()

    asyncio.run(scenario())


def test_a_clean_stop_hands_the_roles_over_at_once(store_target: str) -> None:
    async def scenario() -> None:
        clocks = Clocks()
        workers, (first, second) = await _instances(store_target, clocks)
        try:
            keeping = asyncio.create_task(first.keep())
            await first.round()
            assert first.holds(SWEEPER)
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
            await second.round()  # no time has passed: the lease was given up
            assert all(second.holds(r) for r in ROLES)
        finally:
            for worker in workers:
                await worker.close()

    asyncio.run(scenario())
