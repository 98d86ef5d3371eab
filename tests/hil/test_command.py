"""The emulator command: options, the ready line, and a clean stop on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from hil_tests.emulator import command
from hil_tests.emulator.control import control
from hil_tests.emulator.faults import Fault
from hil_tests.emulator.modes import ServiceMode
from hil_tests.emulator.registers import decode_ascii
from hil_tests.emulator.traffic import Traffic
from tests.conftest import require_binary

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 15.0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emulate")
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    args = parse([])
    assert (args.cars, args.landings, args.model, args.firmware) == (4, 12, "RC-5000", "5.1.3")
    assert args.modbus is None  # TCP on command.DEFAULT_MODBUS unless a serial line is asked for
    assert args.control == command.Endpoint("127.0.0.1", 0)
    assert (args.serial, args.pty, args.baud, str(args.serial_format)) == (None, None, 19200, "8E1")
    assert args.wire_timing is None and args.traffic is Traffic.MIXED


def test_serial_options_parse() -> None:
    args = parse(
        ["--pty", "/tmp/x", "--baud", "115200", "--format", "8n1", "--wire-timing", "115200,8N1",
         "--traffic", "up-peak", "--inject", "2:late_answer:0:delay_ms=800",
         "--inject", "1:mode:3:mode=fire_return"]
    )  # fmt: skip
    assert (args.pty, args.baud, str(args.serial_format)) == ("/tmp/x", 115200, "8N1")
    assert str(args.wire_timing) == "115200,8N1" and args.traffic is Traffic.UP_PEAK
    late, mode = args.inject
    assert late.fault is Fault.LATE_ANSWER and late.options.delay_ms == 800
    assert mode.options.mode is ServiceMode.FIRE_RETURN


def test_options_parse() -> None:
    args = parse(
        [
            "--modbus",
            "tcp://[::1]:1502",
            "--control",
            "0.0.0.0:7000",
            "--inject",
            "2:entrapment:1.5",
        ]
    )
    assert args.modbus == command.Endpoint("::1", 1502)
    assert args.control == command.Endpoint("0.0.0.0", 7000)
    assert args.inject == [command.Injection(2, Fault.ENTRAPMENT, 1.5)]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--modbus", "udp://127.0.0.1:5020"], "--modbus"),
        (["--modbus", "tcp://127.0.0.1:99999"], "--modbus"),
        (["--control", "nohost"], "--control"),
        (["--cars", "0"], "--cars"),
        (["--landings", "1"], "--landings"),
        (["--inject", "1:gremlins:5"], "--inject"),
        (["--inject", "1:entrapment"], "--inject"),
        (["--speedup", "-1"], "--speedup"),
        (["--format", "8X1"], "--format"),
        (["--baud", "fast"], "--baud"),
        (["--wire-timing", "19200"], "--wire-timing"),
        (["--traffic", "rush"], "--traffic"),
        (["--inject", "1:late_answer:0:delay=5"], "--inject"),
        (["--inject", "1:late_answer:0:delay_ms"], "--inject"),
        (["--serial", "/dev/ttyUSB0", "--pty", "/tmp/x"], "--pty"),
    ],
)
def test_bad_options_name_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--cars", "2", "--inject", "3:entrapment:1"], "--inject"),
        (["--model", "X" * 17], "--model"),
        (["--serial-prefix", "ÄÖ"], "--serial-prefix"),
    ],
)
def test_inconsistent_options_fail_before_listening(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.run(parse(argv)) == 2
    captured = capsys.readouterr()
    assert option in captured.err
    assert captured.out == ""


async def _run_process() -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil_tests.emulator",
        "--cars",
        "2",
        "--seed",
        "9",
        "--serial-prefix",
        "T-",
        "--inject",
        "1:door_open_failure:0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S))
        assert set(ready) == {"ready", "modbus", "control", "cars"}
        assert ready["ready"] is True and ready["cars"] == 2
        assert ready["modbus"].startswith("tcp://127.0.0.1:")
        modbus_port = int(ready["modbus"].rsplit(":", 1)[1])
        host, ctl_port = ready["control"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(ctl_port) > 0

        client = AsyncModbusTcpClient("127.0.0.1", port=modbus_port, timeout=2, retries=0)
        assert await client.connect()
        for car in (1, 2):
            rr = await client.read_holding_registers(0, count=44, device_id=car)
            assert not rr.isError() and rr.registers[0] == 1
            assert decode_ascii(rr.registers[36:44]) == f"T-{car:06d}"
        client.close()

        async def injected() -> None:
            while True:
                state = await control("127.0.0.1", int(ctl_port), {"op": "state"})
                if state["cars"][0]["faults"] == ["door_open_failure"]:  # type: ignore[index]
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(injected(), TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), TIMEOUT_S)
    rest = await proc.stdout.read()
    return code, rest


@pytest.mark.e2e
def test_process_prints_one_ready_line_serves_and_stops_cleanly() -> None:
    code, rest = asyncio.run(_run_process())
    assert code == 0
    assert rest == b""  # nothing but the ready line on stdout


async def _run_rtu_process(pty_dir: Path) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil_tests", "emulate", "--cars", "2", "--pty", str(pty_dir),
        "--baud", "115200", "--format", "8N1", "--modbus", "tcp://127.0.0.1:0",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S))
        assert ready["serial"] == str(pty_dir / "agent")
        assert (ready["baud"], ready["format"], ready["cars"]) == (115200, "8N1", 2)
        assert ready["modbus"].startswith("tcp://127.0.0.1:")
        client = AsyncModbusSerialClient(
            port=ready["serial"], framer=FramerType.RTU, baudrate=115200, timeout=1, retries=0
        )
        assert await client.connect()
        rr = await client.read_holding_registers(36, count=8, device_id=2)
        assert not rr.isError() and decode_ascii(rr.registers) == "LW000002"
        client.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), TIMEOUT_S)


@pytest.mark.e2e
def test_process_serves_rtu_on_its_own_pty_pair(tmp_path: Path) -> None:
    require_binary("socat")
    assert asyncio.run(_run_rtu_process(tmp_path / "pty")) == 0
    assert not (tmp_path / "pty" / "agent").exists()  # socat ended, links removed
