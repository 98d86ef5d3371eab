"""Prometheus metrics of the fleet's ingest path, in a registry of their own.

A private `CollectorRegistry` per server keeps tests and several servers in one process
from colliding in the global default registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    """Frames received by kind, rejects by code, records newly committed, connected
    streams, group commit sizes and times, coverage transitions and bad input."""

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
        self.heartbeats_skipped = Counter(
            "liftwatch_fleet_heartbeats_skipped",
            "Heartbeats not written: batches had marked every unit seen within the interval.",
            registry=self.registry,
        )
        self.streams = Gauge(
            "liftwatch_fleet_agent_streams",
            "Agent streams currently connected (after Welcome).",
            registry=self.registry,
        )
        self.group_writes = Histogram(
            "liftwatch_fleet_group_writes",
            "Writes (hello, batch, heartbeat) per group-commit transaction.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "liftwatch_fleet_commit_seconds",
            "Duration of one group-commit transaction.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.group_retries = Counter(
            "liftwatch_fleet_group_retries",
            "Groups that failed as a whole and were retried one write at a time.",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "liftwatch_fleet_store_errors",
            "Writes the store refused on their own (the stream was ended).",
            registry=self.registry,
        )
        self.coverage_transitions = Counter(
            "liftwatch_fleet_coverage_transitions",
            "Coverage transitions recorded by the sweep, by new status.",
            ["status"],
            registry=self.registry,
        )
        self.bad_input = Counter(
            "liftwatch_fleet_bad_input",
            "Bad input outside the ingest stream, by kind (register_row, api_request, "
            "login, api_token, csrf).",
            ["kind"],
            registry=self.registry,
        )
        self.access_denied = Counter(
            "liftwatch_fleet_http_access_denied",
            "HTTP requests refused: 401 (no valid session or token), 403 (not allowed).",
            ["status"],
            registry=self.registry,
        )
        self.streams_refused = Counter(
            "liftwatch_fleet_agent_streams_refused",
            "Agent streams refused because their certificate held [ingest] "
            "max_streams_per_agent open streams already.",
            registry=self.registry,
        )
        self.streams_deferred = Counter(
            "liftwatch_fleet_agent_streams_deferred",
            "New agent streams answered UNAVAILABLE with a retry-after-ms slot because "
            "[ingest] admit_streams_per_s were taken this second (a reconnect storm).",
            registry=self.registry,
        )
        self.seq_gaps = Counter(
            "liftwatch_fleet_seq_gaps",
            "Times an agent's records skipped seqs above the highest the fleet held (records "
            "set aside or lost on the agent).",
            registry=self.registry,
        )
        self.seq_missing = Counter(
            "liftwatch_fleet_seq_missing",
            "Seqs skipped in those gaps, in all.",
            registry=self.registry,
        )
        self.live_subscribers = Gauge(
            "liftwatch_fleet_live_subscribers",
            "Dashboard pages holding a live-update stream open.",
            registry=self.registry,
        )
        self.login_throttled = Counter(
            "liftwatch_fleet_login_throttled",
            "Login attempts refused with 429 (unchecked) because of earlier failures for the "
            "username or from the address ([http] login_free_failures, login_lockout_s).",
            registry=self.registry,
        )
        self.live_refused = Counter(
            "liftwatch_fleet_live_refused",
            "Live streams refused with 429: the user or session already held its limit "
            "([http] live_streams_per_user / live_streams_per_session).",
            registry=self.registry,
        )

        self.evidence_malformed = Counter(
            "liftwatch_fleet_evidence_malformed",
            "Batches refused MALFORMED for an Evidence record that does not decode or "
            "names neither event nor request (the agent sets that record aside).",
            registry=self.registry,
        )
        self.config_sent = Counter(
            "liftwatch_fleet_config_documents_sent",
            "Configuration documents (DesiredConfig) sent on agents' streams by this "
            "process's gateway (issue 20, fleet.configs.delivery).",
            registry=self.registry,
        )
        self.config_reports = Counter(
            "liftwatch_fleet_config_reports",
            "Agents' reports on configuration documents, by outcome: applied, or rejected "
            "with check-config's problems (liftwatch-fleet config diff AGENT shows them).",
            ["outcome"],
            registry=self.registry,
        )
        self.evidence_requests = Counter(
            "liftwatch_fleet_evidence_requests",
            "On-demand evidence requests taken by this process's gateway, by outcome: "
            "sent to the agent, or refused (the agent keeps no recorder).",
            ["outcome"],
            registry=self.registry,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of sample ``name`` (e.g. ``liftwatch_fleet_frames_total``)."""
        result = self.registry.get_sample_value(name, labels or {})
        return result if result is not None else 0.0
