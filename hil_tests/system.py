"""The whole LiftWatch chain as real processes: fleet manager, emulator, agent.

`running_system` starts them on loopback ports the kernel picks, wires the agent to both,
and stops all three when the block ends. The demo and the end-to-end tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from hil_tests.emulator.control import control
from hil_tests.netcut import NetCut
from hil_tests.processes import Service, ServiceError, start
from protos.liftwatch.v1 import query_pb2, query_pb2_grpc, records_pb2

DATA_DIR = Path(__file__).resolve().parent / "data"
REGISTER_CSV = DATA_DIR / "units-sample.csv"
# A school building in 菜园坝街道 whose four cars share one RC-3000 group: the demo's units.
DEMO_BUILDING = "上清寺路31号学校楼"


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """What to start. Unit ids are the register codes of the emulated cars, in car order."""

    unit_ids: tuple[str, ...]
    model: str = "RC-3000"
    firmware: str = "3.2.0"
    register_csv: Path | None = REGISTER_CSV
    poll_hz: float = 10.0
    detect: Mapping[str, float] = field(default_factory=dict)
    seed: int = 1
    # "tcp": Modbus TCP on loopback; "rtu": Modbus RTU over a socat pty pair, the agent
    # opening its end as it would open /dev/ttyUSB0.
    transport: str = "tcp"
    baud: int = 115200
    serial_format: str = "8N1"
    # Answers arrive when they would on a real wire at this rate ("" = as fast as the pty).
    # Linux ptys refuse parity, so the line itself stays 8N1 and 8E1 is only emulated here.
    wire_timing: str = "115200,8N1"
    traffic: str = ""
    # Appended to the fleet's config as it is (e.g. an [alarms] section).
    fleet_extra: str = ""
    # The fleet's HTTP side (JSON API and dashboard); port 0 lets the kernel pick.
    http_listen: str = "127.0.0.1:0"
    # Dashboard accounts made with `liftwatch-fleet users add` before the fleet starts.
    users: tuple[SystemUser, ...] = ()


@dataclass(frozen=True, slots=True)
class SystemUser:
    """A dashboard account of a rig system (role: regulator, contractor, dispatcher or
    admin; contractor: the maintenance contractor of a contractor account)."""

    username: str
    role: str
    password: str
    contractor: str = ""


def demo_spec(
    detect: Mapping[str, float] | None = None, http_listen: str = "127.0.0.1:0"
) -> SystemSpec:
    """Four cars of `DEMO_BUILDING`, with their model from the district register, and a
    dashboard account per role (`demo_users`)."""
    with REGISTER_CSV.open(encoding="utf-8", newline="") as f:
        register = list(csv.DictReader(f))
    rows = [r for r in register if r["building"] == DEMO_BUILDING]
    rows.sort(key=lambda r: int(r["car_in_group"]))
    own = rows[0]["maintenance_contractor"]
    other = min({r["maintenance_contractor"] for r in register} - {own, ""})
    return SystemSpec(
        unit_ids=tuple(r["registration_code"] for r in rows),
        model=rows[0]["controller_model"],
        detect=detect or {},
        http_listen=http_listen,
        users=demo_users(own, other),
    )


def demo_users(contractor: str, other_contractor: str) -> tuple[SystemUser, ...]:
    """One account per role, password "<name>-demo": ``contractor`` maintains the demo
    building, ``contractor2`` (of ``other_contractor``) does not. For a demo only."""
    return (
        SystemUser("regulator", "regulator", "regulator-demo"),
        SystemUser("dispatcher", "dispatcher", "dispatcher-demo"),
        SystemUser("contractor", "contractor", "contractor-demo", contractor),
        SystemUser("contractor2", "contractor", "contractor2-demo", other_contractor),
        SystemUser("admin", "admin", "admin-demo"),
    )


@dataclass
class RunningSystem:
    """Handles on the three running processes."""

    spec: SystemSpec
    work_dir: Path
    fleet: Service
    emulator: Service
    agent: Service
    proxy: NetCut | None = None
    restarts: int = 0

    @property
    def agent_outbox(self) -> Path:
        """The agent's outbox database."""
        return self.work_dir / "agent-data" / "outbox.db"

    async def kill_agent(self) -> None:
        """SIGKILL the agent: no chance to flush or close anything."""
        self.agent.process.kill()
        await self.agent.stop()

    async def start_agent(self) -> None:
        """Start the agent again with the same config and outbox."""
        self.restarts += 1
        self.agent = await start(
            f"agent-{self.restarts}",
            "agent",
            ["run", "--config", str(self.work_dir / "agent.toml")],
            self.work_dir,
        )

    async def stop_fleet(self) -> None:
        """Stop the fleet manager (SIGTERM), keeping its database."""
        await self.fleet.stop()

    async def start_fleet(self) -> None:
        """Start the fleet manager again on the same port and database."""
        self.restarts += 1
        self.fleet = await start(
            f"fleet-{self.restarts}",
            "fleet",
            [
                "serve",
                "--config",
                str(self.work_dir / "fleet.toml"),
                "--listen",
                self.fleet_address,
            ],
            self.work_dir,
        )

    @property
    def fleet_address(self) -> str:
        """host:port of the fleet manager's gRPC server."""
        return str(self.fleet.ready["grpc"])

    @property
    def query_address(self) -> str:
        """host:port of the fleet's FleetQuery listener (operators' reads)."""
        return str(self.fleet.ready["query"])

    @property
    def fleet_db(self) -> Path:
        """The fleet's SQLite database."""
        return self.work_dir / "fleet.db"

    def car_of(self, unit_id: str) -> int:
        """The emulator's car number (slave id) of ``unit_id``."""
        return self.spec.unit_ids.index(unit_id) + 1

    async def control_request(self, request: dict[str, object]) -> dict[str, object]:
        """Send one control request to the emulator; raise unless it answers ok."""
        host, _, port = str(self.emulator.ready["control"]).rpartition(":")
        reply = await control(host, int(port), request)
        if reply.get("ok") is not True:
            raise RuntimeError(f"emulator refused {request}: {reply.get('error')}")
        return reply

    async def inject(self, unit_id: str, fault: str) -> None:
        """Inject ``fault`` into the emulated car of ``unit_id``."""
        await self.control_request({"op": "inject", "car": self.car_of(unit_id), "fault": fault})

    async def clear(self, unit_id: str, fault: str) -> None:
        """Clear ``fault`` on the emulated car of ``unit_id`` (the rescue, for entrapment)."""
        await self.control_request({"op": "clear", "car": self.car_of(unit_id), "fault": fault})

    def alive(self) -> list[str]:
        """Names of the processes that have exited (empty when all run)."""
        return [
            s.name
            for s in (self.fleet, self.emulator, self.agent)
            if s.process.returncode is not None
        ]


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def agent_config_text(spec: SystemSpec, bus_url: str, fleet: str, data_dir: Path) -> str:
    """The agent config for ``spec``: one bus (``tcp://`` or ``rtu://``), one unit per car."""
    lines = [
        "[agent]",
        'id = "rig-agent-1"',
        f"data_dir = {_toml_str(str(data_dir))}",
        "state_interval_s = 5.0",
        "counters_interval_s = 30.0",
        'metrics_listen = "127.0.0.1:0"',
        "",
        "[fleet]",
        f"endpoints = [{_toml_str(fleet)}]",
        "insecure = true  # the rig runs on loopback only",
        "",
        "[detect]",
        *(f"{key} = {value!r}" for key, value in spec.detect.items()),
        "",
        "[[bus]]",
        'name = "group-1"',
        f"url = {_toml_str(bus_url)}",
        f"poll_hz = {spec.poll_hz}",
        "timeout_s = 0.5",
    ]
    if spec.transport == "rtu":
        lines += [f"baudrate = {spec.baud}", f"format = {_toml_str(spec.serial_format)}"]
    for car, unit_id in enumerate(spec.unit_ids, start=1):
        lines += [
            "",
            "[[unit]]",
            f"id = {_toml_str(unit_id)}",
            'bus = "group-1"',
            f"slave = {car}",
            'profile = "reference"',
        ]
    return "\n".join(lines) + "\n"


