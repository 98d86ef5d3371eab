"""The gateway's side of remote configuration (issue 20): DesiredConfig out on an agent's
stream, its ConfigReport in.

On Hello the agent says which version it runs (Hello.config_version) and whether it takes
documents at all (Hello.accepts_config; an older agent ends its stream on a frame it does
not know, so it gets none). When the version it should run differs, the DesiredConfig
goes out right after the Welcome. While the stream is open, a change is noticed without
a task of its own: each frame of the agent lets the stream look at the newest version
number of all documents, read at most once every `CONFIG_POLL_S` by this process (one
indexed ``max()``), and only a stream that sees it grow reads what its agent should run.
So a change reaches every connected agent within `CONFIG_POLL_S` plus its next frame (a
batch, or at the latest its heartbeat: ``[ingest] heartbeat_interval_s``, 10 s by
default; bench/config_push.py measured 20 agents all applied 10 s after the push), at a
cost independent of the number of agents.

A report is kept in the store with the ``config`` history entries of the units it
touched (`fleet.store.configs.ConfigStore.record_report`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.clock import Clock
from fleet.configs.document import affected_units
from fleet.metrics import GatewayMetrics
from fleet.store.configs import ConfigStore, ConfigVersion
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import gateway_pb2

log = logging.getLogger(__name__)

# How often a serving process reads the newest version number (while agents send frames).
CONFIG_POLL_S = 2.0
# At most this many problems of a report are kept (each clipped to `MAX_PROBLEM_CHARS`).
MAX_PROBLEMS = 100
MAX_PROBLEM_CHARS = 500


@dataclass(slots=True)
class ConfigStream:
    """What one open agent stream has of remote configuration."""

    agent_id: str
    capable: bool
    # The version the agent runs by its Hello or last report, the one last sent, and the
    # newest version number of all documents this stream has looked at.
    running: int
    sent: int = 0
    seen: int = 0
    rejected: set[int] = field(default_factory=set)


def desired_frame(version: ConfigVersion) -> gateway_pb2.DesiredConfig:
    """The DesiredConfig of a kept version."""
    return gateway_pb2.DesiredConfig(
        document_id=version.document_id,
        version=version.version,
        toml=version.toml,
        sha256=version.sha256,
    )


def touched_units(
    report: gateway_pb2.ConfigReport,
) -> Callable[[ConfigVersion | None, ConfigVersion], dict[str, str]]:
    """The units an applied report touched, for their history: as the agent says
    (``unit=added|changed|removed``, what it rebuilt), else (an agent that does not say)
    what the fleet reads from the two texts (`affected_units`)."""
    said: dict[str, str] = {}
    for item in report.units_changed:
        unit_id, _, change = item.rpartition("=")
        if unit_id and change in ("added", "changed", "removed"):
            said[unit_id] = change

    def history(previous: ConfigVersion | None, new: ConfigVersion) -> dict[str, str]:
        if said or report.units_changed:
            return said
        return affected_units(previous.toml if previous is not None else None, new.toml)

    return history


class ConfigDelivery:
    """Sends each agent stream the configuration its agent should run; keeps reports."""

    def __init__(
        self,
        store: StoreWorker,
        clock: Clock,
        poll_s: float = CONFIG_POLL_S,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._poll_s = poll_s
        self._latest = 0
        self._read_at = float("-inf")
        self._reading: asyncio.Lock | None = None

    def _now_us(self) -> int:
        return int(self._clock().timestamp() * 1_000_000)

    async def _latest_version(self) -> int:
        """The newest version number of all documents, read at most every ``poll_s``."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at < self._poll_s:
            return self._latest
        if self._reading is None:
            self._reading = asyncio.Lock()
        if self._reading.locked():
            return self._latest  # another stream is reading it now
        async with self._reading:
            self._latest = await self._store.call(lambda s: ConfigStore(s).latest_version())
            self._read_at = loop.time()
        return self._latest

    async def on_hello(
        self, hello: gateway_pb2.Hello
    ) -> tuple[ConfigStream, gateway_pb2.DesiredConfig | None]:
        """The stream's state, and the DesiredConfig to send after the Welcome (None:
        the agent runs what it should, takes none, or has nothing to run)."""
        stream = ConfigStream(hello.agent_id, hello.accepts_config, hello.config_version)
        if not stream.capable:
            return stream, None
        stream.seen = await self._latest_version()
        agent_id, running, now_us = hello.agent_id, hello.config_version, self._now_us()
        # What the agent runs by its own word (a kept document it could no longer use
        # after a restart is dropped, and it says 0).
        await self._store.call(lambda s: ConfigStore(s).note_running(agent_id, running, now_us))
        return stream, await self._due(stream)

    async def poll(self, stream: ConfigStream) -> gateway_pb2.DesiredConfig | None:
        """A DesiredConfig to send now when a document changed since the stream last
        looked and its agent should run another version; else None. Store errors are
        logged and tried again at the next look."""
        if not stream.capable:
            return None
        try:
            latest = await self._latest_version()
            if latest <= stream.seen:
                return None
            stream.seen = latest
            return await self._due(stream)
        except Exception as exc:  # the store may be briefly unreachable
            log.warning(
                "agent %s: reading its desired configuration failed: %s", stream.agent_id, exc
            )
            stream.seen = 0
            return None

    async def _due(self, stream: ConfigStream) -> gateway_pb2.DesiredConfig | None:
        agent_id = stream.agent_id
        desired = await self._store.call(lambda s: ConfigStore(s).desired(agent_id))
        if desired is None or desired.version in (stream.running, stream.sent):
            return None
        if desired.version in stream.rejected:
            return None  # not resent on this stream; a new Hello tries again
        stream.sent = desired.version
        now_us = self._now_us()
        version = desired.version
        await self._store.call(lambda s: ConfigStore(s).mark_sent(agent_id, version, now_us))
        if self._metrics is not None:
            self._metrics.config_sent.inc()
        log.info(
            "agent %s: sending configuration %s version %d", agent_id, desired.document_id, version
        )
        return desired_frame(desired)

    async def report(self, stream: ConfigStream, report: gateway_pb2.ConfigReport) -> None:
        """Keep the agent's report (with the touched units' history entries when it
        applied a version new to it)."""
        agent_id = stream.agent_id
        problems = [p[:MAX_PROBLEM_CHARS] for p in report.problems[:MAX_PROBLEMS]]
        if self._metrics is not None:
            outcome = "applied" if report.applied else "rejected"
            self._metrics.config_reports.labels(outcome=outcome).inc()
        if report.applied:
            stream.running = report.version
        else:
            stream.rejected.add(report.version)
            log.warning(
                "agent %s rejected configuration %s version %d: %s",
                agent_id,
                report.document_id,
                report.version,
                "; ".join(problems),
            )
        now_us = self._now_us()
        await self._store.call(
            lambda s: ConfigStore(s).record_report(
                agent_id, report.version, report.applied, problems, now_us, touched_units(report)
            )
        )
