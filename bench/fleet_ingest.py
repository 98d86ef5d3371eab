"""Fleet ingest load test: N simulated agents, each on its own gRPC stream, against one
fleet process on this machine (loopback only); prints one JSON object.

    python bench/fleet_ingest.py --agents 1000 --db sqlite --seconds 60 --json

The fleet runs as a real ``python -m fleet serve`` process on a fresh store (a SQLite
file, or a throwaway PostgreSQL cluster with fsync on). Load comes from ``--workers``
separate processes, each multiplexing its share of the agents on one asyncio loop, each
agent with its own TCP connection and Connect call, as real agents have. Every agent
watches 4 cars and sends a CarState per car every ``--interval-s`` seconds as one batch,
an event now and then (RAISED, then CLEARED), and heartbeats as the fleet's Welcome asks.

The agents speak gRPC's HTTP/2 wire format directly with pre-serialized messages
(``wire_agents.py``, the default ``--client wire``): grpc.aio channels (``--client
grpcio``) cost the load generator about as much CPU as the fleet, and on a 2-core machine
that measured the load generator more than the fleet.

Reported: agents connected, records committed (counted in the database afterwards),
records per second over the run, ack latency p50/p99 (batch written -> Ack covering it),
the fleet process's CPU seconds and peak RSS during the run, and lost / duplicated:
records acked but missing from the database, and (agent, seq) stored more than once.
Also the load generator's own CPU seconds and, with PostgreSQL, the database server's
(both share the machine's cores with the fleet), calls the fleet refused before their
Welcome and the agents retried (``reconnects``), and /proc/loadavg before and after
(other work on the machine skews every figure).
``--fleet-workers N`` runs the fleet as ``serve --workers N`` (its CPU and RSS are then
the sum over the worker processes).

``--restart-at S`` (issue 18, reconnect storms) stops the fleet S seconds after the load
started (SIGTERM: a graceful stop) and starts it again at once on the same port and
store; the simulated agents reconnect as the real agent does (jittered doubling back-off,
the fleet's retry-after-ms slots honoured) and resend what the new Welcome says the fleet
lacks. Reported under "restart": when the stop began, how long the fleet was down,
``reconnected_all_s`` (from the stop until the last agent that lost its stream had an
ack on its new one) and how many agents lost and regained their stream; ``ack_ms_steady``
then leaves out the batches sent from the first lost stream until every agent was back
(plus the settling time). Run long enough for the storm to end: ``--seconds 120``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the repo's packages and test helpers

import grpc  # noqa: E402

from fleet.serve.runtime import tune_gc  # noqa: E402
from hil_tests.processes import start  # noqa: E402
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, also when imported
import wire_agents  # noqa: E402

CARS = 4
EVENT_PROBABILITY = 0.01  # per agent and tick: a RAISED, cleared on the next tick
CHANNEL_OPTIONS = [
    # Without this, channels with the same target and arguments share one connection.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
DRAIN_TIMEOUT_S = 30.0
# ack_ms_steady counts the batches sent this long after the last agent began to connect:
# all 10,000 streams open, none of the connection storm of the ramp still being served.
STEADY_AFTER_RAMP_S = 5.0


# -- the load generator (one worker process) ---------------------------------------------


class AgentSim:
    """One simulated agent: its stream, its seqs, its ack latencies."""

    def __init__(self, agent_id: str, rng: random.Random) -> None:
        self.agent_id = agent_id
        self.rng = rng
        self.units = [f"{agent_id}-car{c}" for c in range(1, CARS + 1)]
        self.seq = 0
        self.acked = 0
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []
        self.steady: list[float] = []  # of batches sent at or after `steady_from`
        self.steady_from = float("inf")
        self.open_event: tuple[str, str] | None = None
        self.acked_all = asyncio.Event()

    def hello(self) -> gateway_pb2.AgentFrame:
        """The Hello of this agent."""
        return gateway_pb2.AgentFrame(
            hello=gateway_pb2.Hello(
                agent_id=self.agent_id,
                agent_version="bench-0.1",
                units=[
                    gateway_pb2.UnitDescriptor(
                        unit_id=u,
                        controller=records_pb2.ControllerInfo(
                            vendor="Bench", model="RC-3000", firmware="3.2.0", profile="reference"
                        ),
                    )
                    for u in self.units
                ],
            )
        )

    def batch(self, now: dt.datetime) -> gateway_pb2.AgentFrame:
        """One tick: a CarState per car, and sometimes an event raised or cleared."""
        records = []
        for unit in self.units:
            self.seq += 1
            record = records_pb2.Record(seq=self.seq, unit_id=unit)
            record.time.FromDatetime(now)
            record.car_state.floor = self.rng.randint(1, 30)
            record.car_state.moving = self.rng.random() < 0.3
            record.car_state.door = records_pb2.DOOR_STATE_CLOSED
            record.car_state.mode = records_pb2.SERVICE_MODE_NORMAL
            records.append(record)
        event: tuple[str, str] | None = None
        phase = records_pb2.PHASE_RAISED
        if self.open_event is not None:
            event, phase, self.open_event = self.open_event, records_pb2.PHASE_CLEARED, None
        elif self.rng.random() < EVENT_PROBABILITY:
            event = (self.rng.choice(self.units), f"{self.agent_id}-{self.seq}")
            self.open_event = event
        if event is not None:
            self.seq += 1
            record = records_pb2.Record(seq=self.seq, unit_id=event[0])
            record.time.FromDatetime(now)
            record.event.event_id = event[1]
            record.event.type = records_pb2.EVENT_TYPE_DOOR_HELD_OPEN
            record.event.phase = phase
            record.event.onset.FromDatetime(now)
            records.append(record)
        return gateway_pb2.AgentFrame(batch=gateway_pb2.RecordBatch(records=records))

    def on_ack(self, up_to: int, at: float) -> None:
        """Account an Ack: latency of every batch it covers."""
        self.acked = max(self.acked, up_to)
        for seq in [s for s in self.sent_at if s <= up_to]:
            sent = self.sent_at.pop(seq)
            self.latencies.append(at - sent)
            if sent >= self.steady_from:
                self.steady.append(at - sent)
        if self.acked >= self.seq:
            self.acked_all.set()


async def run_agent(
    sim: AgentSim,
    address: str,
    start_at: float,
    end_at: float,
    interval_s: float,
    stats: dict[str, int],
) -> None:
    """Connect at ``start_at``, send a tick every ``interval_s`` until ``end_at``, then
    wait for the last acks (bounded) and close."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(sim.hello())
        welcome = await asyncio.wait_for(call.read(), 60)
        if welcome is grpc.aio.EOF or welcome.WhichOneof("frame") != "welcome":
            raise ConnectionError(f"no Welcome: {welcome}")
        heartbeat_s = float(welcome.welcome.heartbeat_interval_s or 10)
        stats["connected"] += 1

        async def read_acks() -> None:
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    return
                if frame.WhichOneof("frame") != "ack":
                    raise ConnectionError(f"fleet sent {frame}")
                sim.on_ack(frame.ack.up_to_seq, loop.time())

        reader = asyncio.create_task(read_acks())
        try:
            # A random phase: real agents do not tick in step.
            next_tick = loop.time() + sim.rng.uniform(0, interval_s)
            next_beat = loop.time() + heartbeat_s
            while True:
                wake = min(next_tick, next_beat)
                if wake >= end_at:
                    break
                await asyncio.sleep(max(0.0, wake - loop.time()))
                if wake == next_beat:
                    await call.write(gateway_pb2.AgentFrame(heartbeat=gateway_pb2.Heartbeat()))
                    next_beat += heartbeat_s
                    continue
                frame = sim.batch(dt.datetime.now(dt.UTC))
                sim.sent_at[sim.seq] = loop.time()
                sim.acked_all.clear()
                await call.write(frame)
                stats["batches"] += 1
                next_tick += interval_s
            if sim.seq > sim.acked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sim.acked_all.wait(), DRAIN_TIMEOUT_S)
            await call.done_writing()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, DRAIN_TIMEOUT_S)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader


