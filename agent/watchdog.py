"""systemd notification: READY, STATUS, STOPPING and watchdog pings (sd_notify protocol).

The protocol is one datagram per message on the AF_UNIX socket named by $NOTIFY_SOCKET
(a leading ``@`` means the abstract namespace); written here in a few lines rather than
adding a dependency. Outside systemd (no $NOTIFY_SOCKET) every call does nothing.

The agent pings from a task on its event loop, and only while `Liveness` says its bus
pollers completed a cycle recently: a hung loop, or a poller stuck forever, stops the
pings and systemd restarts the agent after WatchdogSec. So does a worker that keeps
failing (`Liveness.failing`): the outbox's appends failing for longer than their bound (a
full disk, a failing card) stop the pings too, so a restart gets its chance to help.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; a no-op when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() else None
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        """True when systemd is listening."""
        return self._socket is not None

    def notify(self, message: str) -> None:
        """Send one message (e.g. ``READY=1``); failures are logged, never raised."""
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify %r failed: %s", message, exc)

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is complete (Type=notify)."""
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        """Tell systemd a clean stop is under way."""
        self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Liveness:
    """Tracks when each named worker last made progress, on an explicit clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        # worker -> (when its current run of failures began, how long it may last)
        self._failing: dict[str, tuple[float, float]] = {}

    def beat(self, worker: str) -> None:
        """Record that ``worker`` completed a unit of work now."""
        self._last[worker] = self._clock()

    def stale(self, within_s: float) -> list[str]:
        """Workers that have not beaten within ``within_s`` seconds (never beaten: stale),
        and workers failing for longer than they may (see `failing`)."""
        now = self._clock()
        stuck = {w for w, t in self._last.items() if now - t > within_s}
        stuck.update(w for w, (since, bound) in self._failing.items() if now - since > bound)
        return sorted(stuck)

    def failing(self, worker: str, give_up_after_s: float) -> float:
        """Record that ``worker`` failed now; once its failures have lasted longer than
        ``give_up_after_s`` without a `recovered`, it counts as stuck. Returns how long
        the current run of failures has lasted."""
        now = self._clock()
        since, _ = self._failing.setdefault(worker, (now, give_up_after_s))
        return now - since

    def failing_for(self, worker: str) -> float:
        """Seconds the current run of failures of ``worker`` has lasted (0 when none)."""
        entry = self._failing.get(worker)
        return 0.0 if entry is None else self._clock() - entry[0]

    def recovered(self, worker: str) -> None:
        """``worker`` succeeded: its run of failures, if any, is over."""
        self._failing.pop(worker, None)

    def register(self, worker: str) -> None:
        """Start tracking ``worker`` as of now."""
        self._last.setdefault(worker, self._clock())

    def forget(self, worker: str) -> None:
        """Stop tracking ``worker`` (a bus a new configuration removed)."""
        self._last.pop(worker, None)
        self._failing.pop(worker, None)


async def keep_watchdog(notifier: SystemdNotifier, liveness: Liveness) -> None:
    """Ping the systemd watchdog at half its interval while every worker is alive."""
    if notifier.watchdog_s is None:
        return
    interval = notifier.watchdog_s / 2
    while True:
        stale = liveness.stale(notifier.watchdog_s / 2)
        if stale:
            log.error("not pinging the watchdog: no progress from %s", ", ".join(stale))
            notifier.notify(f"STATUS=stuck: {', '.join(stale)}")
        else:
            notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
