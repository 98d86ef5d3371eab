"""Run the whole system on embedded defaults and watch an entrapment being caught.

Starts a fleet manager (SQLite in a temporary directory, the district register of 10,525
units loaded, the dashboard on http://127.0.0.1:8080/ with a demo login per role), an
emulator with the four cars of one building, and an agent polling them over Modbus TCP,
all as real processes on free loopback ports. After a few seconds one car stops between
floors with a passenger inside; the agent raises ENTRAPMENT, the fleet stores it, and
after the rescue (the car relevels and opens) it is CLEARED. Everything the fleet sees is
printed as it happens. Runs until Ctrl-C, or for --duration seconds.

No broker, no database server, no network beyond loopback needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.store.base import AlarmRow, StoreError
from fleet.store.open import open_store
from hil_tests.system import FleetView, RunningSystem, demo_spec, running_system

# Shorter than the field defaults (30 s between floors) so the demo shows the whole story
# in well under a minute; the demo prints the thresholds it uses.
DEMO_DETECT = {"entrapment_between_floors_s": 8.0}
INJECT_AFTER_S = 5.0
RESCUE_AFTER_S = 6.0  # after the fleet has the RAISED
POLL_S = 0.5
DASHBOARD_PORT = 8080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `liftwatch-rig demo`."""
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print nothing while running; at the end print one JSON object "
        '{"units": [...], "events": [...], "coverage": {...}}',
    )
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=DASHBOARD_PORT,
        metavar="PORT",
        help=f"serve the dashboard at http://127.0.0.1:PORT/ (default {DASHBOARD_PORT}; "
        "0 lets the kernel pick a free port)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep databases and logs here (default: a temporary directory, removed at exit)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit status 0 when it ran and stopped cleanly, 1 otherwise."""
    if args.duration is not None and args.duration <= 0:
        print("liftwatch-rig demo: --duration must be > 0", file=sys.stderr)
        return 2
    if not 0 <= args.dashboard_port <= 65535:
        print("liftwatch-rig demo: --dashboard-port must be 0 to 65535", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args.duration, args.json, args.work_dir, args.dashboard_port))
    except KeyboardInterrupt:
        return 0


async def _demo(
    duration: float | None, as_json: bool, work_dir: Path | None, dashboard_port: int
) -> int:
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liftwatch-")))
        say: Callable[[str], None] = (
            (lambda _text: None) if as_json else (lambda text: print(text, flush=True))
        )
        spec = demo_spec(DEMO_DETECT, http_listen=f"127.0.0.1:{dashboard_port}")
        say(f"LiftWatch demo in {work_dir}: fleet, emulator ({len(spec.unit_ids)} cars), agent")
        async with running_system(spec, work_dir) as system:
            dashboard = f"http://{system.fleet.ready['http']}/"
            say(f"dashboard: {dashboard}  (log in as one of these demo accounts)")
            for user in spec.users:
                scope = f", {user.contractor}" if user.contractor else ""
                say(f"  {user.role:<11} {user.username:<12} password {user.password}{scope}")
            say(
                f"fleet on {system.fleet_address}, Modbus on {system.emulator.ready['modbus']}; "
                f"entrapment threshold between floors {DEMO_DETECT['entrapment_between_floors_s']}"
                " s (field default 30 s). Ctrl-C stops."
            )
            view = FleetView(system.query_address, spec.unit_ids)
            try:
                result = await _watch(system, view, duration, say)
            finally:
                await view.close()
        statuses = [await s.stop() for s in (system.agent, system.emulator, system.fleet)]
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            say(f"stopped (exit statuses agent/emulator/fleet: {statuses})")
        return 0 if statuses == [0, 0, 0] else 1


def _unit_line(unit: dict[str, Any]) -> str:
    """A unit's status and what it reported; a field it has not reported (a never-seen
    unit: no model, firmware or agent) is left out rather than printed empty."""
    parts = [str(unit["status"])]
    if unit.get("model"):
        parts.append(str(unit["model"]))
    if unit.get("firmware"):
        parts.append(f"firmware {unit['firmware']}")
    if unit.get("agent_version"):
        parts.append(f"agent {unit['agent_version']}")
    return ", ".join(parts)


async def _car_stopped(system: RunningSystem, unit_id: str) -> bool:
    """Whether the emulated car of ``unit_id`` stands still with the entrapment in."""
    reply = await system.control_request({"op": "state"})
    cars = reply.get("cars")
    car = system.car_of(unit_id)
    for state in cars if isinstance(cars, list) else []:
        if state.get("car") == car:
            return state.get("moving") is False and "entrapment" in state.get("faults", [])
    return False


