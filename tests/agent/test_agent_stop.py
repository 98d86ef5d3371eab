"""The agent stops on every stop request, even when a cancellation is lost, and loses nothing.

In Python 3.11 ``asyncio.wait_for`` returns the awaited result instead of raising when
the reply arrived in the same loop iteration as the cancellation, and pymodbus awaits
every reply that way: the cancellation is lost. Here every read swallows a cancellation
that way (`LosingLink`), the worst case, so a shutdown that cancels once would hang. The
agents run in-process against the emulator over Modbus TCP, with a CPU burner beside
them, and are stopped 200 times at random moments, most of them with a request in
flight. Every stop must end within the bound without abandoning a task, commit what was
held, and leave every record it numbered in the outbox. A few more stops are real
processes and SIGTERM.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import agent.app
from agent.app import STOP_DEADLINE_S, Agent
from agent.bus.link import ModbusLink
from agent.bus.plan import Read
from agent.config import BusConfig, load_config
from agent.outbox import Outbox
from agent.watchdog import SystemdNotifier
from hil_tests.emulator.group import CarGroup, GroupConfig
from hil_tests.emulator.server import ModbusEmulator
from hil_tests.processes import start
from tests.support import eventually

STOPS = 200
# The bound every stop must meet (the 5 s; the agent's own deadline is below it).
STOP_BOUND_S = 5.0
CARS = 2


@dataclass
class StopProbe:
    """What the test sees of the reads: one in flight, cancellations lost, and a stop to
    request from within the next read."""

    in_flight: bool = False
    lost: int = 0
    stop_in_next_read: Callable[[], None] | None = None


class LosingLink:
    """A link whose every read loses a cancellation that comes while it waits, as
    ``wait_for`` does when the reply has just arrived: the read carries on and returns."""

    def __init__(self, inner: ModbusLink, probe: StopProbe) -> None:
        self._inner = inner
        self._probe = probe

    @property
    def last_byte_at(self) -> float | None:
        return self._inner.last_byte_at

    async def read(self, slave: int, read: Read) -> list[int]:
        probe = self._probe
        probe.in_flight = True
        stop, probe.stop_in_next_read = probe.stop_in_next_read, None
        if stop is not None:
            # Runs while this request waits for its answer (the emulator answers on a
            # later turn of the same loop): a stop that lands mid-request for sure.
            asyncio.get_running_loop().call_soon(stop)
        try:
            return await self._inner.read(slave, read)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            probe.lost += 1
            return await self._inner.read(slave, read)
        finally:
            probe.in_flight = False

    def close(self) -> None:
        self._inner.close()


def config_text(data_dir: Path, port: int) -> str:
    units = "".join(
        f'\n[[unit]]\nid = "car-{car}"\nbus = "line"\nslave = {car}\n' for car in range(1, CARS + 1)
    )
    return (
        f'[agent]\nid = "edge-stop"\ndata_dir = "{data_dir}"\nmetrics_listen = ""\n'
        # Port 9 (discard) on loopback: nothing listens, the uplink retries meanwhile.
        '[fleet]\nendpoints = ["127.0.0.1:9"]\ninsecure = true\n'
        f'[[bus]]\nname = "line"\nurl = "tcp://127.0.0.1:{port}"\npoll_hz = 20.0\n'
        "timeout_s = 0.5\n" + units
    )


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """One process spinning on a core for the duration of the test."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def against_emulator(body: Callable[[int], Awaitable[None]]) -> None:
    """Run ``body(modbus_port)`` on a fresh loop with the emulator serving on that port."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        group = CarGroup(GroupConfig(cars=CARS, seed=7, speedup=20.0), loop.time())
        server = ModbusEmulator(group, "127.0.0.1", 0)
        port = await server.start()
        try:
            await body(port)
        finally:
            await server.stop()

    asyncio.run(main())


def test_every_stop_ends_in_bound_even_when_cancellations_are_lost(
    tmp_path: Path, cpu_load: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    against_emulator(lambda port: stop_many_times(tmp_path, port, monkeypatch))


async def stop_many_times(
    tmp_path: Path, modbus_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    # Numbered from 1, so a lost seq shows as a gap.
    Outbox(data_dir / "outbox.db", wall=lambda: 0.0, reserve_bytes=0).close()
    path = tmp_path / "agent.toml"
    path.write_text(config_text(data_dir, modbus_port), encoding="utf-8")
    config = load_config(path)
    probe = StopProbe()
    real_open_link = agent.app.open_link

    def losing_link(bus: BusConfig) -> ModbusLink:
        return LosingLink(real_open_link(bus), probe)

    monkeypatch.setattr(agent.app, "open_link", losing_link)
    rng = random.Random(14)
    loop = asyncio.get_running_loop()
    for stop in range(STOPS):
        app = Agent(config, monotonic=loop.time)
        first_seq = app.outbox.last_seq
        run = asyncio.create_task(app.run(SystemdNotifier({})))

        def recording(app: Agent = app, first_seq: int = first_seq) -> bool:
            return app.outbox.last_seq > first_seq

        await eventually(recording, what="the first records", interval_s=0.002)
        await asyncio.sleep(rng.uniform(0.0, 0.06))
        if stop % 2:
            app.stop()  # wherever the agent is
        else:
            probe.stop_in_next_read = app.stop
        done, _ = await asyncio.wait({run}, timeout=STOP_BOUND_S)
        assert run in done, f"stop {stop} did not end within {STOP_BOUND_S} s"
        run.result()
        assert app.abandoned == []
        assert app._held == []  # what was read before the stop is committed
    # Every other stop came mid-request, and its cancellation was lost.
    assert probe.lost >= STOPS // 2
    box = Outbox(data_dir / "outbox.db", reserve_bytes=0)
    try:
        assert box.depth() == box.last_seq  # every seq from 1 on is there: nothing lost
        assert box.last_seq > STOPS
    finally:
        box.close()


def test_a_stuck_task_is_abandoned_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that ignores every cancellation cannot hold the stop past the deadline."""
    against_emulator(lambda port: stop_with_a_deaf_task(tmp_path, port, monkeypatch))


async def stop_with_a_deaf_task(
    tmp_path: Path, modbus_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", modbus_port), encoding="utf-8")
    loop = asyncio.get_running_loop()
    app = Agent(load_config(path), monotonic=loop.time)
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()

    monkeypatch.setattr(app.uplink, "run", deaf)
    monkeypatch.setattr(agent.app, "STOP_DEADLINE_S", 0.3)
    first_seq = app.outbox.last_seq
    run = asyncio.create_task(app.run(SystemdNotifier({})))
    await eventually(
        lambda: app.outbox.last_seq > first_seq, what="the first records", interval_s=0.002
    )
    app.stop()
    await asyncio.wait({run}, timeout=STOP_BOUND_S)
    assert run.done()
    assert app.abandoned == ["uplink"]
    release.set()


def test_real_agents_stop_on_sigterm(tmp_path: Path) -> None:
    against_emulator(lambda port: sigterm_real_agents(tmp_path, port))


async def sigterm_real_agents(tmp_path: Path, modbus_port: int) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", modbus_port), encoding="utf-8")
    for attempt in range(5):
        service = await start(f"agent-{attempt}", "agent", ["run", "--config", str(path)], tmp_path)
        await asyncio.sleep(0.05 * attempt)
        service.process.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(service.process.wait(), STOP_DEADLINE_S + 1.0)
        finally:
            await service.stop()
        assert status == 0, service.log_tail()
