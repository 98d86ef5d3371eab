"""Group commit: the writes of every agent stream, applied in shared transactions.

Each stream submits one write (Hello, RecordBatch, Heartbeat) and waits for it to be
committed before it acks. While the store is busy with one transaction, the writes of
other streams queue up; the next transaction takes all of them (up to a record limit).
So the commit rate, not the number of agents, sets the number of transactions, and a
lone agent still gets its ack after one transaction, with no added delay.

Transactions also start at most every `GROUP_INTERVAL_S` (25 ms): a write arriving
sooner after the last one started waits for the next. Without it a fast store took
nearly every write alone: at 3,000 agents about 1,000 transactions a second of one or
two batches, each paying the whole fixed cost (a dozen statements, the write lock, the
WAL commit, two thread hand-offs and their context switches), which then cost more than
the records themselves. Paced, a group holds everything of those 25 ms (about 75 writes
at 10,000 agents) and an ack waits at most 25 ms longer; a write after a quiet spell is
still committed at once. (10 ms halved the context switches and took a quarter off the
fleet's CPU at 3,000 agents; 25 ms took another eighth at 5,000 with two workers.)

Safety: a group is one transaction, so it commits entirely or not at all. When it fails
(one bad batch, a deadlock between two fleets on PostgreSQL) every write of the group is
retried alone, so one agent's bad batch fails only that agent's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from fleet.clock import Clock
from fleet.metrics import GatewayMetrics
from fleet.store.base import BatchOp, CommitResult, WriteOp
from fleet.store.worker import StoreWorker

log = logging.getLogger(__name__)

# The shortest time between the starts of two group transactions (see the module doc).
GROUP_INTERVAL_S = 0.025


class CommitterStoppedError(RuntimeError):
    """The committer stopped before this write could be committed."""


@dataclass(slots=True)
class _Pending:
    op: WriteOp
    done: asyncio.Future[CommitResult | None]


def _size(op: WriteOp) -> int:
    return len(op.records) if isinstance(op, BatchOp) else 1


class GroupCommitter:
    """Queues writes from any number of streams; one `run` task commits them in groups."""

    def __init__(
        self,
        store: StoreWorker,
        clock: Clock,
        metrics: GatewayMetrics,
        max_group_records: int = 20_000,
        group_interval_s: float = GROUP_INTERVAL_S,
    ) -> None:
        self._store = store
        # The store the writes go to, for the gateway's own reads and writes (remote
        # configuration, fleet.configs.delivery), which do not ride on group commits.
        self.store = store
        self._clock = clock
        # The fleet's wall clock, also the one the gateway checks record times against.
        self.clock = clock
        self._metrics = metrics
        self._max_records = max_group_records
        self._interval = group_interval_s
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._stopped = False
        # Called with the ops of each committed transaction, after the writers got their
        # results (alarm dispatch, ingest latency); must return at once, never raise.
        self.observers: list[Callable[[Sequence[WriteOp]], None]] = []

    async def submit(self, op: WriteOp) -> CommitResult | None:
        """Commit ``op`` (in some group); returns its result once it is durable as promised.

        Raises the store's error when ``op`` fails on its own, or `CommitterStoppedError`.
        """
        if self._stopped:
            raise CommitterStoppedError("the fleet is stopping")
        done: asyncio.Future[CommitResult | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(op, done))
        self._wake.set()
        return await done

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        records = 0
        while self._queue:
            size = _size(self._queue[0].op)
            if group and records + size > self._max_records:
                break
            pending = self._queue.popleft()
            if pending.done.cancelled():
                continue  # its stream went away; nobody waits for the result
            group.append(pending)
            records += size
        return group

    async def run(self) -> None:
        """Commit queued writes until cancelled; pending writers then get an error."""
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    # Writes arriving meanwhile join this group (see GROUP_INTERVAL_S).
                    delay = next_start - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    group = self._take_group()
                    if not group:
                        break
                    next_start = loop.time() + self._interval
                    await self._commit(group)
        finally:
            self.close()

    def close(self) -> None:
        """Refuse new writes and fail the queued ones (`CommitterStoppedError`)."""
        self._stopped = True
        while self._queue:
            pending = self._queue.popleft()
            if not pending.done.done():
                pending.done.set_exception(CommitterStoppedError("the fleet is stopping"))

    async def _commit(self, group: list[_Pending]) -> None:
        ops = [p.op for p in group]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            results = await self._store.write(ops, self._clock())
        except asyncio.CancelledError:
            for pending in group:
                if not pending.done.done():
                    pending.done.set_exception(CommitterStoppedError("the fleet is stopping"))
            raise
        except Exception as exc:  # any store error: isolate the culprit
            log.warning("group commit of %d writes failed (%s); retrying each alone", len(ops), exc)
            self._metrics.group_retries.inc()
            for pending in group:
                await self._commit_alone(pending)
            return
        self._metrics.commit_seconds.observe(loop.time() - started)
        self._metrics.group_writes.observe(len(ops))
        for pending, result in zip(group, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)
        self._observe(ops)

    def _observe(self, ops: Sequence[WriteOp]) -> None:
        for observer in self.observers:
            try:
                observer(ops)
            except Exception:  # an observer's bug must not fail ingest
                log.exception("commit observer failed")

    async def _commit_alone(self, pending: _Pending) -> None:
        try:
            (result,) = await self._store.write([pending.op], self._clock())
        except asyncio.CancelledError:
            if not pending.done.done():
                pending.done.set_exception(CommitterStoppedError("the fleet is stopping"))
            raise
        except Exception as exc:  # handed to the one stream it belongs to
            if not pending.done.done():
                pending.done.set_exception(exc)
            return
        if not pending.done.done():
            pending.done.set_result(result)
        self._observe([pending.op])


@contextlib.asynccontextmanager
async def running_committer(
    store: StoreWorker, clock: Clock, metrics: GatewayMetrics, max_group_records: int
) -> AsyncIterator[GroupCommitter]:
    """A `GroupCommitter` with its task running for the block; cancelled after it."""
    committer = GroupCommitter(store, clock, metrics, max_group_records)
    task = asyncio.create_task(committer.run(), name="group-commit")
    try:
        yield committer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        committer.close()  # also when the task was cancelled before it ever ran
