"""Prometheus metrics of the agent, served on a loopback port from the agent's own loop.

The endpoint is prometheus_client's own exposition server (`start_http_server`: its WSGI
app in a daemon thread, with its content negotiation, OpenMetrics and gzip), so nothing
HTTP is written here. What is ours is where a scrape collects: on the agent's loop, never
on the server's thread (`LoopCollector`), because the outbox gauges read the SQLite
connection that the loop's thread owns and `LoopHistogram` has that loop as its only
writer. Like prometheus_client's server, every GET path answers with the metrics
(``/metrics`` is the documented one); methods other than GET and OPTIONS get 405.

Metric names (all prefixed ``liftwatch_agent_``):

================================== ========= ===========================================
poll_latency_seconds{bus}          histogram request-to-answer time of good reads
link_errors_total{unit,kind}       counter   timeouts, exception responses, malformed
                                             frames, implausible values
outbox_depth                       gauge     records waiting for the fleet's ack
outbox_oldest_age_seconds          gauge     age of the oldest waiting record
outbox_used_bytes                  gauge     bytes of the outbox file in use
outbox_thinned                     gauge     state samples dropped to stay within bounds
outbox_corrupt_total               counter   outbox files found corrupt, moved aside
outbox_append_failures_total       counter   appends that failed (disk full, I/O error);
                                             their records wait in memory and are retried
outbox_failing_seconds             gauge     how long appends have been failing (0: fine)
outbox_held_records                gauge     records waiting in memory for an append
outbox_reserve_held                gauge     1 while the reserve file for events is in place
outbox_quarantined                 gauge     records the fleet refused as malformed, set
                                             aside in the outbox's quarantine table
sink_failures_total{bus}           counter   deliveries of a bus's reads that raised (a
                                             bug); a long run of them stops the watchdog
records_sent_total                 counter   records written to the fleet stream
records_acked_total                counter   records the fleet acknowledged
events_total{type,phase}           counter   event phases detected
detection_seconds                  histogram cost of running every detector on one sample
fleet_connected                    gauge     1 while a fleet stream is open
fleet_rejects_total{code}          counter   Rejects received from the fleet
mqtt_publish_failures_total        counter   MQTT publishes dropped (broker down or slow)
update_reports_total{state}        counter   what the agent said of releases (refused,
                                             downloading, staged, failed, and the
                                             updater's healthy / rolled_back; issue 20)
================================== ========= ===========================================
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
_DETECT_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3)
# How long a scrape waits for the agent's loop to collect before it fails (HTTP 500).
SCRAPE_TIMEOUT_S = 10.0
# The bucket label format prometheus_client's own histograms use (it ships no annotation).
_le: Callable[[float], str] = floatToGoString


class LoopHistogram(Collector):
    """A histogram observed on every sample, from the agent's loop only.

    prometheus_client's `Histogram` takes a lock twice per observation, for writers on
    other threads; this one has a single writer and is scraped on the same loop, so an
    observation is a bisect and two additions. Exposed as a prometheus_client Histogram
    is (``_bucket{le}``, ``_count``, ``_sum``).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = [*sorted(buckets), float("inf")]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is at least it."""
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterator[Metric]:
        """The histogram as it stands, cumulative buckets as the exposition format has."""
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, self._counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), float(cumulative)))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=self._sum
        )


class AgentMetrics:
    """Every metric of one agent process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "liftwatch_agent_"
        self.poll_latency = Histogram(
            f"{p}poll_latency_seconds",
            "Modbus request-to-answer time of good reads",
            ["bus"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.link_errors = Counter(
            f"{p}link_errors",
            "Requests without a usable answer, by kind",
            ["unit", "kind"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            f"{p}outbox_depth", "Records awaiting the fleet's ack", registry=r
        )
        self.outbox_oldest_age = Gauge(
            f"{p}outbox_oldest_age_seconds", "Age of the oldest record awaiting ack", registry=r
        )
        self.outbox_used_bytes = Gauge(
            f"{p}outbox_used_bytes", "Bytes of the outbox in use", registry=r
        )
        # A gauge read from the outbox at scrape time (it counts since the agent started).
        self.outbox_thinned = Gauge(
            f"{p}outbox_thinned", "State samples dropped to keep the outbox bounded", registry=r
        )
        self.records_sent = Counter(
            f"{p}records_sent", "Records written to the fleet stream", registry=r
        )
        self.records_acked = Counter(
            f"{p}records_acked", "Records acknowledged by the fleet", registry=r
        )
        self.heartbeats_skipped = Counter(
            f"{p}heartbeats_skipped",
            "Heartbeats not sent because batches within the interval carried every unit",
            registry=r,
        )
        self.events = Counter(f"{p}events", "Event phases detected", ["type", "phase"], registry=r)
        # Observed for every sample of every car: the lock-free kind.
        self.detection = LoopHistogram(
            f"{p}detection_seconds", "Cost of all detectors on one sample", _DETECT_BUCKETS, r
        )
        self.fleet_connected = Gauge(
            f"{p}fleet_connected", "1 while a fleet stream is open", registry=r
        )
        self.fleet_rejects = Counter(
            f"{p}fleet_rejects", "Rejects received from the fleet", ["code"], registry=r
        )
        self.outbox_corrupt = Counter(
            f"{p}outbox_corrupt", "Outbox files found corrupt and moved aside", registry=r
        )
        self.outbox_append_failures = Counter(
            f"{p}outbox_append_failures",
            "Outbox appends that failed; their records are kept in memory and retried",
            registry=r,
        )
        self.outbox_failing = Gauge(
            f"{p}outbox_failing_seconds", "How long outbox appends have been failing", registry=r
        )
        self.outbox_held = Gauge(
            f"{p}outbox_held_records", "Records waiting in memory for an append", registry=r
        )
        self.outbox_reserve_held = Gauge(
            f"{p}outbox_reserve_held",
            "1 while the outbox's reserve for events is in place",
            registry=r,
        )
        self.outbox_quarantined = Gauge(
            f"{p}outbox_quarantined",
            "Records the fleet refused as malformed, kept aside in the outbox",
            registry=r,
        )
        self.sink_failures = Counter(
            f"{p}sink_failures",
            "Deliveries of a bus's reads to the agent that raised",
            ["bus"],
            registry=r,
        )
        self.mqtt_failures = Counter(
            f"{p}mqtt_publish_failures", "MQTT publishes dropped", registry=r
        )
        # The flight recorder (agent/recorder.py, issue 16).
        self.evidence_windows = Counter(
            f"{p}evidence_windows",
            "Evidence windows frozen and kept, by why they end (raise, post, cleared, max, "
            "request, shutdown)",
            ["end"],
            registry=r,
        )
        self.evidence_bytes = Counter(
            f"{p}evidence_bytes", "Bytes of Evidence records kept", registry=r
        )
        self.evidence_held_back = Gauge(
            f"{p}evidence_held_back",
            "Evidence records held back in the outbox from a fleet that does not take "
            "evidence; sent when one that does connects",
            registry=r,
        )
        self.evidence_requests = Counter(
            f"{p}evidence_requests",
            "On-demand evidence requests from the fleet, by outcome (answered, "
            "unknown_unit, bad_seconds)",
            ["outcome"],
            registry=r,
        )
        self.update_reports = Counter(
            f"{p}update_reports",
            "UpdateReports sent about releases, by state (agent.update)",
            ["state"],
            registry=r,
        )
        self.config_documents = Counter(
            f"{p}config_documents",
            "Configuration documents from the fleet, by outcome (applied, unchanged, "
            "rejected, failed; agent.remote_config)",
            ["outcome"],
            registry=r,
        )
        self.recorder_ring_bytes = Gauge(
            f"{p}recorder_ring_bytes",
            "Bytes the flight recorder's rings hold, all cars (allocated once)",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class LoopCollector(Collector):
    """``registry`` collected on ``loop`` for a caller on another thread.

    prometheus_client's server collects on its request thread; this hands the collection
    to the agent's loop and waits for it (at most `SCRAPE_TIMEOUT_S`), so the callbacks of
    the outbox gauges and the loop-only histogram run where their data lives.
    """

    def __init__(self, registry: CollectorRegistry, loop: asyncio.AbstractEventLoop) -> None:
        self._registry = registry
        self._loop = loop

    async def _collect(self) -> list[Metric]:
        return list(self._registry.collect())

    def collect(self) -> Iterator[Metric]:
        """Every metric of the registry, as collected on the loop just now."""
        future = asyncio.run_coroutine_threadsafe(self._collect(), self._loop)
        yield from future.result(SCRAPE_TIMEOUT_S)


class MetricsServer:
    """prometheus_client's exposition server of one agent, running in its own thread."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on (the port chosen when asked for port 0)."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        """Stop serving and close the socket (a scrape in progress may still finish)."""
        # shutdown() waits for the serving thread's next poll: off the loop.
        await asyncio.to_thread(self._httpd.shutdown)
        self._httpd.server_close()


async def serve_metrics(metrics: AgentMetrics, host: str, port: int) -> MetricsServer:
    """Serve the metrics over HTTP on ``host:port`` (port 0: any free port) until stopped,
    each scrape collected on the running loop."""
    served = CollectorRegistry(auto_describe=False)
    served.register(LoopCollector(metrics.registry, asyncio.get_running_loop()))
    httpd, thread = start_http_server(port, addr=host, registry=served)
    return MetricsServer(httpd, thread)
