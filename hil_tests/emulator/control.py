"""The control interface of a running emulator: JSON lines over TCP.

Each request is one JSON object on one line; each gets one JSON object line back.

    {"op": "inject", "car": 2, "fault": "entrapment"}  -> {"ok": true}
    {"op": "inject", "car": 2, "fault": "late_answer", "delay_ms": 800}  -> {"ok": true}
    {"op": "clear", "car": 2, "fault": "entrapment"}   -> {"ok": true}
    {"op": "inject", "car": 2, "fault": "door_lock_bypass", "at_phase": "opening"}
        -> {"ok": true}: injected when the car next reaches that moment of its cycle
        (`cycle.CYCLE_PHASES`), at once if it is there
    {"op": "visible", "car": 2, "fault": "door_lock_bypass"}
        -> {"ok": true, "injected": 812.31, "visible": 815.02}: the emulator's clock (its
        event loop's, `time.monotonic()`: comparable across processes of one host) when
        the fault was injected and when the register image first showed it
        (`cycle.signature`); null while armed, not yet shown, or without a signature
    {"op": "faults"} -> {"ok": true, "faults": {"entrapment": {"kind": "car",
                         "options": [], "description": "..."}, ...}}
    {"op": "state"} -> {"ok": true, "cars": [{"car": 1, "floor": 3, "moving": false,
                        "door": "open", "occupied": true, "passengers": 3,
                        "travel": 1, "faults": [], ...}, ...]}

Keys of an inject request other than op, car and fault are the fault's options (see
`faults.FaultOptions`); an option the fault does not take is an error, not ignored.
Anything else gets {"ok": false, "error": "<what is wrong>"}; the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from hil_tests.emulator.cycle import CYCLE_PHASES, cycle_phase
from hil_tests.emulator.faults import (
    FAULTS,
    NO_OPTIONS,
    Fault,
    FaultOptions,
    parse_fault,
    parse_options,
)
from hil_tests.emulator.group import CarGroup

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
Reply = dict[str, object]


def car_state(group: CarGroup, number: int) -> Reply:
    """The control-protocol view of car `number`."""
    car = group.car(number)
    s = car.snapshot()
    return {
        "car": number,
        "floor": s.floor,
        "position_mm": s.position_mm,
        "speed_mm_s": s.speed_mm_s,
        "moving": s.moving,
        "door": s.door.value,
        "door_zone": s.door_zone,
        "levelled": s.levelled,
        "occupied": s.occupied,
        "load": s.load_pct,
        "passengers": len(car.passengers),
        "travel": car.travel,
        "phase": s.phase.value,
        "cycle_phase": cycle_phase(car),
        "faults": sorted(f.value for f in group.faults(number)),
        "fault_code": s.fault_code,
        "mode": s.service_mode.name.lower(),
        "firmware": group.identities[number].firmware,
        "counters": {
            "trips": s.counters.trips,
            "door_cycles": s.counters.door_cycles,
            "run_hours": s.counters.run_hours,
        },
    }


def handle_request(group: CarGroup, request: object) -> Reply:
    """Apply one decoded request to `group` and return the reply; never raises on bad input."""
    if not isinstance(request, dict):
        return _error("request must be a JSON object")
    op = request.get("op")
    if op == "state":
        return {"ok": True, "cars": [car_state(group, n) for n in group.cars]}
    if op == "faults":
        return {"ok": True, "faults": fault_catalogue()}
    if op in ("inject", "clear", "visible"):
        extra = {k: v for k, v in request.items() if k not in ("op", "car", "fault", "at_phase")}
        at_phase = request.get("at_phase")
        try:
            number = _car_number(group, request.get("car"))
            fault = parse_fault(request.get("fault"))
            if op != "inject" and (extra or at_phase is not None):
                keys = sorted([*extra, *(["at_phase"] if at_phase is not None else [])])
                raise ValueError(f"{op} takes no options, got {', '.join(keys)}")
            if at_phase is not None and at_phase not in CYCLE_PHASES:
                raise ValueError(
                    f"at_phase must be one of {', '.join(CYCLE_PHASES)}, got {at_phase!r}"
                )
            options = parse_options(fault, extra) if op == "inject" else NO_OPTIONS
        except ValueError as exc:
            return _error(str(exc))
        if op == "visible":
            return _visibility(group, number, fault)
        if isinstance(at_phase, str):
            group.inject_at(number, fault, options, at_phase)
            log.info("inject %s on car %d at its next %s", fault.value, number, at_phase)
        else:
            _apply(group, op, number, fault, options)
        return {"ok": True}
    return _error(f"unknown op {op!r}; expected one of: inject, clear, visible, state, faults")


def _visibility(group: CarGroup, number: int, fault: Fault) -> Reply:
    found = group.visibility(number, fault)
    if found is None:
        return {"ok": True, "injected": None, "visible": None}
    injected, visible = found
    return {
        "ok": True,
        "injected": group.clock_of(injected),
        "visible": group.clock_of(visible) if visible is not None else None,
    }


def fault_catalogue() -> dict[str, object]:
    """Every fault with its kind, options and description, for `{"op": "faults"}`."""
    return {
        f.value: {
            "kind": spec.kind.value,
            "options": sorted(spec.options),
            "description": spec.description,
        }
        for f, spec in FAULTS.items()
    }


def _apply(group: CarGroup, op: str, number: int, fault: Fault, options: FaultOptions) -> None:
    if op == "inject":
        group.inject(number, fault, options)
    else:
        group.clear(number, fault)
    log.info("%s %s on car %d", op, fault.value, number)


def _car_number(group: CarGroup, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in group.cars:
        raise ValueError(f"car must be an integer in 1..{len(group.cars)}, got {value!r}")
    return value


def _error(message: str) -> Reply:
    return {"ok": False, "error": message}


def _encode(reply: Reply) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def handle_line(group: CarGroup, line: bytes) -> Reply:
    """Decode one request line and handle it; malformed JSON becomes an error reply."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(f"request is not valid JSON: {exc}")
    return handle_request(group, request)


async def _serve_connection(
    group: CarGroup, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial.strip():
                    return
                line = exc.partial  # a last request without its newline still gets served
            except asyncio.LimitOverrunError:
                writer.write(_encode(_error(f"request longer than {MAX_LINE_BYTES} bytes")))
                await writer.drain()
                return
            if line.strip():
                try:
                    reply = handle_line(group, line)
                except Exception as exc:  # a bug in one request must not end the session
                    log.exception("control request failed: %r", line)
                    reply = _error(f"internal error: {exc}")
                writer.write(_encode(reply))
                await writer.drain()
    except ConnectionError:
        return  # the client went away; nothing to tell it
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start_control_server(group: CarGroup, host: str, port: int) -> asyncio.Server:
    """Listen for control connections on host:port (0 = a free port); raises OSError."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(group, reader, writer)

    return await asyncio.start_server(on_connect, host, port, limit=MAX_LINE_BYTES)


def bound_port(server: asyncio.Server) -> int:
    """The TCP port `server` listens on."""
    return int(server.sockets[0].getsockname()[1])


async def control(host: str, port: int, request: dict[str, object]) -> dict[str, object]:
    """Send one request to an emulator's control port and return its decoded reply.

    Raises OSError when the emulator cannot be reached or closes without answering, and
    ValueError when the reply is not a JSON object.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if not line:
        raise ConnectionError(f"emulator control {host}:{port} closed without a reply")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ValueError(f"control reply is not a JSON object: {line!r}")
    return reply
