"""Admitting new agent streams at a bounded rate (issue 18, reconnect storms).

After a fleet restart every agent reconnects within seconds. Each new stream costs the
fleet a Hello transaction, its units' rows and the stream's setup; taken all at once,
they delay the acks of every stream already open. `Admission` lets at most ``rate_per_s``
new streams a second through (a token bucket holding one second's worth) and gives each
stream it turns away its own slot later on: the answer is UNAVAILABLE with the wait in
the trailing metadata `RETRY_AFTER_KEY` (milliseconds), which the agent's uplink honours
(`agent.uplink.retry_hint_s`). Slots are handed out one ``1 / rate_per_s`` apart after
the last one promised, so the agents turned away come back spread out at the rate the
fleet takes them, instead of all at the end of the same back-off.

Only new streams are counted: open streams and their batches are never held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The trailing metadata key of the hint (agent.uplink reads the same key).
RETRY_AFTER_KEY = "retry-after-ms"
# No stream is asked to wait longer than this, however long the queue of promised slots
# (a fleet serving far more agents than it admits in a minute takes the rest later).
MAX_RETRY_AFTER_S = 60.0


class Admission:
    """A token bucket of new streams; see the module docstring."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """``rate_per_s`` > 0 new streams a second, with a burst of as many; ``clock`` is a
        monotonic clock in seconds."""
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self._rate = float(rate_per_s)
        self._burst = max(1.0, self._rate)
        self._tokens = self._burst
        self._clock = clock
        self._updated = clock()
        self._promised = 0.0  # the latest slot given to a stream turned away

    def admit(self) -> float | None:
        """None when a new stream may go on now; otherwise how many seconds it should
        wait before trying again (its slot, at most `MAX_RETRY_AFTER_S`)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        self._promised = min(max(self._promised, now) + 1.0 / self._rate, now + MAX_RETRY_AFTER_S)
        return self._promised - now
