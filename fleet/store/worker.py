"""The asyncio face of a blocking `Store`: every call runs on one dedicated thread.

One thread means one writer (SQLite allows no more) and one connection that never crosses
threads; the event loop only awaits. Calls queue in submission order, so a batch that
arrives after a Hello is committed after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fleet.store.base import (
    CommitResult,
    CoverageChange,
    EventQuery,
    EventRow,
    FirmwareChange,
    RegisterEntry,
    Store,
    UnitClaim,
    UnitQuery,
    UnitRow,
    WriteOp,
)
from protos.liftwatch.v1 import records_pb2

T = TypeVar("T")


class StoreWorker:
    """Async facade over a `Store` opened on, and only ever used from, its own thread."""

    def __init__(self, executor: ThreadPoolExecutor, store: Store) -> None:
        self._executor = executor
        self._store = store

    @classmethod
    async def open(cls, factory: Callable[[], Store]) -> StoreWorker:
        """Start the worker thread and open the store on it with ``factory``.

        Errors from ``factory`` (e.g. `StoreError`) propagate and the thread is stopped.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-store")
        try:
            store = await asyncio.get_running_loop().run_in_executor(executor, factory)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, store)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def description(self) -> str:
        """See `Store.description`."""
        return self._store.description

    async def write(self, ops: Sequence[WriteOp], now: dt.datetime) -> list[CommitResult | None]:
        """See `Store.write`."""
        return await self._run(self._store.write, ops, now)

    async def sweep(
        self, now: dt.datetime, stale_after_s: float, offline_after_s: float
    ) -> list[CoverageChange]:
        """See `Store.sweep`."""
        return await self._run(self._store.sweep, now, stale_after_s, offline_after_s)

    async def coverage_history(self, unit_id: str, limit: int) -> list[CoverageChange]:
        """See `Store.coverage_history`."""
        return await self._run(self._store.coverage_history, unit_id, limit)

    async def firmware_history(self, unit_id: str, limit: int) -> list[FirmwareChange]:
        """See `Store.firmware_history`."""
        return await self._run(self._store.firmware_history, unit_id, limit)

    async def committed_seq(self, agent_id: str) -> int:
        """See `Store.committed_seq`."""
        return await self._run(self._store.committed_seq, agent_id)

    async def register_hello(
        self, agent_id: str, agent_version: str, units: Sequence[UnitClaim], now: dt.datetime
    ) -> None:
        """See `Store.register_hello`."""
        await self._run(self._store.register_hello, agent_id, agent_version, units, now)

    async def commit_batch(
        self, agent_id: str, records: Sequence[records_pb2.Record], now: dt.datetime
    ) -> CommitResult:
        """See `Store.commit_batch`."""
        return await self._run(self._store.commit_batch, agent_id, records, now)

    async def touch_agent(self, agent_id: str, now: dt.datetime) -> None:
        """See `Store.touch_agent`."""
        await self._run(self._store.touch_agent, agent_id, now)

    async def upsert_register(self, entries: Sequence[RegisterEntry]) -> int:
        """See `Store.upsert_register`."""
        return await self._run(self._store.upsert_register, entries)

    async def list_units(self, query: UnitQuery) -> list[UnitRow]:
        """See `Store.list_units`."""
        return await self._run(self._store.list_units, query)

    async def get_unit(self, unit_id: str) -> UnitRow | None:
        """See `Store.get_unit`."""
        return await self._run(self._store.get_unit, unit_id)

    async def list_events(self, query: EventQuery) -> list[EventRow]:
        """See `Store.list_events`."""
        return await self._run(self._store.list_events, query)

    async def call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` on the store thread (the lifecycle side: alarms, history,
        reports) and return its result."""
        return await self._run(fn, self._store)

    def call_blocking(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` on the store thread and wait for its result, from a thread
        that is neither the event loop's nor the store's own (that would deadlock): for
        web work that computes on its own thread and reads the store in between, so that
        the store thread only ever holds it for one read (the claims audit)."""
        return self._executor.submit(fn, self._store).result()

    async def agent_units(self, agent_id: str) -> tuple[str, ...]:
        """See `Store.agent_units`."""
        return await self._run(self._store.agent_units, agent_id)

    async def close(self) -> None:
        """Close the store on its thread, after every queued call, then stop the thread."""
        try:
            await self._run(self._store.close)
        finally:
            self._executor.shutdown(wait=False)