async def worker_main(args: argparse.Namespace) -> dict[str, Any]:
    """Run agents ``first`` .. ``first + count - 1``; the worker's report."""
    if args.client == "wire":
        report = await wire_agents.run_agents(
            args.address,
            args.first,
            args.count,
            args.seconds,
            args.ramp_s,
            args.interval_s,
            DRAIN_TIMEOUT_S,
            STEADY_AFTER_RAMP_S,
            reconnect=args.reconnect,
        )
        return {**report, "cpu_s": _own_cpu_s()}
    loop = asyncio.get_running_loop()
    origin = loop.time()
    stats = {"connected": 0, "batches": 0}
    sims = [
        AgentSim(f"bench-{i:06d}", random.Random(i))
        for i in range(args.first, args.first + args.count)
    ]
    ramp = args.ramp_s
    end_at = origin + ramp + args.seconds
    for sim in sims:
        sim.steady_from = origin + ramp + STEADY_AFTER_RAMP_S
    tasks = [
        asyncio.create_task(
            run_agent(
                sim,
                args.address,
                origin + ramp * (n / max(1, len(sims))),
                end_at,
                args.interval_s,
                stats,
            )
        )
        for n, sim in enumerate(sims)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}"[:200] for r in results if isinstance(r, BaseException)]
    return {
        "connected": stats["connected"],
        "batches": stats["batches"],
        "failed": len(errors),
        "errors": errors[:5],
        "latencies_ms": [round(x * 1000, 3) for s in sims for x in s.latencies],
        "steady_latencies_ms": [round(x * 1000, 3) for s in sims for x in s.steady],
        "agents": {s.agent_id: [s.seq, s.acked] for s in sims},
        "cpu_s": _own_cpu_s(),
    }


