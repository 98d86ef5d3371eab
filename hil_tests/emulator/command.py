"""Serve the reference register map for N emulated elevator cars.

Each car is one Modbus slave (ids 1..N), on a Modbus TCP listener (--modbus, the default)
and/or on one RS-485 line in Modbus RTU (--serial PATH: a tty such as /dev/ttyUSB0 or one
end of a pty pair; --pty DIR: make a socat pty pair DIR/emulator + DIR/agent and serve on
it). --wire-timing BAUD,FORMAT makes RTU answers take as long as on a real wire. Cars
travel between landings, open and close their doors and carry seeded passengers
(--traffic). Faults are injected with --inject CAR:FAULT:AFTER_S[:KEY=VALUE,...] or, while
running, through the JSON-lines control port:

  {"op": "inject", "car": 2, "fault": "entrapment"}   -> {"ok": true}
  {"op": "inject", "car": 2, "fault": "late_answer", "delay_ms": 800}
  {"op": "clear", "car": 2, "fault": "entrapment"}    -> {"ok": true}
  {"op": "state"}                                      -> {"ok": true, "cars": [...]}
  {"op": "inject", "car": 2, "fault": "door_lock_bypass", "at_phase": "opening"}
  {"op": "visible", "car": 2, "fault": "door_lock_bypass"} -> {"ok": true, "injected": T0,
      "visible": T1}: when the fault went in and when the registers first showed it
  {"op": "faults"}                                     -> every fault and its options

Elevator faults: entrapment, door_close_failure, door_open_failure, door_obstruction,
door_lock_bypass, levelling_error, overspeed, overtravel_top, overtravel_bottom,
safety_circuit_open, unintended_movement, mains_failure, fault_code, position_lost,
run_time_exceeded, alarm_button, mode. Link faults: no_answer, late_answer, crc_error,
exception_response, garbage, wrong_slave; and reboot (both).

When everything is up, exactly one JSON line goes to stdout:
  {"ready": true, "modbus": "tcp://HOST:PORT", "control": "HOST:PORT", "cars": N}
with RTU also "serial": PATH (the agent's end), "baud": B, "format": "8E1" (and
"wire_timing": "B,FMT" when set); "modbus" only when TCP is served.
Logs go to stderr. SIGTERM or SIGINT stops the emulator with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hil_tests.emulator.car import CarConfig, uniform_landings
from hil_tests.emulator.control import bound_port, start_control_server
from hil_tests.emulator.faults import NO_OPTIONS, Fault, FaultOptions, parse_fault, parse_options
from hil_tests.emulator.group import MAX_CARS, CarGroup, GroupConfig
from hil_tests.emulator.rtu import RtuSlaveLine
from hil_tests.emulator.server import PHYSICS_PERIOD_S, ModbusEmulator
from hil_tests.emulator.traffic import Traffic, parse_traffic
from hil_tests.emulator.wire import (
    SerialFormat,
    WireTiming,
    parse_baud,
    parse_format,
    parse_wire_timing,
)
from hil_tests.serial_line import PtyPair

log = logging.getLogger("hil_tests.emulator")

MAX_LANDINGS = 128


@dataclass(frozen=True)
class Endpoint:
    """A host and TCP port; port 0 means "pick a free one"."""

    host: str
    port: int


@dataclass(frozen=True)
class Injection:
    """A fault to inject into one car some seconds after the emulator is ready."""

    car: int
    fault: Fault
    after_s: float
    options: FaultOptions = field(default=NO_OPTIONS)


DEFAULT_MODBUS = Endpoint("127.0.0.1", 0)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def parse_modbus_url(text: str) -> Endpoint:
    """Parse `tcp://HOST:PORT` (IPv6 hosts in brackets)."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if url.scheme != "tcp" or not url.hostname or port is None or url.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"expected tcp://HOST:PORT, got {text!r}")
    return Endpoint(url.hostname, _port(str(port)))