def fleet_config_text(spec: SystemSpec, work_dir: Path) -> str:
    """The fleet config for ``spec``: SQLite in ``work_dir``, port chosen by the kernel."""
    lines = [
        "[server]",
        'listen = "127.0.0.1:0"',
        "",
        "[http]",
        f"listen = {_toml_str(spec.http_listen)}",
        "",
        "[query]",
        "auth = false  # the rig reads FleetQuery on loopback without a token",
        "",
        "[store]",
        f"path = {_toml_str(str(work_dir / 'fleet.db'))}",
    ]
    if spec.register_csv is not None:
        lines += ["", "[registry]", f"csv = {_toml_str(str(spec.register_csv))}"]
    return "\n".join(lines) + "\n" + spec.fleet_extra


def emulator_args(spec: SystemSpec, work_dir: Path) -> list[str]:
    """The `liftwatch-rig emulate` arguments for ``spec``."""
    args = [
        "emulate",
        "--cars",
        str(len(spec.unit_ids)),
        "--control",
        "127.0.0.1:0",
        "--model",
        spec.model,
        "--firmware",
        spec.firmware,
        "--seed",
        str(spec.seed),
    ]
    if spec.transport == "rtu":
        args += [
            "--pty",
            str(work_dir / "pty"),
            "--baud",
            str(spec.baud),
            "--format",
            spec.serial_format,
        ]
    else:
        args += ["--modbus", "tcp://127.0.0.1:0"]
        if spec.wire_timing:
            args += ["--wire-timing", spec.wire_timing]
    if spec.traffic:
        args += ["--traffic", spec.traffic]
    return args


