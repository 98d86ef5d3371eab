"""Prometheus metrics of the agent, served on a loopback port from the agent's own loop.

The exposition endpoint is a few lines on `asyncio.start_server` rather than
prometheus_client's threaded server: one loop per process, and a scrape reads the outbox
gauges on the same thread that owns the SQLite connection.

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
================================== ========= ===========================================
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
_DETECT_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3)
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

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


async def serve_metrics(metrics: AgentMetrics, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` on ``host:port`` (port 0: any free port) until closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body, status = metrics.exposition(), b"200 OK"
                content_type = CONTENT_TYPE_LATEST.encode()
            else:
                body, status, content_type = (
                    b"not found: try /metrics\n",
                    b"404 Not Found",
                    (b"text/plain"),
                )
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + content_type
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ) as exc:
            log.debug("metrics request dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)
