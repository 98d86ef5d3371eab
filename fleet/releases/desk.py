"""The serving fleet's side of releases (issue 20): which release each connected agent is
offered, its files over FetchRelease, the agents' UpdateReports, and the rollout loop.

`run_desk` advances every active rollout every `STEP_S` (`service.tick`, on the instance
holding the rollouts role) and reloads the offers from the store (on every instance), so
that a rollout started, paused or aborted by the CLI takes effect within one step. The gateway asks
`offer_for` at each frame of an agent's stream (a dict lookup) and sends the offer once
per stream; `chunks` serves only a file of a release offered to that agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from fleet.releases import service
from fleet.releases.rollout import MemberState, RolloutState
from fleet.store.releases import Release, ReleaseStore
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import gateway_pb2

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
# How often rollouts advance and offers are reloaded: a gate's T is minutes, and each step
# reads every member's agent, so seconds would only cost the store.
STEP_S = 10.0
# Report states an agent may send (docs/updates.md); anything else is counted as bad.
REPORT_STATES = frozenset(
    {
        "offered",
        "refused",
        "downloading",
        "staged",
        "installing",
        "switched",
        "healthy",
        "failed",
        "rolled_back",
        "health",
    }
)
# Longer ids name no release (ids are bounded as an event's is).
MAX_RELEASE_ID_LENGTH = 128
# The release id of the health report each agent sends at every connection: no release.
HEALTH_RELEASE_ID = "-"


class FetchRefusedError(Exception):
    """A FetchRelease the fleet does not serve; the message says why."""


class RolloutMetrics:
    """Rollouts, offers, bytes served and agents' reports, on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.halted = Gauge(
            "liftwatch_fleet_rollouts_halted",
            "Rollouts halted by a failed gate and not yet aborted (each one alerts).",
            registry=registry,
        )
        self.active = Gauge(
            "liftwatch_fleet_rollouts_active",
            "Rollouts running or paused.",
            registry=registry,
        )
        self.agents = Gauge(
            "liftwatch_fleet_rollout_agents",
            "Agents of running, paused or halted rollouts by their state in the gate.",
            ["state"],
            registry=registry,
        )
        self.offers = Counter(
            "liftwatch_fleet_release_offers",
            "ReleaseOffers sent on agent streams.",
            registry=registry,
        )
        self.bytes_served = Counter(
            "liftwatch_fleet_release_bytes_served",
            "Bytes of release files served over FetchRelease.",
            registry=registry,
        )
        self.fetch_refused = Counter(
            "liftwatch_fleet_release_fetch_refused",
            "FetchRelease calls refused (not offered to that agent, no such file).",
            registry=registry,
        )
        self.reports = Counter(
            "liftwatch_fleet_update_reports",
            "UpdateReports received, by state ('bad': an unknown state or release).",
            ["state"],
            registry=registry,
        )


def detector_errors(detail: str) -> int:
    """The detector exception count an agent put in a report's detail (a JSON object with
    ``detector_errors``); 0 when it put none."""
    try:
        doc = json.loads(detail)
    except ValueError:
        return 0
    value = doc.get("detector_errors", 0) if isinstance(doc, dict) else 0
    return value if isinstance(value, int) and value >= 0 else 0


