"""Remote configuration end to end (issue 20): a real fleet (in-process, SQLite, its
real gateway), a real agent polling emulated controllers over Modbus TCP, documents set
in the fleet's store as `liftwatch-fleet config set` does.

- An invalid document is rejected with check-config's problems; nothing on the agent
  changes (same monitors, same bus task, nothing kept on disk) and the fleet shows the
  problems against the version.
- A valid one changes car-1's thresholds: car-1 gets a new monitor, car-2 keeps its own
  and its bus's poller is never stopped (every poll cycle of the bus carries a car-2
  sample, before, during and after the change); the change is in car-1's history and
  not in car-2's; the document is kept, so a restart runs it.
- A document touching [fleet] is refused by the agent naming the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

from agent.app import Agent
from agent.bus.scheduler import RawValues
from agent.remote_config import DOCUMENT_FILE, load_running_config
from fleet.config import FleetConfig, StoreConfig
from fleet.configs.document import digest
from fleet.store.configs import ConfigStore, agent_document
from fleet.store.open import open_store
from hil_tests.emulator.group import CarGroup, GroupConfig
from hil_tests.emulator.server import ModbusEmulator
from protos.liftwatch.v1 import records_pb2
from tests.fleet.harness import Fleet, running_fleet
from tests.support import eventually

AGENT = "edge-remote"

BUS = '[[bus]]\nname = "line"\nurl = "tcp://127.0.0.1:{port}"\npoll_hz = 20.0\ntimeout_s = 0.5\n'


def units(car1_detect: str = "") -> str:
    """The [[unit]] tables: car-1 with ``car1_detect`` in its [unit.detect], car-2 plain."""
    car1 = '[[unit]]\nid = "car-1"\nbus = "line"\nslave = 1\n'
    if car1_detect:
        car1 += f"[unit.detect]\n{car1_detect}\n"
    return car1 + '[[unit]]\nid = "car-2"\nbus = "line"\nslave = 2\n'


def local_file(data_dir: Path, grpc_address: str, modbus_port: int) -> str:
    return (
        f'[agent]\nid = "{AGENT}"\ndata_dir = "{data_dir}"\nmetrics_listen = ""\n'
        f'[fleet]\nendpoints = ["{grpc_address}"]\ninsecure = true\nlinger_s = 0.2\n'
        + BUS.format(port=modbus_port)
        + units()
    )


def set_document(db: Path, text: str) -> int:
    """Keep a new version of the agent's document, as `config set` does."""
    store = open_store(str(db))
    try:
        return ConfigStore(store).add_version(agent_document(AGENT), text, digest(text), 1)
    finally:
        store.close()


def state(db: Path) -> Any:
    store = open_store(str(db))
    try:
        (found,) = ConfigStore(store).states([AGENT])
        history, _ = store.history("")
        return found, [(r.unit_id, r.kind, json.loads(r.detail)) for r in history]
    finally:
        store.close()


async def settled(db: Path, version: int, *, applied: bool = False) -> None:
    """Wait until the agent reported ``version`` (``applied``: until the fleet has it
    applied)."""

    async def probe() -> bool:
        found, _ = await asyncio.to_thread(state, db)
        return bool((found.applied_version if applied else found.report_version) == version)

    await eventually(probe, deadline_s=30, interval_s=0.3)


class CycleLog:
    """Per poll cycle of each bus, the units it delivered a sample of (the sink's own
    deliveries, recorded in order as the schedulers make them); `cycles` are the first
    bus's ("line")."""

    def __init__(self, app: Agent) -> None:
        self.by_bus: dict[str, list[set[str]]] = {}
        on_sample, on_cycle_end = app.on_sample, app.on_cycle_end

        def sample(bus: str, slave: int, values: RawValues, t: float) -> None:
            on_sample(bus, slave, values, t)
            self.by_bus.setdefault(bus, [set()])[-1].add(app.routes[(bus, slave)][0])

        def cycle_end(bus: str, t: float) -> None:
            on_cycle_end(bus, t)
            self.by_bus.setdefault(bus, [set()]).append(set())

        app.on_sample = sample  # type: ignore[method-assign]
        app.on_cycle_end = cycle_end  # type: ignore[method-assign]

    @property
    def cycles(self) -> list[set[str]]:
        return self.by_bus.get("line", [set()])


