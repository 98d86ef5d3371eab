"""End to end: emulator, fleet and agent as real processes; an entrapment injected and caught."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hil_tests.processes import run_cli
from hil_tests.system import RunningSystem, demo_spec, running_system
from tests.support import eventually

pytestmark = pytest.mark.e2e


async def fleet_cli(system: RunningSystem, *args: str) -> Any:
    return await run_cli("fleet", [*args, "--db", str(system.fleet_db), "--json"])


async def scenario(work_dir: Path) -> None:
    spec = demo_spec({"entrapment_between_floors_s": 2.0})
    async with running_system(spec, work_dir) as system:
        processes = (system.fleet, system.emulator, system.agent)

        async def units() -> list[dict[str, Any]]:
            listed = await fleet_cli(system, "units", "--monitored")
            return [u for u in listed["units"] if u["unit_id"] in spec.unit_ids]

        listed = await eventually(
            units,
            lambda us: len(us) == 4 and all(u["status"] == "online" and u["firmware"] for u in us),
            "all four cars online with firmware",
            watching=processes,
            interval_s=0.2,
        )
        assert {u["unit_id"] for u in listed} == set(spec.unit_ids)
        assert {u["firmware"] for u in listed} == {spec.firmware}
        assert {u["model"] for u in listed} == {spec.model}

        trapped = spec.unit_ids[2]

        async def entrapments() -> list[dict[str, Any]]:
            events = await fleet_cli(system, "events", "--type", "ENTRAPMENT")
            return list(events["events"])

        await system.inject(trapped, "entrapment")
        await eventually(
            entrapments,
            lambda es: any(e["phase"] == "RAISED" for e in es),
            "ENTRAPMENT RAISED",
            watching=processes,
            interval_s=0.2,
        )
        await system.clear(trapped, "entrapment")
        events = await eventually(
            entrapments,
            lambda es: any(e["phase"] == "CLEARED" for e in es),
            "ENTRAPMENT CLEARED",
            watching=processes,
            interval_s=0.2,
        )
        assert {e["unit_id"] for e in events} == {trapped}, "entrapment on another car"
        assert [e["phase"] for e in events] == ["RAISED", "CLEARED"]
        raised, cleared = events
        assert raised["event_id"] == cleared["event_id"]
        assert raised["onset"] <= raised["time"] <= cleared["time"]

        coverage = await fleet_cli(system, "coverage")
        assert coverage["online"] >= 4
        assert coverage["registered"] > 10_000  # the district register was loaded

    for service in (system.agent, system.emulator, system.fleet):
        assert service.process.returncode == 0, f"{service.name}:\n{service.log_tail()}"


def test_entrapment_reaches_the_fleet_raised_then_cleared(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))