class ReleaseDesk:
    """Offers, files and reports for the agent streams of one serving fleet."""

    def __init__(
        self,
        worker: StoreWorker,
        metrics: RolloutMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._worker = worker
        self._metrics = metrics
        self._clock = clock
        self._wanted: dict[str, Release] = {}

    def offer_for(self, agent_id: str) -> gateway_pb2.ReleaseOffer | None:
        """The release ``agent_id`` should be offered now, as the frame's payload."""
        release = self._wanted.get(agent_id)
        if release is None:
            return None
        return gateway_pb2.ReleaseOffer(
            release_id=release.release_id,
            version=release.version,
            manifest=release.manifest,
            signature=release.signature,
        )

    def offered(self) -> None:
        """Count one offer sent."""
        self._metrics.offers.inc()

    async def report(self, agent_id: str, report: gateway_pb2.UpdateReport) -> None:
        """Keep the agent's report (bad ones counted and dropped, never raised)."""
        if report.state not in REPORT_STATES or not report.release_id:
            self._metrics.reports.labels(state="bad").inc()
            log.warning("agent %s: bad UpdateReport %r", agent_id, report.state)
            return
        now_us = int(self._clock() * 1e6)
        detail = report.detail[:2000]

        def write(store: SqlStore) -> bool:
            releases = ReleaseStore(store)
            # A report is a row per (agent, release): one about a release this fleet does
            # not hold is no rollout's business, and keeping it would let a box add a row
            # per frame (tests/security/test_update_report_abuse.py).
            if report.release_id != HEALTH_RELEASE_ID and (
                len(report.release_id) > MAX_RELEASE_ID_LENGTH
                or releases.release(report.release_id) is None
            ):
                return False
            releases.record_report(
                agent_id,
                report.release_id,
                report.state,
                detail,
                detector_errors(detail),
                now_us,
            )
            return True

        if await self._worker.call(write):  # type: ignore[arg-type]
            self._metrics.reports.labels(state=report.state).inc()
        else:
            self._metrics.reports.labels(state="bad").inc()
            log.warning("agent %s: UpdateReport about a release not held here", agent_id)

    def chunks(self, agent_id: str, release_id: str, file: str) -> Iterator[bytes]:
        """The bytes of ``file`` of ``release_id`` in chunks, if that release is offered
        to ``agent_id`` and the file is in its manifest; `FetchRefusedError` otherwise."""
        release = self._wanted.get(agent_id)
        if release is None or release.release_id != release_id:
            self._metrics.fetch_refused.inc()
            raise FetchRefusedError(f"release {release_id!r} is not offered to agent {agent_id!r}")
        names = {w["file"] for w in json.loads(release.manifest)["wheels"]}
        if file not in names:
            self._metrics.fetch_refused.inc()
            raise FetchRefusedError(f"{file!r} is not a file of release {release_id}")
        path = Path(release.bundle) / file
        with path.open("rb") as f:
            while block := f.read(CHUNK_BYTES):
                self._metrics.bytes_served.inc(len(block))
                yield block

    async def step(self, *, advance: bool = True) -> None:
        """Advance the rollouts once (only with ``advance``: on the instance holding the
        rollouts role) and reload the offers and the gauges (on every instance: each
        serves its own agents' streams)."""
        now = self._clock()

        def work(
            store: SqlStore,
        ) -> tuple[dict[str, Release], service.TickResult, dict[str, int], int, int]:
            releases = ReleaseStore(store)
            result = service.tick(releases, now) if advance else service.TickResult((), ())
            rows = store._execute("SELECT agent_id FROM agent_releases").fetchall()
            wanted: dict[str, Release] = {}
            for (agent_id,) in rows:
                found = releases.offered(str(agent_id))
                if found is not None:
                    wanted[str(agent_id)] = found
            counts: dict[str, int] = dict.fromkeys((s.value for s in MemberState), 0)
            halted = active = 0
            for rollout in releases.rollouts():
                if rollout.state == RolloutState.HALTED:
                    halted += 1
                elif rollout.state in (RolloutState.RUNNING, RolloutState.PAUSED):
                    active += 1
                else:
                    continue
                for m in releases.members(rollout.rollout_id):
                    counts[m.state.value] += 1
            return wanted, result, counts, halted, active

        wanted, result, counts, halted, active = await self._worker.call(work)  # type: ignore[arg-type]
        self._wanted = wanted
        for rollout in result.halted:
            log.warning("rollout %d halted: %s", rollout.rollout_id, rollout.reason)
        self._metrics.halted.set(halted)
        self._metrics.active.set(active)
        for state, n in counts.items():
            self._metrics.agents.labels(state=state).set(n)


async def run_desk(desk: ReleaseDesk, owns: Callable[[], bool] = lambda: True) -> None:
    """`ReleaseDesk.step` every `STEP_S` until cancelled, advancing the rollouts only
    while ``owns()`` (this instance holds the rollouts role, `fleet.serve.roles`); a
    failing step is logged and the loop goes on (`STEP_S` is read at each turn, so a test
    may shorten it)."""
    while True:
        try:
            await desk.step(advance=owns())
        except Exception:  # a store fault must not end the loop
            log.exception("rollout step failed")
        await asyncio.sleep(STEP_S)
