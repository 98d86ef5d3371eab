"""Phase independence over the real processes: a few events injected at several moments
of the car's cycle through emulator, agent and fleet, each raised within its threshold +
one poll period + `TRANSPORT_ALLOWANCE_S` of the moment the emulator's register image
first showed the fault; their near misses raise nothing.

The emulator arms each injection for a cycle phase (`{"op": "inject", ..., "at_phase"}`)
and says when the fault became visible in its registers (`{"op": "visible"}`, on its
monotonic clock, which this process shares). The agent stamps each event with the time of
the sample that decided it; the fleet stores that time. Each car plays its trials in turn,
the four cars at once. `bench/fidelity.py` does the same for every event and many more
phases over the emulator in-process.

`TRANSPORT_ALLOWANCE_S` (0.3 s) covers what the in-process bench does not have: the
agent's poll cycle over Modbus TCP (four cars in turn, each read a few milliseconds), the
emulator advancing its physics in 50 ms steps between requests, the agent's sample time
being the end of the read, and converting the emulator's monotonic reading to wall-clock
time here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hil_tests.system import FleetView, RunningSystem, SystemSpec, running_system
from tests.support import eventually

pytestmark = pytest.mark.e2e

POLL_S = 0.1  # SystemSpec.poll_hz = 10
TRANSPORT_ALLOWANCE_S = 0.3
DEADLINE_S = 90.0
# Short thresholds keep the run short; the rules are the same at any threshold. Rules
# this sweep does not judge are set long, so their consequences do not crowd the record.
DETECT = {
    "entrapment_between_floors_s": 5.0,
    "entrapment_at_landing_s": 8.0,
    "door_lock_bypass_s": 2.0,
    "stopped_outside_door_zone_s": 300.0,
}
UNITS = tuple(f"RIG-fidelity-{car}" for car in range(1, 5))


@dataclass(frozen=True, slots=True)
class Trial:
    """One injection at one cycle phase; a near miss when ``near``."""

    event: str
    fault: str
    phase: str
    threshold_s: float
    options: dict[str, object] = field(default_factory=dict)
    near: bool = False
    park_here: bool = False


@dataclass
class Outcome:
    trial: Trial
    latency_s: float | None = None  # raised - visible
    raised_in_near_miss: list[dict[str, Any]] = field(default_factory=list)
    shown: bool = False


T1, T2 = DETECT["entrapment_between_floors_s"], DETECT["entrapment_at_landing_s"]
AT_ONCE: dict[str, object] = {"at_once": True}
PLAN: dict[int, tuple[Trial, ...]] = {
    1: (
        Trial("ENTRAPMENT", "entrapment", "accelerating", T1),
        Trial("ENTRAPMENT", "entrapment", "open", T1),
    ),
    2: (
        Trial("DOOR_LOCK_BYPASS", "door_lock_bypass", "opening", DETECT["door_lock_bypass_s"]),
        Trial("DOOR_LOCK_BYPASS", "door_lock_bypass", "open", DETECT["door_lock_bypass_s"]),
    ),
    3: (
        Trial("DOOR_OPEN_WHILE_MOVING", "door_open_while_moving", "accelerating", 0.1, AT_ONCE),
        # Latent: forced ajar on the next run at half rated speed. (Not at_once mid-run
        # here: a door forced just before the car passes another landing's door zone is
        # raised late, a known rule limit the bench reports; the rig must not flake on it.)
        Trial("DOOR_OPEN_WHILE_MOVING", "door_open_while_moving", "open", 0.1),
        # Inside the door zone a door may leave closed while the car levels.
        Trial("DOOR_OPEN_WHILE_MOVING", "door_open_while_moving", "levelling", 0.1, AT_ONCE, True),
    ),
    4: (
        Trial("ENTRAPMENT", "waiting_passenger", "parked", T2, park_here=True),
        # Standing shut in a level car for less than T2, then stepping out.
        Trial("ENTRAPMENT", "waiting_passenger", "parked", T2, {"wait_s": 4.0}, True, True),
    ),
}


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _wall(clock: float) -> float:
    """A reading of the emulator's monotonic clock as wall-clock epoch seconds."""
    return time.time() - (time.monotonic() - clock)


class Rig:
    """The running system, its fleet view and the deadline helper."""

    def __init__(self, system: RunningSystem, view: FleetView) -> None:
        self.system, self.view = system, view

    async def until(self, probe: Any, what: str) -> Any:
        """Await ``probe()`` until it returns something other than None; fail with the logs
        after `DEADLINE_S` (a deadline, not a sleep hoping for a race to end)."""
        system = self.system
        return await eventually(
            probe,
            lambda found: found is not None,
            what,
            deadline_s=DEADLINE_S,
            interval_s=0.1,
            watching=(system.fleet, system.emulator, system.agent),
        )

    async def events(self, unit: str, event: str, phase: str, after: float) -> list[dict[str, Any]]:
        return [
            e
            for e in await self.view.events()
            if (e["unit_id"], e["type"], e["phase"]) == (unit, event, phase)
            and _epoch(e["time"]) >= after
        ]

    async def request(self, **request: object) -> dict[str, object]:
        return await self.system.control_request(request)


