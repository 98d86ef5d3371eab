"""Prometheus counters of the fleet's ingest path, in a registry of their own.

A private `CollectorRegistry` per server keeps tests and several servers in one process
from colliding in the global default registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class GatewayMetrics:
    """Frames received by kind, rejects by code, records newly committed."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.frames = Counter(
            "liftwatch_fleet_frames",
            "Agent frames received, by kind (hello, batch, heartbeat, empty).",
            ["kind"],
            registry=self.registry,
        )
        self.rejects = Counter(
            "liftwatch_fleet_rejects",
            "Reject frames sent to agents, by reject code.",
            ["code"],
            registry=self.registry,
        )
        self.records_committed = Counter(
            "liftwatch_fleet_records_committed",
            "Records newly stored (replayed duplicates are not counted).",
            registry=self.registry,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of sample ``name`` (e.g. ``liftwatch_fleet_frames_total``)."""
        result = self.registry.get_sample_value(name, labels or {})
        return result if result is not None else 0.0
