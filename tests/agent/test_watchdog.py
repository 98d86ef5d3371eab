"""sd_notify messages reach a real datagram socket; a stuck worker stops the pings."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from agent.watchdog import Liveness, SystemdNotifier, keep_watchdog


def receive_all(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_ready_and_watchdog_pings_while_workers_progress(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        now = [100.0]
        liveness = Liveness(lambda: now[0])
        liveness.register("bus group-1")
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        notifier.ready("watching 4 units")

        async def run_for(seconds: float) -> None:
            task = asyncio.create_task(keep_watchdog(notifier, liveness))
            await asyncio.sleep(seconds)
            task.cancel()

        asyncio.run(run_for(0.25))  # pings every 0.1 s while the worker is fresh
        healthy = receive_all(sock)
        now[0] += 10.0  # the poller has made no progress for 10 s
        asyncio.run(run_for(0.25))
        stuck = receive_all(sock)
        notifier.close()
    assert healthy[0] == "READY=1\nSTATUS=watching 4 units"
    assert "WATCHDOG=1" in healthy
    assert "WATCHDOG=1" not in stuck
    assert stuck and all(m == "STATUS=stuck: bus group-1" for m in stuck)


def test_outside_systemd_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready()
    notifier.notify("WATCHDOG=1")
    assert notifier.watchdog_s is None