# -- the orchestrator --------------------------------------------------------------------


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _proc_cpu_s(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _stored_seqs(target: str) -> list[tuple[str, int]]:
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target) as conn:
            return [(str(a), int(s)) for a, s in conn.execute("SELECT agent_id, seq FROM records")]
    with contextlib.closing(sqlite3.connect(target)) as conn:
        return [(str(a), int(s)) for a, s in conn.execute("SELECT agent_id, seq FROM records")]


def _db_server_cpu_s(data_dir: Path | None) -> float:
    """CPU seconds so far of the PostgreSQL server at ``data_dir``: the postmaster and the
    processes it runs now (backends, WAL writer, checkpointer); 0 for SQLite."""
    if data_dir is None:
        return 0.0
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = _proc_cpu_s(postmaster)
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if proc.name.isdigit() and int(_stat_fields(int(proc.name))[1]) == postmaster:
                total += _proc_cpu_s(int(proc.name))
    return total


def _stat_fields(pid: int) -> list[str]:
    # After the ")" that ends the command name: state, ppid, ... (proc(5), from field 3).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@contextlib.contextmanager
def _store(kind: str, work: Path) -> Iterator[tuple[str, Path | None]]:
    """The store target, and the PostgreSQL data directory (None for SQLite)."""
    if kind == "sqlite":
        yield str(work / "fleet.db"), None
        return
    from tests.fleet.pgcluster import throwaway_cluster

    with throwaway_cluster(durable=True) as cluster:
        yield cluster.create_database("bench"), cluster.socket_dir / "data"


def _free_port() -> int:
    # The fleet restarts on the same port (--restart-at): the agents know only that one.
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_fleet(args: argparse.Namespace, work: Path, target: str, listen: str) -> Any:
    return await start(
        "fleet",
        "fleet",
        [
            "serve",
            "--db",
            target,
            "--listen",
            listen,
            "--http",
            "",
            "--query",
            "",
            "--log-level",
            "WARNING",
            "--workers",
            str(args.fleet_workers),
        ],
        work,
    )


