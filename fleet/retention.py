"""Serve's retention job (issue 18): every ``[retention] interval_s``, the fleet instance
holding the retention lease folds the raw records older than ``window_days`` into the
hourly aggregates and deletes them (`fleet.store.retention`).

Each fold batch is its own call on the store thread, so ingest's writes run between
them: retention never holds ingest up for more than one batch. The lease is the store's
one lease mechanism (`fleet.store.lease`, as the northbound senders hold theirs): several
instances on one PostgreSQL (or ``serve --workers`` on one SQLite file) run retention
once, and when the holder dies another takes over after ``lease_s``. The lease is renewed
while a long run goes on and given up when it ends.

On SQLite, a database created with ``auto_vacuum = INCREMENTAL`` (every new one, see
`fleet.store.sqlite`) gives the pages the run freed back to the file system, `VACUUM_PAGES`
a call. Metrics: records folded and deleted, the last run, the lag (how far the oldest
raw record lies behind the window's edge), and whether this instance holds the lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from fleet.clock import Clock
from fleet.config import RetentionConfig
from fleet.northbound.forwarder import instance_id
from fleet.store.base import Store
from fleet.store.retention import (
    FoldPass,
    FoldResult,
    Held,
    Retention,
    RetentionLeaseLostError,
    RetentionStatus,
)
from fleet.store.sql import SqlStore, to_us
from fleet.store.sqlite import SqliteStore
from fleet.store.worker import StoreWorker

__all__ = ["VACUUM_PAGES", "RetentionMetrics", "retention_round", "run_retention"]

log = logging.getLogger(__name__)

# Pages (4 KiB) given back to the file system per store call after a run (SQLite).
VACUUM_PAGES = 2000
# The lease is renewed every this many fold batches of a run.
RENEW_EVERY = 50

Sleep = Callable[[float], Awaitable[None]]


class RetentionMetrics:
    """Records folded and deleted, the last run, the lag and the lease, on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.folded = Counter(
            "liftwatch_fleet_retention_folded",
            "Raw records folded into the hourly aggregates (by this instance).",
            registry=registry,
        )
        self.compacted = Counter(
            "liftwatch_fleet_retention_compacted",
            "Raw records compacted into per-unit hourly batches (by this instance).",
            registry=registry,
        )
        self.partitions_dropped = Counter(
            "liftwatch_fleet_retention_partitions_dropped",
            "Day partitions of the raw batches dropped whole after folding (PostgreSQL).",
            registry=registry,
        )
        self.deleted = Counter(
            "liftwatch_fleet_retention_deleted",
            "Raw records deleted after folding (by this instance).",
            registry=registry,
        )
        self.last_run = Gauge(
            "liftwatch_fleet_retention_last_run_timestamp_seconds",
            "When this instance last finished a retention run (0: never).",
            registry=registry,
        )
        self.lag = Gauge(
            "liftwatch_fleet_retention_lag_seconds",
            "How far the oldest raw record lies behind the window's edge (0: caught up); "
            "grows while a consumer (the visit derivation) holds retention back.",
            registry=registry,
        )
        self.held_back = Gauge(
            "liftwatch_fleet_retention_held_back_agents",
            "Agents whose old records wait for the visit derivation to read them first.",
            registry=registry,
        )
        self.owner = Gauge(
            "liftwatch_fleet_retention_owner",
            "1 while this instance holds the retention lease (runs retention), else 0.",
            registry=registry,
        )
        self.failures = Counter(
            "liftwatch_fleet_retention_failures",
            "Retention runs ended by an error (logged; the next run tries again).",
            registry=registry,
        )


def lag_s(status: RetentionStatus) -> float:
    """Seconds the oldest raw record lies before the last run's cutoff (0: none)."""
    if status.cutoff_us is None or status.oldest_raw_us is None:
        return 0.0
    return max(0, status.cutoff_us - status.oldest_raw_us) / 1e6