def run_scenario(tmp_path: Path, scenario: Any, local: Any = local_file) -> None:
    db = tmp_path / "fleet.db"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        group = CarGroup(GroupConfig(cars=3, seed=7, speedup=20.0), loop.time())
        server = ModbusEmulator(group, "127.0.0.1", 0)
        port = await server.start()
        try:
            async with running_fleet(
                FleetConfig(store=StoreConfig(path=str(db))), http=True
            ) as fleet:
                # The agent stamps records with the real clock: so must the fleet.
                fleet.clock.now = dt.datetime.now(dt.UTC)
                path = tmp_path / "agent.toml"
                path.write_text(local(tmp_path / "data", fleet.address, port), encoding="utf-8")
                config, applied = load_running_config(path)
                app = Agent(config, monotonic=loop.time, config_path=path, applied=applied)
                log = CycleLog(app)
                task = asyncio.create_task(app.run())
                try:
                    await eventually(
                        lambda: (
                            app.uplink.connected
                            and all(len(log.by_bus.get(b.name, ())) > 5 for b in app.config.buses)
                        )
                    )
                    await asyncio.wait_for(scenario(fleet, app, log, db, path, port), 60)
                finally:
                    app.stop()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await server.stop()

    asyncio.run(main())


def test_an_invalid_document_is_rejected_with_its_problems_and_nothing_changes(
    tmp_path: Path,
) -> None:
    async def scenario(
        fleet: Fleet, app: Agent, log: CycleLog, db: Path, path: Path, port: int
    ) -> None:
        monitors = dict(app.monitors)
        bus_task = app._bus_tasks["line"]
        text = (
            BUS.format(port=port)
            + units("door_close_failure_s = -5")
            + ('[[unit]]\nid = "car-3"\nbus = "nowhere"\nslave = 3\n')
        )
        version = await asyncio.to_thread(set_document, db, text)

        await settled(db, version)
        found, history = await asyncio.to_thread(state, db)
        assert not found.report_applied
        assert found.desired_version == version and found.applied_version == 0
        keys = [p.split(":")[0] for p in found.problems]
        assert "unit[0].detect.door_close_failure_s" in keys, found.problems
        assert "unit[2].bus" in keys, found.problems
        # Nothing changed on the agent: same monitors, same poller, nothing kept.
        assert app.monitors == monitors
        assert all(app.monitors[u] is monitors[u] for u in monitors)
        assert app._bus_tasks["line"] is bus_task and not bus_task.done()
        assert app.remote is not None and app.remote.version == 0
        assert not (tmp_path / "data" / DOCUMENT_FILE).exists()
        assert not any(kind == "config" for _, kind, _ in history)
        # The administrators' view says so too (GET /api/configs, the dashboard's page).
        status, body = await fleet.get("/api/configs")
        assert status == 200
        (shown,) = body["agents"]
        assert shown["state"] == "rejected" and shown["desired_version"] == version
        assert shown["problems"] == list(found.problems)
        # Counted on both ends.
        rejected = {"outcome": "rejected"}
        assert fleet.metrics.registry.get_sample_value(
            "liftwatch_fleet_config_reports_total", rejected
        )
        assert app.metrics.registry.get_sample_value(
            "liftwatch_agent_config_documents_total", rejected
        )

    run_scenario(tmp_path, scenario)