def _alarms(system: RunningSystem) -> list[AlarmRow]:
    """The fleet's alarms, read from its database beside it (read-only; WAL lets it)."""
    try:
        store = open_store(str(system.fleet_db), readonly=True)
    except StoreError:
        return []  # not created yet, or the fleet is restarting
    try:
        return store.alarms(limit=50)
    finally:
        store.close()


_STEPS = (
    ("raised", "raised"),
    ("dispatched", "dispatched"),
    ("acknowledged", "acknowledged by {acknowledged_by}"),
    ("crew_dispatched", "crew dispatched: {crew}, expected {eta} UTC"),
    ("on_site", "on site: {on_site_by}"),
    ("cleared", "event cleared (passenger out)"),
    ("closed", "{state} by {closed_by}"),
)


def _alarm_steps(alarms: list[AlarmRow], printed: dict[int, tuple[str, ...]]) -> list[str]:
    """The lines of alarm steps not printed yet (``printed`` is updated): a step taken in
    the dashboard shows in the demo's output as it happens."""
    lines = []
    for alarm in sorted(alarms, key=lambda a: a.alarm_id):
        done = tuple(step for step, _ in _STEPS if getattr(alarm, step) is not None)
        for step, text in _STEPS:
            if step in done and step not in printed.get(alarm.alarm_id, ()):
                what = text.format(
                    acknowledged_by=alarm.acknowledged_by,
                    on_site_by=alarm.on_site_by,
                    closed_by=alarm.closed_by,
                    state=alarm.state.replace("_", " "),
                    crew=alarm.crew,
                    eta=f"{alarm.crew_eta:%H:%M}" if alarm.crew_eta else "-",
                )
                lines.append(f"ALARM {alarm.alarm_id} on {alarm.unit_id}: {what}")
        printed[alarm.alarm_id] = done
    return lines


async def _watch(
    system: RunningSystem, view: FleetView, duration: float | None, say: Any
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    start = loop.time()
    trapped = system.spec.unit_ids[1]
    injected_at: float | None = None
    rescue_at: float | None = None
    stopped = False  # the trapped car stood still with the fault in (the injection's effect)
    seen_events: set[int] = set()
    steps: dict[int, tuple[str, ...]] = {}  # alarm id -> its steps printed so far
    statuses: dict[str, str] = {}
    units: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    while not stop.is_set():
        now = loop.time() - start
        if duration is not None and now >= duration:
            break
        if dead := system.alive():
            say(f"process(es) exited unexpectedly: {', '.join(dead)}")
            break
        if injected_at is None and now >= INJECT_AFTER_S:
            await system.inject(trapped, "entrapment")
            injected_at = now
        if injected_at is not None and not stopped and await _car_stopped(system, trapped):
            # Said when the emulated car has stopped, not when asked to: it first runs on to
            # a point between floors, and the detection threshold counts from here.
            stopped = True
            say(
                f"[{now:6.1f}s] injected: car {system.car_of(trapped)} ({trapped}) stopped "
                f"between floors with a passenger inside (asked at {injected_at:.1f}s)"
            )
        units = await view.units()
        events = await view.events()
        for unit in units:
            if statuses.get(unit["unit_id"]) != unit["status"]:
                statuses[unit["unit_id"]] = unit["status"]
                say(f"[{now:6.1f}s] unit {unit['unit_id']}: {_unit_line(unit)}")
        for event in events:
            if event["seq"] in seen_events:
                continue
            seen_events.add(event["seq"])
            say(
                f"[{now:6.1f}s] EVENT {event['type']} {event['phase']} on {event['unit_id']} "
                f"floor {event['floor']}: {event['reason']}"
            )
            if (event["type"], event["phase"], event["unit_id"]) == (
                "ENTRAPMENT",
                "RAISED",
                trapped,
            ) and rescue_at is None:
                rescue_at = now + RESCUE_AFTER_S
        for line in _alarm_steps(await asyncio.to_thread(_alarms, system), steps):
            say(f"[{now:6.1f}s] {line}")
        if rescue_at is not None and now >= rescue_at:
            await system.clear(trapped, "entrapment")
            say(f"[{now:6.1f}s] rescue: car {system.car_of(trapped)} relevels and opens its doors")
            rescue_at = float("inf")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_S)
    return {
        "units": units,
        "events": events,
        "coverage": await view.coverage(),
        "dashboard": f"http://{system.fleet.ready['http']}/",
        "logins": [
            {"username": u.username, "role": u.role, "password": u.password}
            for u in system.spec.users
        ],
    }
