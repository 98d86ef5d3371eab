"""What serve runs beside ingest for the lifecycle side: the alarm dispatcher, and the
fleet gauges Prometheus scrapes (units by coverage status, open alarms by type and age,
ingest latency), registered in the serve's metrics registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleet.alarms.config import AlarmsConfig
from fleet.alarms.dispatch import Dispatcher, running_dispatcher
from fleet.clock import Clock
from fleet.ingest.committer import GroupCommitter
from fleet.read.views import event_type_name
from fleet.store.base import BatchOp, WriteOp
from fleet.store.sql import timestamp_us, to_us
from fleet.store.worker import StoreWorker
from fleet.units.coverage import CoverageConfig, UnitStatus, coverage_of_counts

log = logging.getLogger(__name__)


class LifecycleMetrics:
    """Alarm sends, open alarms, units by status and ingest latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.alarm_sends = Counter(
            "liftwatch_fleet_alarm_sends",
            "Alarm sends to targets, by target and result (ok, failed).",
            ["target", "result"],
            registry=registry,
        )
        self.open_alarms = Gauge(
            "liftwatch_fleet_open_alarms",
            "Alarms not yet resolved or declared false, by event type.",
            ["type"],
            registry=registry,
        )
        self.oldest_open_alarm = Gauge(
            "liftwatch_fleet_open_alarm_oldest_seconds",
            "Age (since onset) of the oldest open alarm whose event is still raised, by "
            "event type; an alarm whose event cleared (the passenger is out) stops counting.",
            ["type"],
            registry=registry,
        )
        self.unacknowledged_alarms = Gauge(
            "liftwatch_fleet_unacknowledged_alarms",
            "Alarms raised or dispatched, nobody acknowledged yet.",
            registry=registry,
        )
        self.units = Gauge(
            "liftwatch_fleet_units",
            "Units by live coverage status (online, stale, offline, blind, never_seen).",
            ["status"],
            registry=registry,
        )
        self.ingest_latency = Histogram(
            "liftwatch_fleet_ingest_latency_seconds",
            "From a batch's newest record time (agent clock) to its commit in the fleet.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )


@dataclass
class Lifecycle:
    """Handles for the API: the store, the clock and thresholds of the reports, and the
    dispatcher to wake after an action."""

    dispatcher: Dispatcher
    store: StoreWorker
    clock: Clock
    thresholds: CoverageConfig


async def refresh_gauges(
    store: StoreWorker, metrics: LifecycleMetrics, clock: Clock, thresholds: CoverageConfig
) -> None:
    """Recompute the gauges from the store once."""
    now = clock()
    # Counted in the database: listing every unit here stalled ingest (see status_counts).
    rows = await store.call(
        lambda s: s.status_counts(now, thresholds.stale_after_s, thresholds.offline_after_s)
    )
    alarms = await store.call(lambda s: s.alarms(open_only=True))
    counts = coverage_of_counts(rows)
    for status in UnitStatus:
        metrics.units.labels(status=status.value).set(getattr(counts, status.value))
    by_type: dict[str, list[float]] = {}
    for alarm in alarms:
        ages = by_type.setdefault(event_type_name(alarm.type), [])
        if alarm.cleared is None:
            ages.append((now - (alarm.onset or alarm.raised)).total_seconds())
    metrics.open_alarms.clear()
    metrics.oldest_open_alarm.clear()
    for alarm in alarms:
        metrics.open_alarms.labels(type=event_type_name(alarm.type)).inc()
    for name, ages in by_type.items():
        # Every open type gets the gauge (0 once all its events cleared), so an alert on
        # it resolves rather than going stale.
        metrics.oldest_open_alarm.labels(type=name).set(max(ages, default=0.0))
    metrics.unacknowledged_alarms.set(sum(a.state in ("raised", "dispatched") for a in alarms))


async def _refresh_loop(
    store: StoreWorker, metrics: LifecycleMetrics, clock: Clock, thresholds: CoverageConfig
) -> None:
    while True:
        try:
            await refresh_gauges(store, metrics, clock, thresholds)
        except Exception as exc:  # a failed refresh keeps the last values
            log.warning("fleet gauges not refreshed: %s", exc)
        await asyncio.sleep(thresholds.sweep_interval_s)


@contextlib.asynccontextmanager
async def running_lifecycle(
    store: StoreWorker,
    config: AlarmsConfig,
    thresholds: CoverageConfig,
    clock: Clock,
    registry: CollectorRegistry,
    committer: GroupCommitter,
    owns_dispatch: Callable[[], bool] | None = None,
) -> AsyncIterator[Lifecycle]:
    """The dispatcher and the gauge refresher for the block, hooked to ``committer``;
    the dispatcher sends only while ``owns_dispatch`` says so (see `Dispatcher`)."""
    metrics = LifecycleMetrics(registry)
    types = config.type_numbers

    def configure(s: object) -> None:
        s.alarm_types = types  # type: ignore[attr-defined]

    await store.call(configure)

    def observe_latency(ops: Sequence[WriteOp]) -> None:
        now_us = to_us(clock())
        for op in ops:
            if isinstance(op, BatchOp) and op.records:
                newest = max(timestamp_us(r.time) for r in op.records)
                metrics.ingest_latency.observe(max(0, now_us - newest) / 1e6)

    def sent(target: str, ok: bool) -> None:
        metrics.alarm_sends.labels(target=target, result="ok" if ok else "failed").inc()

    async with running_dispatcher(store, config, clock, sent, owns_dispatch) as dispatcher:
        committer.observers += [dispatcher.observe, observe_latency]
        refresher = asyncio.create_task(
            _refresh_loop(store, metrics, clock, thresholds), name="fleet-gauges"
        )
        try:
            yield Lifecycle(dispatcher, store, clock, thresholds)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            for observer in (dispatcher.observe, observe_latency):
                with contextlib.suppress(ValueError):
                    committer.observers.remove(observer)