def parse_host_port(text: str) -> Endpoint:
    """Parse `HOST:PORT` (IPv6 hosts in brackets)."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return Endpoint(host, _port(port))


def _option_value(text: str) -> Any:
    # Numbers and true/false as JSON reads them; anything else is a string (a mode name).
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_injection(text: str) -> Injection:
    """Parse `CAR:FAULT:AFTER_S[:KEY=VALUE,...]`, e.g. `2:entrapment:5` or
    `1:late_answer:0:delay_ms=800`."""
    parts = text.split(":", 3)
    if len(parts) < 3:
        raise argparse.ArgumentTypeError(
            f"expected CAR:FAULT:AFTER_S[:KEY=VALUE,...], got {text!r}"
        )
    car_text, fault_text, after_text = parts[:3]
    raw: dict[str, object] = {}
    try:
        car = int(car_text)
        after_s = float(after_text)
        fault = parse_fault(fault_text)
        for pair in parts[3].split(",") if len(parts) == 4 else []:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"option {pair!r} is not KEY=VALUE")
            raw[key.strip()] = _option_value(value.strip())
        options = parse_options(fault, raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not 1 <= car <= MAX_CARS:
        raise argparse.ArgumentTypeError(f"{text!r}: car must be in 1..{MAX_CARS}")
    if not 0 <= after_s < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: AFTER_S must be a finite number >= 0")
    return Injection(car, fault, after_s, options)


def _argument(parse: Any) -> Any:
    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return wrapped


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _speedup(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is outside (0, 1000]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to `parser`; values are validated by their parsers."""
    parser.add_argument(
        "--modbus",
        type=parse_modbus_url,
        default=None,
        metavar="tcp://HOST:PORT",
        help="Modbus TCP listen address; port 0 picks a free one (default tcp://127.0.0.1:0 "
        "unless --serial or --pty is given; give it too to serve both)",
    )
    line = parser.add_mutually_exclusive_group()
    line.add_argument(
        "--serial",
        metavar="PATH",
        help="serve Modbus RTU on this tty (a pty end, or an adapter such as /dev/ttyUSB0)",
    )
    line.add_argument(
        "--pty",
        metavar="DIR",
        help="make a socat pty pair DIR/emulator + DIR/agent and serve RTU on DIR/emulator",
    )
    parser.add_argument(
        "--baud", type=_argument(parse_baud), default=19200, metavar="B",
        help="serial baud rate (default 19200)",
    )  # fmt: skip
    parser.add_argument(
        "--format", dest="serial_format", type=_argument(parse_format),
        default=SerialFormat(8, "E", 1), metavar="8E1",
        help="serial character format: data bits, parity N/E/O, stop bits (default 8E1)",
    )  # fmt: skip
    parser.add_argument(
        "--wire-timing", type=_argument(parse_wire_timing), default=None, metavar="BAUD,FORMAT",
        help="answer RTU requests as late as a wire at this speed would, e.g. 19200,8E1",
    )  # fmt: skip
    parser.add_argument(
        "--traffic", type=_argument(parse_traffic), default=Traffic.MIXED,
        metavar="|".join(t.value for t in Traffic),
        help="passenger traffic profile (default mixed)",
    )  # fmt: skip
    parser.add_argument(
        "--cars", type=_bounded_int(1, MAX_CARS), default=4, metavar="N",
        help="number of cars, slave ids 1..N (default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--landings", type=_bounded_int(2, MAX_LANDINGS), default=12, metavar="N",
        help="landings per car, 3000 mm apart (default 12)",
    )  # fmt: skip
    parser.add_argument(
        "--control",
        type=parse_host_port,
        default=Endpoint("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="JSON-lines control listen address (default 127.0.0.1:0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed of traffic (default 0)"
    )
    parser.add_argument("--model", default="RC-5000", help="controller model string")
    parser.add_argument("--firmware", default="5.1.3", help="firmware version string")
    parser.add_argument(
        "--serial-prefix",
        default="LW",
        help="serial number prefix; car k gets PREFIX + k as 6 digits (default LW)",
    )
    parser.add_argument(
        "--inject",
        type=parse_injection,
        action="append",
        default=[],
        metavar="CAR:FAULT:AFTER_S[:KEY=VALUE,...]",
        help="inject FAULT (with options) into CAR AFTER_S seconds after start (repeatable)",
    )
    parser.add_argument(
        "--speedup",
        type=_speedup,
        default=1.0,
        metavar="X",
        help="run simulated time X times faster than the wall clock (default 1)",
    )


def _group_config(args: argparse.Namespace) -> GroupConfig:
    """Build the group configuration, raising ValueError naming the offending option."""
    for injection in args.inject:
        if injection.car > args.cars:
            raise ValueError(f"--inject: car {injection.car} does not exist (--cars {args.cars})")
    try:
        car = CarConfig(landing_heights_mm=uniform_landings(args.landings))
    except ValueError as exc:
        raise ValueError(f"--landings: {exc}") from None
    try:
        return GroupConfig(
            cars=args.cars,
            car=car,
            seed=args.seed,
            model=args.model,
            firmware=args.firmware,
            serial_prefix=args.serial_prefix,
            speedup=args.speedup,
            traffic=args.traffic,
        )
    except ValueError as exc:
        # The message names the field ("model", "firmware", "serial"), which maps to an option.
        option = {"model": "--model", "firmware": "--firmware", "serial": "--serial-prefix"}
        for field, flag in option.items():
            if str(exc).startswith(field):
                raise ValueError(f"{flag}: {exc}") from None
        raise


def run(args: argparse.Namespace) -> int:
    """Run the emulator until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad options,
    1 when a listener cannot be opened."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        config = _group_config(args)
    except ValueError as exc:
        print(f"liftwatch-rig emulate: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, args))


class _StartError(Exception):
    """A transport could not start; the message names the option."""


async def _serve(config: GroupConfig, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    group = CarGroup(config, loop.time())
    serial_wanted = args.serial is not None or args.pty is not None
    modbus: Endpoint | None = args.modbus or (None if serial_wanted else DEFAULT_MODBUS)
    control: Endpoint = args.control
    async with contextlib.AsyncExitStack() as stack:
        ready: dict[str, object] = {"ready": True}
        try:
            if modbus is not None:
                emulator = ModbusEmulator(group, modbus.host, modbus.port)
                try:
                    port = await emulator.start()
                except OSError as exc:
                    raise _StartError(f"--modbus: {exc}") from None
                stack.push_async_callback(emulator.stop)
                ready["modbus"] = f"tcp://{_url_host(modbus.host)}:{port}"
            if serial_wanted:
                ready |= await _start_serial(group, args, stack)
            try:
                ctl = await start_control_server(group, control.host, control.port)
            except OSError as exc:
                raise _StartError(
                    f"--control: cannot listen on {control.host}:{control.port}: {exc}"
                ) from None
            stack.push_async_callback(ctl.wait_closed)
            stack.callback(ctl.close)
        except _StartError as exc:
            log.error("%s", exc)
            return 1
        if modbus is None:
            stack.push_async_callback(_physics(group, loop))
        timers = [loop.call_later(i.after_s, _inject_later, group, i) for i in args.inject]
        ready["control"] = f"{_url_host(control.host)}:{bound_port(ctl)}"
        ready["cars"] = config.cars
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            for timer in timers:
                timer.cancel()
    return 0


async def _start_serial(
    group: CarGroup, args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> dict[str, object]:
    """Open the RTU line (making the pty pair first for --pty); the ready-line fields."""
    path: str = args.serial
    agent_path = path
    if args.pty is not None:
        pair = PtyPair(Path(args.pty))
        try:
            await pair.start()
        except (OSError, RuntimeError) as exc:
            raise _StartError(f"--pty: {exc}") from None
        stack.push_async_callback(pair.stop)
        path, agent_path = str(pair.emulator_path), str(pair.agent_path)
    fmt: SerialFormat = args.serial_format
    timing: WireTiming | None = args.wire_timing
    line = RtuSlaveLine(
        group, path, baud=args.baud, fmt=fmt, wire_timing=timing, seed=group.config.seed
    )
    try:
        await line.start()
    except OSError as exc:
        raise _StartError(f"--serial: {exc}") from None
    stack.push_async_callback(line.stop)
    fields: dict[str, object] = {"serial": agent_path, "baud": args.baud, "format": str(fmt)}
    if timing is not None:
        fields["wire_timing"] = str(timing)
    return fields


def _physics(group: CarGroup, loop: asyncio.AbstractEventLoop) -> Any:
    """Advance the physics on a timer when no TCP server does it; returns its stopper."""

    async def run() -> None:
        while True:
            group.advance_to(loop.time())
            await asyncio.sleep(PHYSICS_PERIOD_S)

    task = loop.create_task(run())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


def _inject_later(group: CarGroup, injection: Injection) -> None:
    group.inject(injection.car, injection.fault, injection.options)
    log.info("injected %s into car %d", injection.fault.value, injection.car)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