def _pids(fleet: Any) -> list[int]:
    # With --workers the parent only supervises; the work is in the processes it lists.
    return [fleet.process.pid, *fleet.ready.get("workers", [])]


async def orchestrate(
    args: argparse.Namespace, work: Path, target: str, db_data: Path | None = None
) -> dict[str, Any]:
    """Start the fleet and the workers, run (restarting the fleet once with
    ``--restart-at``), stop, verify; the report."""
    load_before = _loadavg()  # other work on this machine skews every figure: say so
    listen = "127.0.0.1:0" if args.restart_at is None else f"127.0.0.1:{_free_port()}"
    fleet = await _start_fleet(args, work, target, listen)
    restart: dict[str, Any] = {}
    cpu_done = 0.0  # of fleet processes stopped for the restart
    try:
        address = str(fleet.ready["grpc"])
        pids = _pids(fleet)
        cpu_before = sum(_proc_cpu_s(pid) for pid in pids)
        db_cpu_before = _db_server_cpu_s(db_data)
        started = time.monotonic()
        per_worker = -(-args.agents // args.workers)
        workers = []
        for w in range(args.workers):
            first = w * per_worker
            count = min(per_worker, args.agents - first)
            if count <= 0:
                break
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    "--address",
                    address,
                    "--first",
                    str(first),
                    "--count",
                    str(count),
                    "--seconds",
                    str(args.seconds),
                    "--ramp-s",
                    str(args.ramp_s),
                    "--interval-s",
                    str(args.interval_s),
                    "--client",
                    args.client,
                    *(["--reconnect"] if args.restart_at is not None else []),
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        running = asyncio.gather(*(p.communicate() for p in workers))
        if args.restart_at is not None:
            await asyncio.sleep(max(0.0, started + args.restart_at - time.monotonic()))
            cpu_done = sum(_proc_cpu_s(pid) for pid in pids)
            restart["stopped_at"] = time.monotonic()
            await fleet.stop()
            fleet = await _start_fleet(args, work, target, address)
            restart["ready_at"] = time.monotonic()
            pids = _pids(fleet)
            cpu_done -= sum(_proc_cpu_s(pid) for pid in pids)  # its startup counts too
        outputs = await running
        elapsed = time.monotonic() - started
        cpu = cpu_done + sum(_proc_cpu_s(pid) for pid in pids) - cpu_before
        db_cpu = _db_server_cpu_s(db_data) - db_cpu_before
        rss = sum(_proc_peak_rss_mb(pid) for pid in pids)
        load_after = _loadavg()
    finally:
        await fleet.stop()
    reports = [json.loads(out) for out, _ in outputs]
    stored = _stored_seqs(target)
    by_agent: dict[str, set[int]] = {}
    for agent_id, seq in stored:
        by_agent.setdefault(agent_id, set()).add(seq)
    duplicated = len(stored) - sum(len(s) for s in by_agent.values())
    lost = 0
    unacked = 0
    for report in reports:
        for agent_id, (sent, acked) in report["agents"].items():
            have = by_agent.get(agent_id, set())
            lost += sum(1 for seq in range(1, acked + 1) if seq not in have)
            unacked += sent - acked
    latencies = [x for r in reports for x in r["latencies_ms"]]
    steady = [x for r in reports for x in r["steady_latencies_ms"]]
    return {
        "agents": sum(r["connected"] for r in reports),
        "agents_failed": sum(r["failed"] for r in reports),
        # Calls the fleet refused before their Welcome and the agent retried (wire client).
        "reconnects": sum(r.get("reconnects", 0) for r in reports),
        "errors": [e for r in reports for e in r["errors"]][:5],
        "db": args.db,
        "client": args.client,
        "seconds": round(elapsed, 1),
        "batches": sum(r["batches"] for r in reports),
        "records_committed": len(stored),
        "records_per_s": round(len(stored) / elapsed, 1),
        "ack_ms": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99)},
        # The same once every agent is connected (see STEADY_AFTER_RAMP_S): "ack_ms" also
        # holds the ramp, a connection storm of N/ramp new calls a second.
        "ack_ms_steady": {"p50": _percentile(steady, 0.5), "p99": _percentile(steady, 0.99)},
        "fleet_workers": args.fleet_workers,
        "fleet_cpu_s": round(cpu, 2),
        # PostgreSQL runs on the same cores (SQLite runs inside the fleet processes).
        "db_server_cpu_s": round(db_cpu, 2),
        "fleet_rss_mb": round(rss, 1),
        # The load generator shares the machine's cores with the fleet: its CPU is part of
        # the picture (on 2 cores, what it burns the fleet cannot have).
        "loadgen_cpu_s": round(sum(r["cpu_s"] for r in reports), 2),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "lost": lost,
        "duplicated": duplicated,
        "unacked_at_end": unacked,
        # New streams the fleet turned away with a retry-after-ms slot (waited out).
        "deferred": sum(r.get("deferred", 0) for r in reports),
        **({"restart": _restart_report(restart, reports, started)} if restart else {}),
    }


