"""Link health of one slave: requests, answers, failures by kind and latency.

Counted by the scheduler as requests complete; read by the unit monitor (LinkStatus
records) and the probe (its live display). Mutable on purpose: one writer, the bus task.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from agent.bus.link import LinkFault

_LATENCY_WINDOW = 200


@dataclass(slots=True)
class LinkStats:
    """Running totals for one slave on one bus."""

    requests: int = 0
    responses: int = 0
    faults: dict[LinkFault, int] = field(default_factory=lambda: dict.fromkeys(LinkFault, 0))
    consecutive_failures: int = 0
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    def answered(self, latency_s: float) -> None:
        """One request answered usefully after ``latency_s``."""
        self.requests += 1
        self.responses += 1
        self.consecutive_failures = 0
        self._latencies.append(latency_s)

    def failed(self, fault: LinkFault) -> None:
        """One request without a usable answer."""
        self.requests += 1
        self.faults[fault] += 1
        self.consecutive_failures += 1

    def latency_p50_ms(self) -> float | None:
        """Median latency of the recent answered requests, in ms."""
        return statistics.median(self._latencies) * 1000 if self._latencies else None

    def latency_max_ms(self) -> float | None:
        """Worst latency of the recent answered requests, in ms."""
        return max(self._latencies) * 1000 if self._latencies else None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary (used by the probe)."""
        p50 = self.latency_p50_ms()
        worst = self.latency_max_ms()
        return {
            "requests": self.requests,
            "responses": self.responses,
            "errors": {f.value: n for f, n in self.faults.items()},
            "latency_ms_p50": None if p50 is None else round(p50, 2),
            "latency_ms_max": None if worst is None else round(worst, 2),
        }