def test_a_valid_document_is_applied_without_stopping_an_unchanged_unit(
    tmp_path: Path,
) -> None:
    async def scenario(
        fleet: Fleet, app: Agent, log: CycleLog, db: Path, path: Path, port: int
    ) -> None:
        car1, car2 = app.monitors["car-1"], app.monitors["car-2"]
        assert car1.unit.detect.door_close_failure_s == 20.0
        bus_task = app._bus_tasks["line"]
        start = len(log.cycles)
        text = BUS.format(port=port) + units("door_close_failure_s = 33")
        version = await asyncio.to_thread(set_document, db, text)

        await settled(db, version, applied=True)
        seen = len(log.cycles)
        await eventually(lambda: len(log.cycles) > seen + 10)
        # car-1 runs the new threshold on a new monitor; car-2 keeps its monitor.
        assert app.monitors["car-1"] is not car1
        assert app.monitors["car-1"].unit.detect.door_close_failure_s == 33.0
        assert app.monitors["car-2"] is car2
        # The bus's poller was never stopped, and every cycle of it from before the
        # change to after it delivered a car-2 sample: car-2's polling went on.
        assert app._bus_tasks["line"] is bus_task and not bus_task.done()
        window = log.cycles[start:-1]
        assert len(window) > 10
        assert all("car-2" in cycle for cycle in window), [
            i for i, c in enumerate(window) if "car-2" not in c
        ]
        found, history = await asyncio.to_thread(state, db)
        assert found.report_applied and not found.problems and found.in_sync
        configs = [(unit, detail) for unit, kind, detail in history if kind == "config"]
        assert [unit for unit, _ in configs] == ["car-1"], configs
        assert configs[0][1]["version"] == version
        assert configs[0][1]["change"] == "changed"
        # Kept for a restart: the box's file with the document runs the new threshold.
        restarted, kept = load_running_config(path)
        assert kept is not None and kept.version == version
        assert restarted.units[0].detect.door_close_failure_s == 33.0
        assert app.hello().config_version == version
        status, body = await fleet.get("/api/configs")
        assert status == 200 and body["agents"][0]["state"] == "in_sync"
        assert fleet.metrics.registry.get_sample_value(
            "liftwatch_fleet_config_reports_total", {"outcome": "applied"}
        )
        assert fleet.metrics.registry.get_sample_value(
            "liftwatch_fleet_config_documents_sent_total"
        )

    run_scenario(tmp_path, scenario)


def test_a_document_may_not_change_how_the_agent_reaches_its_fleet(tmp_path: Path) -> None:
    async def scenario(
        fleet: Fleet, app: Agent, log: CycleLog, db: Path, path: Path, port: int
    ) -> None:
        text = '[fleet]\nendpoints = ["10.0.0.1:1"]\n' + BUS.format(port=port) + units()
        # The fleet itself refuses to keep it (fleet.configs.document.parse); sent anyway
        # (an older fleet, a hand-edited row), the agent refuses it.
        version = await asyncio.to_thread(set_document, db, text)

        await settled(db, version)
        found, _ = await asyncio.to_thread(state, db)
        assert not found.report_applied
        assert [p.split(":")[0] for p in found.problems] == ["fleet"]
        assert app.config.fleet.endpoints == (fleet.address,)
        assert app.uplink.connected

    run_scenario(tmp_path, scenario)


TWO_BUSES = (
    '[[bus]]\nname = "{a}"\nurl = "tcp://127.0.0.1:{port}"\npoll_hz = {hz}\ntimeout_s = 0.5\n'
    '[[bus]]\nname = "b"\nurl = "tcp://127.0.0.1:{port}"\npoll_hz = 20.0\ntimeout_s = 0.5\n'
    '[[unit]]\nid = "car-1"\nbus = "{a}"\nslave = 1\n'
    '[[unit]]\nid = "car-2"\nbus = "b"\nslave = 2\n'
)


def two_buses(data_dir: Path, grpc_address: str, modbus_port: int) -> str:
    """car-1 on bus "a", car-2 on bus "b" (two connections to the one emulator)."""
    return (
        f'[agent]\nid = "{AGENT}"\ndata_dir = "{data_dir}"\nmetrics_listen = ""\n'
        f'[fleet]\nendpoints = ["{grpc_address}"]\ninsecure = true\nlinger_s = 0.2\n'
        + TWO_BUSES.format(a="a", port=modbus_port, hz=20.0)
    )


def records_of(db: Path, unit_id: str) -> int:
    store = open_store(str(db))
    try:
        row = store._execute("SELECT count(*) FROM records WHERE unit_id = ?", (unit_id,))
        return int(row.fetchone()[0])
    finally:
        store.close()