async def retention_round(
    store: StoreWorker,
    clock: Clock,
    config: RetentionConfig,
    metrics: RetentionMetrics,
    owner: str,
) -> FoldResult | None:
    """One run if this instance can take the lease (None when another holds it): fold
    batch by batch, then give freed pages back (SQLite) and update the metrics."""
    retention: Callable[[Store], Retention] = lambda s: Retention(_sql(s))  # noqa: E731
    lease_s = config.lease_s
    held: Held | None = await store.call(
        lambda s: retention(s).acquire(owner, to_us(clock()), lease_s)
    )
    metrics.owner.set(1 if held is not None else 0)
    if held is None:
        return None
    try:
        window_us = config.window_days * 86_400_000_000
        compact_after_us = int(config.compact_after_s * 1_000_000)
        run = FoldPass(
            held,
            to_us(clock()),
            window_us,
            config.batch_records,
            compact_after_us=compact_after_us,
        )
        steps = 0
        try:
            while await store.call(lambda s: run.step(_sql(s))):
                steps += 1
                if steps % RENEW_EVERY == 0:
                    await store.call(lambda s: retention(s).renew(held, to_us(clock()), lease_s))
            result = await store.call(lambda s: run.finish(_sql(s)))
        except RetentionLeaseLostError:
            # Paused past the lease (a long GC, a stalled disk): another instance runs
            # retention now; what this one committed stands, its next batch was refused.
            log.info("retention: lease lost to another instance; it carries on")
            return None
        while await store.call(_vacuum_step):
            pass
        status = await store.call(lambda s: retention(s).status())
    finally:
        await store.call(lambda s: retention(s).release(held))
        metrics.owner.set(0)
    metrics.compacted.inc(result.compacted)
    metrics.partitions_dropped.inc(result.partitions_dropped)
    metrics.folded.inc(result.folded)
    metrics.deleted.inc(result.deleted)
    metrics.held_back.set(result.held_back)
    metrics.last_run.set(clock().timestamp())
    metrics.lag.set(lag_s(status))
    log.info(
        "retention: compacted %d raw records into %d batches; folded %d, deleted %d, "
        "kept %d older than %s; dropped %d partitions",
        result.compacted,
        result.batches,
        result.folded,
        result.deleted,
        result.kept,
        dt.datetime.fromtimestamp(result.cutoff_us / 1e6, dt.UTC).isoformat(),
        result.partitions_dropped,
    )
    return result


async def run_retention(
    store: StoreWorker,
    clock: Clock,
    config: RetentionConfig,
    metrics: RetentionMetrics,
    *,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Serve's job: `retention_round` every ``interval_s`` (0: never). A failed run is
    logged and counted; the next one tries again: it never ends the process."""
    if config.interval_s <= 0:
        return
    owner = instance_id()
    while True:
        try:
            await retention_round(store, clock, config, metrics, owner)
        except Exception:  # a bad run must not end serve; the next one tries again
            log.exception("retention: the run failed")
            metrics.failures.inc()
        await sleep(config.interval_s)


def vacuum_step(store: SqlStore) -> bool:
    """Give up to `VACUUM_PAGES` free pages back to the file system (a SQLite database
    in incremental auto-vacuum mode; else nothing); whether free pages remain."""
    if not isinstance(store, SqliteStore):
        return False  # PostgreSQL: autovacuum makes deleted rows' space reusable
    if int(store._execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
        return False  # created before retention existed: pages are reused, not returned
    with store._transaction():
        try:
            store._execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        except sqlite3.Error:
            return False
    return int(store._execute("PRAGMA freelist_count").fetchone()[0]) > 0


def _vacuum_step(store: Store) -> bool:
    return vacuum_step(_sql(store))


def _sql(store: Store) -> SqlStore:
    # The worker hands the Store protocol; retention's tables are the SQL store's.
    if not isinstance(store, SqlStore):
        raise TypeError(f"retention needs a SQL store, not {type(store).__name__}")
    return store
