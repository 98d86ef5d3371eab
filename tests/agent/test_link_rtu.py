"""The agent's RTU bus layer over a real pty serial line against the emulator's RTU slave:
a garbled frame, a late answer, a missing slave, an answer from another slave id and a
controller reboot mid-poll. The polling keeps running, each fault is counted by kind, and
link noise raises no fault event (only CONTROLLER_LINK_LOST for the rebooting car)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from pymodbus.framer.rtu import FramerRTU

from agent.bus.health import LinkStats
from agent.bus.link import LinkFault, ModbusRtuLink, SerialEndpoint, classify_silence
from agent.bus.plan import RTU_COST
from agent.bus.scheduler import BusScheduler, RawValues, Station, TurnKind
from agent.bus.wire import SerialFormat
from agent.config import SourceConfig, UnitConfig
from agent.decode.parser import load_profile
from agent.monitor import UnitMonitor
from agent.records import TimeBase
from hil_tests.emulator.control import control
from hil_tests.processes import start
from protos.liftwatch.v1 import records_pb2
from tests.conftest import require_binary
from tests.support import eventually

PROFILE = load_profile("reference")
FMT = SerialFormat(8, "N", 1)  # a pty cannot take parity settings; timing is the emulator's
MISSING = 7
# Each link event is seen within this; a poll is 50 ms, but the machine may be loaded.
DEADLINE_S = 20.0


def test_classify_silence() -> None:
    good_other = bytes.fromhex("0203020001")
    crc = FramerRTU.compute_CRC(good_other).to_bytes(2, "big")
    assert classify_silence([good_other + crc], 1) is LinkFault.WRONG_SLAVE
    assert classify_silence([b"\x01\x03\x02\xff"], 1) is LinkFault.CRC
    assert classify_silence([], 1) is LinkFault.TIMEOUT


class Sink:
    """Keeps each unit's records. Once `stopping`, every delivery raises CancelledError
    into the poller, as the agent's sink does (agent.app): pymodbus can swallow a
    cancellation (Python 3.11's ``wait_for``), and a poller that lost its cancellation
    would otherwise poll on and hold the test's teardown for ever."""

    def __init__(self, monitors: dict[int, UnitMonitor], clock: Callable[[], float]) -> None:
        self.monitors = monitors
        self.records: list[records_pb2.Record] = []
        self.time = TimeBase(clock(), 1_700_000_000.0)
        self.stopping = False

    def _open(self) -> None:
        if self.stopping:
            raise asyncio.CancelledError

    def on_identity(self, slave: int, values: RawValues, t: float) -> None:
        self._open()
        self.records += self.monitors[slave].on_identity(0, values, t, self.time)

    def on_sample(self, slave: int, values: RawValues, kind: TurnKind, t: float) -> None:
        self._open()
        self.records += self.monitors[slave].on_sample(0, values, t, self.time)

    def on_failure(self, slave: int, fault: LinkFault, t: float) -> None:
        self._open()
        self.records += self.monitors[slave].on_failure(0, fault, t, self.time)

    def on_cycle_end(self, t: float) -> None:
        self._open()


def unit(slave: int) -> UnitConfig:
    source = SourceConfig(slave, "reference", PROFILE, PROFILE.signal_names)
    return UnitConfig(f"car-{slave}", "line", slave, "reference", sources=(source,))


async def scenario(work: Path) -> None:
    emulator = await start(
        "emulator",
        "hil_tests",
        [
            "emulate",
            "--pty",
            str(work),
            "--format",
            "8N1",
            "--wire-timing",
            "115200,8N1",
            "--cars",
            "4",
            "--control",
            "127.0.0.1:0",
        ],
        work,
    )
    try:
        host, _, port = str(emulator.ready["control"]).rpartition(":")

        async def inject(car: int, fault: str, **options: object) -> None:
            reply = await control(
                host, int(port), {"op": "inject", "car": car, "fault": fault, **options}
            )
            assert reply.get("ok"), reply

        async def clear(car: int, fault: str) -> None:
            reply = await control(host, int(port), {"op": "clear", "car": car, "fault": fault})
            assert reply.get("ok"), reply

        loop = asyncio.get_running_loop()
        slaves = [1, 2, 3, 4, MISSING]
        stats = {s: LinkStats() for s in slaves}
        monitors = {
            s: UnitMonitor(
                unit(s),
                # Well above the noise bursts below, however slowly a loaded CI machine
                # clears them; the reboot is made longer than this on purpose.
                link_lost_after_s=5.0,
                state_interval_s=10.0,
                counters_interval_s=60.0,
                link_stats=[stats[s]],
            )
            for s in slaves
        }
        sink = Sink(monitors, loop.time)
        link = ModbusRtuLink(SerialEndpoint(str(emulator.ready["serial"]), 115200, FMT, 0.1))
        scheduler = BusScheduler(
            "line",
            link,
            [Station(s, PROFILE.plan(RTU_COST), stats[s]) for s in slaves],
            sink,
            loop.time,
            period_s=0.05,
            frame_gap_s=0.00175,
            backoff_max_s=0.5,
        )
        task = asyncio.create_task(scheduler.run())
        try:
            await eventually(
                lambda: all(stats[s].responses > 5 for s in (1, 2, 3, 4)),
                what="all cars answering",
                deadline_s=DEADLINE_S,
            )
            await inject(1, "crc_error")
            await inject(2, "wrong_slave")
            await inject(3, "garbage")
            await eventually(
                lambda: (
                    stats[1].faults[LinkFault.CRC] >= 3
                    and stats[2].faults[LinkFault.WRONG_SLAVE] >= 3
                    and stats[3].faults[LinkFault.CRC] >= 3
                ),
                what="garbled and wrong-slave answers counted",
                deadline_s=DEADLINE_S,
            )
            for car, fault in ((1, "crc_error"), (2, "wrong_slave"), (3, "garbage")):
                await clear(car, fault)
            answered = {s: stats[s].responses for s in (1, 2, 3)}
            await eventually(
                lambda: all(stats[s].responses > answered[s] + 5 for s in answered),
                what="recovery",
                deadline_s=DEADLINE_S,
            )
            await inject(4, "late_answer", delay_ms=300)
            await eventually(
                lambda: stats[4].faults[LinkFault.TIMEOUT] >= 2,
                what="late answers time out",
                deadline_s=DEADLINE_S,
            )
            await clear(4, "late_answer")
            before = stats[4].responses
            await eventually(
                lambda: stats[4].responses > before + 5,
                what="car 4 answers on time again",
                deadline_s=DEADLINE_S,
            )
            await inject(2, "reboot", silent_s=7.0)
            await eventually(
                lambda: not monitors[2].link_up,
                what="car 2 rebooted: link lost",
                deadline_s=DEADLINE_S,
            )
            await eventually(
                lambda: monitors[2].link_up, what="car 2 back", deadline_s=DEADLINE_S + 10.0
            )
            assert not task.done()
        finally:
            sink.stopping = True
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert stats[MISSING].responses == 0 and stats[MISSING].faults[LinkFault.TIMEOUT] > 0
        # The missing slave is backed off: far fewer tries than the live cars' requests.
        assert stats[MISSING].requests < stats[1].requests / 3
        events = [r.event for r in sink.records if r.WhichOneof("payload") == "event"]
        kinds = {
            (r.unit_id, e.type)
            for r, e in zip(
                [r for r in sink.records if r.WhichOneof("payload") == "event"], events, strict=True
            )
        }
        fault_kinds = {t for _, t in kinds} - {records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST}
        assert fault_kinds <= {records_pb2.EVENT_TYPE_MODE_CHANGE}, kinds
        lost = {u for u, t in kinds if t == records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST}
        assert lost <= {"car-2", f"car-{MISSING}"}
        assert "car-2" in lost
    finally:
        await emulator.stop()


def test_link_faults_on_a_pty_line_are_counted_and_raise_no_fault(tmp_path: Path) -> None:
    require_binary("socat")
    asyncio.run(scenario(tmp_path))
