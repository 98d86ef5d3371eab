"""One owner for each fleet-wide job (issue 18, item 3): the coverage sweep and alarm
dispatch run on the one instance holding their role's lease in the store
(`fleet.store.roles`), whichever of several instances on one PostgreSQL (or ``serve
--workers`` processes on one SQLite file) that is.

`Roles` takes every role it can every ``lease_s / 3`` and renews those it holds; a job
asks `Roles.holds` before each round. When the holder dies (even by SIGKILL) its lease
runs out and the next instance to look takes the role: the job resumes there within
``lease_s`` + ``lease_s / 3``. A clean stop gives the roles up at once. The alarm sends
themselves stay leased one by one in the store (`fleet.alarms.dispatch`), so a send that
the dead owner had started is retried once its own lease expires, never sent twice
while it is in flight.

An owner that cannot reach the store for a whole lease stops counting itself the owner
when the lease it took would have run out (``holds`` compares with its own clock), so
two instances never both believe they hold a role for longer than the clock skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge

from fleet.clock import Clock
from fleet.northbound.forwarder import instance_id
from fleet.store.roles import RoleLeases
from fleet.store.sql import SqlStore, to_us
from fleet.store.worker import StoreWorker

log = logging.getLogger(__name__)

SWEEPER = "sweeper"
DISPATCH = "dispatch"
# Advancing the agent rollouts (issue 20, fleet.releases.desk): one writer of their rows.
ROLLOUTS = "rollouts"
ROLES = (SWEEPER, DISPATCH, ROLLOUTS)
# A dead owner's roles move on within this long (plus a third of it).
LEASE_S = 15.0


def _leases(store: object) -> RoleLeases:
    assert isinstance(store, SqlStore), "fleet roles need a SQL store"
    return RoleLeases(store)


class Roles:
    """The roles this instance holds; see the module docstring."""

    def __init__(
        self,
        store: StoreWorker,
        clock: Clock,
        roles: Iterable[str] = ROLES,
        *,
        lease_s: float = LEASE_S,
        owner: str | None = None,
        registry: CollectorRegistry | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._roles = tuple(roles)
        self._lease_s = lease_s
        self.owner = owner or instance_id()
        self._monotonic = monotonic
        # Per role held: (epoch, until on our monotonic clock).
        self._held: dict[str, tuple[int, float]] = {}
        self._changed = asyncio.Event()
        self._gauge = (
            Gauge(
                "liftwatch_fleet_role_owner",
                "1 while this instance holds the role (sweeper, dispatch, rollouts), else 0; "
                "summed over instances it is 1 per role.",
                ["role"],
                registry=registry,
            )
            if registry is not None
            else None
        )

    def holds(self, role: str) -> bool:
        """Whether this instance holds ``role`` now (and may run its job)."""
        held = self._held.get(role)
        return held is not None and self._monotonic() < held[1]

    async def keep(self) -> None:
        """Take and renew the roles until cancelled; then give up those held."""
        try:
            while True:
                await asyncio.sleep(self._lease_s / 3)
                await self.round()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release_all())

    async def round(self) -> None:
        """Take each free or expired role, renew each held one (one pass)."""
        for role in self._roles:
            started = self._monotonic()
            try:
                held = self._held.get(role)
                now_us = to_us(self._clock())
                if held is None:
                    epoch = await self._store.call(
                        functools.partial(_acquire, role, self.owner, now_us, self._lease_s)
                    )
                    if epoch is not None:
                        log.info("this instance (%s) now runs the %s", self.owner, role)
                        self._held[role] = (epoch, started + self._lease_s)
                else:
                    kept = await self._store.call(
                        functools.partial(_renew, role, self.owner, held[0], now_us, self._lease_s)
                    )
                    if kept:
                        self._held[role] = (held[0], started + self._lease_s)
                    else:
                        log.warning("the %s lease went to another instance", role)
                        del self._held[role]
            except Exception as exc:  # the store may be briefly unreachable: retry
                log.warning("role %s: lease not taken or renewed: %s", role, exc)
            if self._gauge is not None:
                self._gauge.labels(role=role).set(1 if self.holds(role) else 0)

    async def _release_all(self) -> None:
        held, self._held = self._held, {}
        for role, (epoch, _) in held.items():
            await self._store.call(functools.partial(_release, role, self.owner, epoch))
            if self._gauge is not None:
                self._gauge.labels(role=role).set(0)


def _acquire(role: str, owner: str, now_us: int, lease_s: float, store: object) -> int | None:
    return _leases(store).acquire(role, owner, now_us, lease_s)


def _renew(role: str, owner: str, epoch: int, now_us: int, lease_s: float, store: object) -> bool:
    return _leases(store).renew(role, owner, epoch, now_us, lease_s)


def _release(role: str, owner: str, epoch: int, store: object) -> None:
    _leases(store).release(role, owner, epoch)


@contextlib.asynccontextmanager
async def running_roles(
    store: StoreWorker, clock: Clock, registry: CollectorRegistry | None = None
) -> AsyncIterator[Roles]:
    """`Roles` kept for the block (its first round done before the block starts, so the
    first instance of a fleet runs its jobs at once); the roles given up after it."""
    roles = Roles(store, clock, registry=registry)
    await roles.round()
    task = asyncio.create_task(roles.keep(), name="fleet-roles")
    try:
        yield roles
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
