"""Serve the reference register map for N emulated elevator cars.

Each car is one Modbus slave (ids 1..N) on a Modbus TCP listener. Cars travel between
landings, open and close their doors and carry seeded random passengers. Faults are injected
with --inject or, while running, through the JSON-lines control port:

  {"op": "inject", "car": 2, "fault": "entrapment"}   -> {"ok": true}
  {"op": "clear", "car": 2, "fault": "entrapment"}    -> {"ok": true}
  {"op": "state"}                                      -> {"ok": true, "cars": [...]}

Faults: entrapment, door_close_failure, door_open_failure.

When both listeners are up, exactly one JSON line goes to stdout:
  {"ready": true, "modbus": "tcp://HOST:PORT", "control": "HOST:PORT", "cars": N}
Logs go to stderr. SIGTERM or SIGINT stops the emulator with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from hil_tests.emulator.car import CarConfig, uniform_landings
from hil_tests.emulator.control import bound_port, start_control_server
from hil_tests.emulator.faults import Fault, parse_fault
from hil_tests.emulator.group import MAX_CARS, CarGroup, GroupConfig
from hil_tests.emulator.server import ModbusEmulator

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


def parse_injection(text: str) -> Injection:
    """Parse `CAR:FAULT:AFTER_S`, e.g. `2:entrapment:5`."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected CAR:FAULT:AFTER_S, got {text!r}")
    car_text, fault_text, after_text = parts
    try:
        car = int(car_text)
        after_s = float(after_text)
        fault = parse_fault(fault_text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not 1 <= car <= MAX_CARS:
        raise argparse.ArgumentTypeError(f"{text!r}: car must be in 1..{MAX_CARS}")
    if not 0 <= after_s < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: AFTER_S must be a finite number >= 0")
    return Injection(car, fault, after_s)


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
        default=Endpoint("127.0.0.1", 0),
        metavar="tcp://HOST:PORT",
        help="Modbus TCP listen address; port 0 picks a free one (default tcp://127.0.0.1:0)",
    )
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
        metavar="CAR:FAULT:AFTER_S",
        help="inject FAULT into CAR AFTER_S seconds after start (repeatable)",
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
    return asyncio.run(_serve(config, args.modbus, args.control, args.inject))


async def _serve(
    config: GroupConfig, modbus: Endpoint, control: Endpoint, injections: list[Injection]
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    group = CarGroup(config, loop.time())
    emulator = ModbusEmulator(group, modbus.host, modbus.port)
    try:
        modbus_port = await emulator.start()
    except OSError as exc:
        log.error("--modbus: %s", exc)
        return 1
    try:
        control_server = await start_control_server(group, control.host, control.port)
    except OSError as exc:
        log.error("--control: cannot listen on %s:%d: %s", control.host, control.port, exc)
        await emulator.stop()
        return 1
    timers = [loop.call_later(i.after_s, _inject_later, group, i) for i in injections]
    ready = {
        "ready": True,
        "modbus": f"tcp://{_url_host(modbus.host)}:{modbus_port}",
        "control": f"{_url_host(control.host)}:{bound_port(control_server)}",
        "cars": config.cars,
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for timer in timers:
            timer.cancel()
        control_server.close()
        await control_server.wait_closed()
        await emulator.stop()
    return 0


def _inject_later(group: CarGroup, injection: Injection) -> None:
    group.inject(injection.car, injection.fault)
    log.info("injected %s into car %d", injection.fault.value, injection.car)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