@contextlib.asynccontextmanager
async def running_system(
    spec: SystemSpec, work_dir: Path, *, proxy_fleet: bool = False
) -> AsyncIterator[RunningSystem]:
    """Start fleet, emulator and agent; stop all three (SIGTERM) when the block exits.

    With ``proxy_fleet`` the agent reaches the fleet through a `NetCut` proxy that the
    caller can cut and restore (``system.proxy``).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    fleet_config = work_dir / "fleet.toml"
    fleet_config.write_text(fleet_config_text(spec, work_dir), encoding="utf-8")
    for user in spec.users:
        await add_user(fleet_config, user, work_dir)
    # The stop callbacks look the service up when they run: a test may have restarted it.
    system: RunningSystem | None = None
    async with contextlib.AsyncExitStack() as stack:
        fleet = await start("fleet", "fleet", ["serve", "--config", str(fleet_config)], work_dir)
        stack.push_async_callback(lambda: _stop_current(system, "fleet", fleet))
        emulator = await start("emulator", "hil_tests", emulator_args(spec, work_dir), work_dir)
        stack.push_async_callback(lambda: _stop_current(system, "emulator", emulator))
        bus_url = (
            f"rtu://{emulator.ready['serial']}"
            if spec.transport == "rtu"
            else str(emulator.ready["modbus"])
        )
        fleet_endpoint = str(fleet.ready["grpc"])
        proxy: NetCut | None = None
        if proxy_fleet:
            host, _, port = fleet_endpoint.rpartition(":")
            proxy = NetCut(host, int(port))
            await proxy.start()
            stack.push_async_callback(proxy.close)
            fleet_endpoint = proxy.address
        agent_config = work_dir / "agent.toml"
        agent_config.write_text(
            agent_config_text(spec, bus_url, fleet_endpoint, work_dir / "agent-data"),
            encoding="utf-8",
        )
        # The agent stops first so that its last records are not sent to a stopped fleet.
        agent = await start("agent", "agent", ["run", "--config", str(agent_config)], work_dir)
        stack.push_async_callback(lambda: _stop_current(system, "agent", agent))
        system = RunningSystem(spec, work_dir, fleet, emulator, agent, proxy)
        yield system


async def add_user(fleet_config: Path, user: SystemUser, log_dir: Path) -> None:
    """Make ``user`` with the fleet's own CLI (`liftwatch-fleet users add`); raises
    `ServiceError` with its message when the CLI refuses."""
    args = ["users", "add", user.username, "--role", user.role, "--password-stdin"]
    if user.contractor:
        args += ["--contractor", user.contractor]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet",
        *args,
        "--config",
        str(fleet_config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=log_dir,
    )
    _, err = await process.communicate(f"{user.password}\n".encode())
    if process.returncode != 0:
        raise ServiceError(f"users add {user.username}: {err.decode(errors='replace').strip()}")


async def _stop_current(system: RunningSystem | None, name: str, first: Service) -> int:
    service: Service = getattr(system, name) if system is not None else first
    return await service.stop()


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """A wire enum name without its prefix: EVENT_TYPE_ENTRAPMENT -> ENTRAPMENT."""
    return str(enum.Name(value)).removeprefix(prefix)


def unit_json(unit: query_pb2.Unit) -> dict[str, Any]:
    """A FleetQuery Unit as the demo prints it."""
    return {
        "unit_id": unit.unit_id,
        "status": enum_name(query_pb2.UnitStatus, unit.status, "UNIT_STATUS_").lower(),
        "firmware": unit.controller.firmware,
        "model": unit.controller.model,
        "agent_id": unit.agent_id,
        "agent_version": unit.agent_version,
        "building": unit.building,
        "street": unit.street,
        "contractor": unit.contractor,
        "last_seen": unit.last_seen.ToJsonString() if unit.HasField("last_seen") else None,
    }


def event_json(stored: query_pb2.StoredEvent) -> dict[str, Any]:
    """A FleetQuery StoredEvent as the demo prints it."""
    event = stored.event
    return {
        "unit_id": stored.unit_id,
        "type": enum_name(records_pb2.EventType, event.type, "EVENT_TYPE_"),
        "phase": enum_name(records_pb2.Phase, event.phase, "PHASE_"),
        "event_id": event.event_id,
        "onset": event.onset.ToJsonString(),
        "time": stored.time.ToJsonString(),
        "floor": event.floor if event.HasField("floor") else None,
        "reason": event.reason,
        "seq": stored.seq,
        "committed": stored.committed.ToJsonString() if stored.HasField("committed") else None,
    }


class FleetView:
    """A FleetQuery client for the running fleet: what the fleet sees, as plain dicts."""

    def __init__(self, address: str, unit_ids: tuple[str, ...]) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = query_pb2_grpc.FleetQueryStub(self._channel)
        self._unit_ids = unit_ids

    async def units(self) -> list[dict[str, Any]]:
        """The watched units (those of the spec), in car order."""
        wanted = set(self._unit_ids)
        response = await self._stub.ListUnits(query_pb2.ListUnitsRequest(), timeout=10)
        found = {u.unit_id: unit_json(u) for u in response.units if u.unit_id in wanted}
        return [found[u] for u in self._unit_ids if u in found]

    async def events(self) -> list[dict[str, Any]]:
        """Every event the fleet stored for the spec's units, oldest first."""
        response = await self._stub.ListEvents(
            query_pb2.ListEventsRequest(limit=10_000), timeout=10
        )
        wanted = set(self._unit_ids)
        return [event_json(e) for e in response.events if e.unit_id in wanted]

    async def evidence(self, event_id: str) -> records_pb2.Evidence | None:
        """The flight-recorder window the fleet stored for ``event_id`` (its newest, which
        supersedes the one written at the raise), None while it has none."""
        try:
            stored = await self._stub.GetEvidence(
                query_pb2.GetEvidenceRequest(event_id=event_id), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        evidence: records_pb2.Evidence = stored.evidence
        return evidence

    async def coverage(self) -> dict[str, int]:
        """The fleet's coverage counts."""
        c = await self._stub.Coverage(query_pb2.CoverageRequest(), timeout=10)
        # The scalar counts only; the per-group breakdown is not part of the demo's output.
        values = {f.name: getattr(c, f.name) for f in c.DESCRIPTOR.fields}
        return {name: value for name, value in values.items() if isinstance(value, int)}

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