async def play_car(rig: Rig, car: int, trials: tuple[Trial, ...]) -> list[Outcome]:
    """Play ``trials`` on ``car`` one after the other, each to its end (or its CLEARED)."""
    return [await play_trial(rig, car, trial) for trial in trials]


async def play_trial(rig: Rig, car: int, trial: Trial) -> Outcome:
    """Arm ``trial`` for its phase, wait for the fault to show, judge the event."""
    unit = UNITS[car - 1]
    outcome = Outcome(trial)
    began = time.time()
    if trial.park_here:
        state = await rig.request(op="state")
        cars = state["cars"]
        assert isinstance(cars, list)
        await rig.request(op="inject", car=car, fault="park", landing=cars[car - 1]["floor"])
    await rig.request(
        op="inject", car=car, fault=trial.fault, at_phase=trial.phase, **trial.options
    )

    async def shown() -> dict[str, object] | None:
        reply = await rig.request(op="visible", car=car, fault=trial.fault)
        return reply if reply["injected" if trial.near else "visible"] is not None else None

    seen = await rig.until(shown, f"{trial.fault} at {trial.phase} on car {car}")
    outcome.shown = True
    if trial.near:
        # Watch a whole threshold and more after the near miss took place.
        injected = _wall(float(seen["injected"]))
        loop = asyncio.get_running_loop()
        end = loop.time() + trial.threshold_s + 4.0
        while loop.time() < end and not outcome.raised_in_near_miss:
            outcome.raised_in_near_miss = await rig.events(unit, trial.event, "RAISED", injected)
            await asyncio.sleep(0.25)
    else:
        visible = _wall(float(seen["visible"]))

        async def raised() -> dict[str, Any] | None:
            found = await rig.events(unit, trial.event, "RAISED", began)
            return found[0] if found else None

        event = await rig.until(raised, f"{trial.event} RAISED on car {car}")
        outcome.latency_s = _epoch(event["time"]) - visible
    await rig.request(op="clear", car=car, fault=trial.fault)
    if trial.park_here:
        await rig.request(op="clear", car=car, fault="park")
    if not trial.near:

        async def cleared() -> list[dict[str, Any]] | None:
            return await rig.events(unit, trial.event, "CLEARED", began) or None

        await rig.until(cleared, f"{trial.event} CLEARED on car {car}")
    return outcome


async def sweep(work_dir: Path) -> list[Outcome]:
    spec = SystemSpec(unit_ids=UNITS, register_csv=None, detect=DETECT, seed=13, transport="tcp")
    async with running_system(spec, work_dir) as system:
        view = FleetView(system.query_address, spec.unit_ids)
        try:
            rig = Rig(system, view)

            async def online() -> bool | None:
                units = await view.units()
                ready = len(units) == len(UNITS) and all(u["status"] == "online" for u in units)
                return True if ready else None

            await rig.until(online, "all cars online")
            per_car = await asyncio.gather(*(play_car(rig, c, t) for c, t in PLAN.items()))
        finally:
            await view.close()
    return [o for outcomes in per_car for o in outcomes]


def test_events_are_raised_within_threshold_at_every_phase(tmp_path: Path) -> None:
    outcomes = asyncio.run(sweep(tmp_path))
    assert len(outcomes) == sum(len(t) for t in PLAN.values())
    for o in outcomes:
        t = o.trial
        where = f"{t.event} ({t.fault} at {t.phase})"
        late = "near miss" if t.near else f"{o.latency_s:.2f} s after it showed"
        print(f"{where}: {late}")  # shown with -s and on failure
        assert o.shown, f"{where}: the emulator never staged it"
        if t.near:
            assert o.raised_in_near_miss == [], f"{where}: a near miss raised it"
            continue
        assert o.latency_s is not None
        limit = t.threshold_s + POLL_S + TRANSPORT_ALLOWANCE_S
        assert o.latency_s <= limit, f"{where}: raised {o.latency_s:.2f} s after it showed"
        # Not before its threshold either: the rule waited for what it must.
        assert o.latency_s >= t.threshold_s - POLL_S - TRANSPORT_ALLOWANCE_S, (
            f"{where}: raised {o.latency_s:.2f} s after it showed, before its threshold"
        )