def _restart_report(
    restart: dict[str, Any], reports: list[dict[str, Any]], started: float
) -> dict[str, Any]:
    """The figures of the restart: all times in seconds, from the start of the load or
    from the stop."""
    stopped = float(restart["stopped_at"])
    back_at = [r["back_at"] for r in reports if r.get("back_at") is not None]
    lost = sum(r.get("lost", 0) for r in reports)
    back = sum(r.get("back", 0) for r in reports)
    return {
        "stopped_at_s": round(stopped - started, 1),
        "fleet_down_s": round(float(restart["ready_at"]) - stopped, 1),
        "agents_lost_stream": lost,
        "agents_back": back,
        # Until the last agent that lost its stream had an ack on its new one (None: not
        # every one came back before the run ended).
        "reconnected_all_s": round(max(back_at) - stopped, 1) if back_at and back == lost else None,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady run after the ramp")
    parser.add_argument(
        "--ramp-s", type=float, default=None, help="connect the agents over this long (N/500 s)"
    )
    parser.add_argument("--interval-s", type=float, default=5.0, help="tick of each agent (5 s)")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--client",
        choices=["wire", "grpcio"],
        default="wire",
        help="simulated agents: gRPC wire format written directly (default, cheap) or "
        "one grpc.aio channel each (as the real agent)",
    )
    parser.add_argument(
        "--fleet-workers", type=int, default=1, help="fleet processes (serve --workers, default 1)"
    )
    parser.add_argument(
        "--restart-at",
        type=float,
        default=None,
        help="stop the fleet this many seconds into the run and start it again at once "
        "(a reconnect storm; wire client only; see the module docstring)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    # Internal: one load generator process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reconnect", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --worker, one load generator) and print its JSON."""
    args = _parser().parse_args(argv)
    if args.ramp_s is None:
        args.ramp_s = max(2.0, args.agents / 500)
    if args.worker:
        # Thousands of channels in one process: the same collector cost as in the fleet.
        tune_gc()
        print(json.dumps(asyncio.run(worker_main(args))))
        return 0
    if not 1 <= args.agents <= 20_000:
        raise SystemExit("--agents must be between 1 and 20000 (the bench is bounded)")
    if not 0 < args.seconds <= 900:
        raise SystemExit("--seconds must be in (0, 900]")
    if args.restart_at is not None and (args.client != "wire" or args.restart_at <= 0):
        raise SystemExit("--restart-at needs a positive number of seconds and --client wire")
    with (
        tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp,
        _store(args.db, Path(tmp)) as (target, db_data),
    ):
        result = asyncio.run(orchestrate(args, Path(tmp), target, db_data))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
