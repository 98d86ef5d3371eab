"""The coverage sweep: record the transitions that happen because nothing arrives.

Being heard of (Hello, a record, a heartbeat) moves a unit to online or blind as the
fleet commits it. Going quiet is noticed by no write at all, so serve runs this sweep
every ``coverage.sweep_interval_s``: units silent past ``stale_after_s`` become stale,
past ``offline_after_s`` offline, each change kept in the coverage history. The history
therefore lags reality by at most one interval; live queries compute the status from
``last_seen`` and are exact. With several fleets on one database only the instance
holding the sweeper role sweeps (``owns``, see `fleet.serve.roles`); were two to sweep
at once, the store would still record each transition once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fleet.clock import Clock
from fleet.metrics import GatewayMetrics
from fleet.store.base import CoverageChange
from fleet.store.worker import StoreWorker
from fleet.units.coverage import CoverageConfig

log = logging.getLogger(__name__)


async def sweep_once(
    store: StoreWorker, clock: Clock, thresholds: CoverageConfig, metrics: GatewayMetrics
) -> list[CoverageChange]:
    """One sweep as of ``clock()``; counts and returns the transitions it recorded."""
    changes = await store.sweep(clock(), thresholds.stale_after_s, thresholds.offline_after_s)
    for change in changes:
        metrics.coverage_transitions.labels(status=change.new_status).inc()
    if changes:
        log.info("coverage sweep: %d unit(s) changed status", len(changes))
    return changes


async def run_sweeper(
    store: StoreWorker,
    clock: Clock,
    thresholds: CoverageConfig,
    metrics: GatewayMetrics,
    wait: asyncio.Event | None = None,
    owns: Callable[[], bool] | None = None,
) -> None:
    """Sweep every ``thresholds.sweep_interval_s`` until cancelled; a failed sweep is
    logged and retried at the next interval (the store may be briefly unreachable).
    With ``owns``, a round is skipped while it says this instance is not the sweeper.

    ``wait``, when given, replaces the interval timer: each set() triggers one sweep
    (tests drive the sweep with it and an injected clock).
    """
    while True:
        if wait is None:
            await asyncio.sleep(thresholds.sweep_interval_s)
        else:
            await wait.wait()
            wait.clear()
        if owns is not None and not owns():
            continue
        try:
            await sweep_once(store, clock, thresholds, metrics)
        except Exception as exc:  # never let the sweep task die
            log.error("coverage sweep failed: %s", exc)