def test_a_bus_change_restarts_that_bus_only_and_a_new_unit_is_reported(
    tmp_path: Path,
) -> None:
    async def scenario(
        fleet: Fleet, app: Agent, log: CycleLog, db: Path, path: Path, port: int
    ) -> None:
        car1, car2 = app.monitors["car-1"], app.monitors["car-2"]
        bus_a, bus_b = app._bus_tasks["a"], app._bus_tasks["b"]
        start_b = len(log.by_bus["b"])
        # Bus "a" polls slower and gains car-3; bus "b" and car-2 are as they were.
        text = TWO_BUSES.format(a="a", port=port, hz=10.0) + (
            '[[unit]]\nid = "car-3"\nbus = "a"\nslave = 3\n'
        )
        version = await asyncio.to_thread(set_document, db, text)

        await settled(db, version, applied=True)
        # The new unit's records reach the fleet: the agent said Hello again with it.
        await eventually(lambda: records_of(db, "car-3"), deadline_s=30, interval_s=0.3)
        seen_b = len(log.by_bus["b"])
        await eventually(lambda: len(log.by_bus["b"]) > seen_b + 10)
        assert app._bus_tasks["a"] is not bus_a and bus_a.done()
        assert app._bus_tasks["b"] is bus_b and not bus_b.done()
        assert app.monitors["car-1"] is not car1  # its bus changed
        assert app.monitors["car-2"] is car2
        assert "car-3" in app.monitors
        window = log.by_bus["b"][start_b:-1]
        assert len(window) > 10
        assert all("car-2" in cycle for cycle in window)
        _, history = await asyncio.to_thread(state, db)
        touched = sorted((u, d["change"]) for u, kind, d in history if kind == "config")
        assert touched == [("car-1", "changed"), ("car-3", "added")]
        assert app.metrics.registry.get_sample_value(
            "liftwatch_agent_fleet_rejects_total", {"code": "UNIT_NOT_PERMITTED"}
        ) in (None, 0.0)

    run_scenario(tmp_path, scenario, local=two_buses)


# -- the agent's side alone (no fleet, no bus): checks, keeping, removal --------------


def desired(text: str, version: int = 1, sha256: str | None = None) -> Any:
    from protos.liftwatch.v1 import gateway_pb2

    return gateway_pb2.DesiredConfig(
        document_id=agent_document(AGENT),
        version=version,
        toml=text,
        sha256=digest(text) if sha256 is None else sha256,
    )


def idle_agent(tmp_path: Path) -> tuple[Agent, Path]:
    path = tmp_path / "agent.toml"
    path.write_text(local_file(tmp_path / "data", "127.0.0.1:9", 502), encoding="utf-8")
    config, applied = load_running_config(path)
    return Agent(config, config_path=path, applied=applied), path


def test_a_document_whose_digest_does_not_match_is_refused(tmp_path: Path) -> None:
    app, _ = idle_agent(tmp_path)
    assert app.remote is not None
    report = app.remote.receive(desired(BUS.format(port=502) + units(), sha256="0" * 64))
    assert not report.applied
    assert report.problems[0].startswith("(document): sha256 ")
    assert app.remote.version == 0
    app.outbox.close()


def test_a_removed_unit_stays_in_the_hello_and_the_kept_document_is_checked_again(
    tmp_path: Path,
) -> None:
    app, path = idle_agent(tmp_path)
    assert app.remote is not None
    only_car1 = BUS.format(port=502) + units().split('[[unit]]\nid = "car-2"')[0]
    report = app.remote.receive(desired(only_car1, version=7))
    assert report.applied and list(report.units_changed) == ["car-2=removed"]
    assert sorted(app.monitors) == ["car-1"]
    # Its records still queued must be taken: the Hello still names car-2.
    hello = app.hello()
    assert [u.unit_id for u in hello.units] == ["car-1", "car-2"]
    assert hello.config_version == 7 and hello.accepts_config
    app.outbox.append([records_pb2.Record(unit_id="car-2", counters=records_pb2.Counters())])
    app.outbox.close()
    # A restart runs the kept document, and still names car-2 while its records wait.
    config, kept = load_running_config(path)
    assert kept is not None and kept.version == 7 and [u.id for u in config.units] == ["car-1"]
    restarted = Agent(config, config_path=path, applied=kept)
    assert [u.unit_id for u in restarted.hello().units] == ["car-1", "car-2"]
    restarted.outbox.close()
    # ... unless it no longer checks out (here: its text was changed on the box, so its
    # digest no longer matches): then the file alone.
    (tmp_path / "data" / DOCUMENT_FILE).write_text(only_car1 + "# edited\n", encoding="utf-8")
    config, kept = load_running_config(path)
    assert kept is None and [u.id for u in config.units] == ["car-1", "car-2"]
