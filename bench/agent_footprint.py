"""Agent footprint: CPU and peak RSS of the real agent beside a bare pymodbus polling loop.

What is measured. One emulator process (``python -m hil_tests emulate``, Modbus TCP on
loopback) serves 4 cars; a fleet manager (``python -m fleet serve``, SQLite in a temporary
directory) takes the agent's records unless ``--no-fleet`` (the agent then keeps them in
its outbox and retries the fleet with back-off). Two client processes poll the same
emulator at the same time, each through its own counting proxy in this process:

* the agent: ``python -m agent run --config F``, the config written by
  `hil_tests.system.agent_config_text` (one TCP bus at 10 Hz, four units with the
  ``reference`` profile, metrics on a loopback port, plaintext gRPC to the fleet);
* the bare loop: this file run with ``--bare-loop URL``, a process that imports only the
  standard library and pymodbus and, through one ``AsyncModbusTcpClient``, does what the
  agent's poll plan does for the reference profile: the 24 identity registers (20..43) of
  each car once at start, then every 100 ms one ``read_holding_registers`` per car of
  registers 0..9, or 0..15 when that car's counters are due (first cycle, then every 5 s,
  staggered across cars as the agent's scheduler staggers them). It keeps the registers and
  does nothing else.

The proxies parse the Modbus TCP requests going through them, so the result shows each
client's requests/s and read mix and proves that both did the same work. After both
processes answered their first requests and a warm-up, each process's CPU time
(utime + stime from /proc/PID/stat, all threads) is read at the start and end of a window
of ``--seconds`` (default 60); the difference is the figure, start-up excluded (the totals
since exec are reported too). RSS is the peak, VmHWM from /proc/PID/status, in MiB.

Targets: cpu_ratio = agent_cpu_s / bare_cpu_s <= 1.5, agent_rss_mb <= 60. Prints one JSON
object::

    {"agent_cpu_s", "bare_cpu_s", "cpu_ratio", "agent_rss_mb", "bare_rss_mb", "seconds",
     "requests_per_s", ...}

Run from the repository root: ``python bench/agent_footprint.py --json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only the standard library above: the bare loop runs from this file and must not carry
# the agent's imports. The benchmark's own imports are inside `run_benchmark`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from hil_tests.processes import Service

CARS = 4
POLL_HZ = 10.0
SLOW_POLL_S = 5.0  # the agent's default slow_poll_s (counters)
FAST_REGISTERS = (0, 10)  # address, count: what the reference plan reads every cycle
SLOW_REGISTERS = (0, 16)  # on a slow cycle: fast and counter registers coalesced
IDENTITY_REGISTERS = (20, 24)  # firmware, model, serial: at start (and hourly)
TIMEOUT_S = 0.5  # as in the agent's config
CPU_RATIO_TARGET = 1.5
RSS_TARGET_MB = 60.0
READY_TIMEOUT_S = 60.0


# --- the bare loop (runs in its own process) ----------------------------------------------


async def bare_loop(url: str, cars: int, poll_hz: float) -> None:
    """Poll ``cars`` slaves at ``tcp://HOST:PORT`` like the agent's plan, until SIGTERM."""
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.exceptions import ModbusException

    host, _, port = url.removeprefix("tcp://").rpartition(":")
    client = AsyncModbusTcpClient(host, port=int(port), timeout=TIMEOUT_S, retries=0)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if not await client.connect():
        raise SystemExit(f"bare loop: cannot connect to {url}")
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    slaves = range(1, cars + 1)
    kept: dict[int, list[int]] = {}

    async def read(slave: int, address: int, count: int) -> None:
        with contextlib.suppress(ModbusException):
            response = await client.read_holding_registers(address, count=count, device_id=slave)
            if not response.isError():
                kept[slave] = list(response.registers)

    for slave in slaves:
        await read(slave, *IDENTITY_REGISTERS)
    next_slow = dict.fromkeys(slaves, float("-inf"))
    next_cycle = loop.time()
    while not stop.is_set():
        for i, slave in enumerate(slaves):
            now = loop.time()
            if now >= next_slow[slave]:
                await read(slave, *SLOW_REGISTERS)
                first = next_slow[slave] == float("-inf")
                offset = SLOW_POLL_S * (i + 1) / cars if first else SLOW_POLL_S
                next_slow[slave] = (now if first else next_slow[slave]) + offset
            else:
                await read(slave, *FAST_REGISTERS)
        next_cycle += 1.0 / poll_hz
        delay = next_cycle - loop.time()
        if delay < 0:
            next_cycle, delay = loop.time(), 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    client.close()


# --- measurement helpers --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the command name: state is field 3, so utime (14) and stime (15) are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass
class RequestCounter:
    """Modbus TCP requests seen by a `CountingProxy`: total and by (function, addr, count)."""

    total: int = 0
    mix: collections.Counter[tuple[int, int, int]] = field(default_factory=collections.Counter)

    def snapshot(self) -> RequestCounter:
        """A copy, to subtract from a later one."""
        return RequestCounter(self.total, collections.Counter(self.mix))

    def since(self, earlier: RequestCounter) -> RequestCounter:
        """The requests counted after ``earlier`` was taken."""
        return RequestCounter(self.total - earlier.total, self.mix - earlier.mix)


class CountingProxy:
    """A loopback TCP proxy to a Modbus TCP server that counts the requests passing it."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.counter = RequestCounter()
        self.first_request = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on a free loopback port; return ``tcp://127.0.0.1:PORT``."""
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop listening and end every session."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pump(reader, up_writer, count=True))
                    group.create_task(self._pump(up_reader, writer, count=False))
            finally:
                up_writer.close()
        except (OSError, ExceptionGroup):
            pass  # a client or the emulator went away: the session ends
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        pending = bytearray()
        while data := await reader.read(65536):
            writer.write(data)
            if count:
                pending += data
                self._count(pending)
            await writer.drain()
        raise ConnectionResetError("peer closed")

    def _count(self, pending: bytearray) -> None:
        # MBAP header: transaction id (2), protocol (2), length (2), unit id (1); then PDU.
        while len(pending) >= 8:
            size = 6 + int.from_bytes(pending[4:6], "big")
            if len(pending) < size:
                return
            function = pending[7]
            address = int.from_bytes(pending[8:10], "big") if size >= 12 else -1
            quantity = int.from_bytes(pending[10:12], "big") if size >= 12 else -1
            self.counter.total += 1
            self.counter.mix[(function, address, quantity)] += 1
            self.first_request.set()
            del pending[:size]


def _mix_json(counter: RequestCounter) -> dict[str, int]:
    return {f"fc{fn} {addr}..{addr + n - 1}": k for (fn, addr, n), k in sorted(counter.mix.items())}


# --- the benchmark --------------------------------------------------------------------------


async def run_benchmark(seconds: float, warmup_s: float, with_fleet: bool) -> dict[str, Any]:
    """Start everything, measure one window, stop everything; the JSON result."""
    from hil_tests.processes import start
    from hil_tests.system import agent_config_text, demo_spec, emulator_args, fleet_config_text

    # Four cars that the sample district register knows, polled at POLL_HZ.
    spec = dataclasses.replace(demo_spec(), poll_hz=POLL_HZ)
    services: list[Service] = []
    proxies: list[CountingProxy] = []
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        work = Path(tmp)
        try:
            fleet_address = "127.0.0.1:9"  # discard port: nothing answers, the agent buffers
            if with_fleet:
                fleet_config = work / "fleet.toml"
                fleet_config.write_text(fleet_config_text(spec, work), encoding="utf-8")
                fleet = await start(
                    "fleet", "fleet", ["serve", "--config", str(fleet_config)], work
                )
                services.append(fleet)
                fleet_address = str(fleet.ready["grpc"])
            emulator = await start("emulator", "hil_tests", emulator_args(spec, work), work)
            services.append(emulator)
            host, _, port = str(emulator.ready["modbus"]).removeprefix("tcp://").rpartition(":")
            agent_proxy, bare_proxy = CountingProxy(host, int(port)), CountingProxy(host, int(port))
            proxies += [agent_proxy, bare_proxy]
            agent_url, bare_url = await agent_proxy.start(), await bare_proxy.start()
            config = work / "agent.toml"
            config.write_text(
                agent_config_text(spec, agent_url, fleet_address, work / "agent-data"),
                encoding="utf-8",
            )
            agent = await start("agent", "agent", ["run", "--config", str(config)], work)
            services.append(agent)
            bare = await _start_bare(bare_url, work)
            services.append(bare)
            await asyncio.wait_for(
                asyncio.gather(agent_proxy.first_request.wait(), bare_proxy.first_request.wait()),
                READY_TIMEOUT_S,
            )
            await asyncio.sleep(warmup_s)
            pids = {"agent": agent.process.pid, "bare": bare.process.pid}
            loop = asyncio.get_running_loop()
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            req0 = {"agent": agent_proxy.counter.snapshot(), "bare": bare_proxy.counter.snapshot()}
            began = loop.time()
            await asyncio.sleep(seconds)
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            elapsed = loop.time() - began
            reqs = {
                "agent": agent_proxy.counter.since(req0["agent"]),
                "bare": bare_proxy.counter.since(req0["bare"]),
            }
            rss = {k: peak_rss_mb(p) for k, p in pids.items()}
            for name, service in (("agent", agent), ("bare", bare)):
                if service.process.returncode is not None:
                    raise RuntimeError(f"{name} exited early:\n{service.log_tail()}")
        finally:
            for service in reversed(services):
                await service.stop()
            for proxy in proxies:
                await proxy.close()
    agent_cpu, bare_cpu = cpu1["agent"] - cpu0["agent"], cpu1["bare"] - cpu0["bare"]
    return {
        "agent_cpu_s": round(agent_cpu, 2),
        "bare_cpu_s": round(bare_cpu, 2),
        "cpu_ratio": round(agent_cpu / bare_cpu, 2) if bare_cpu > 0 else None,
        "agent_rss_mb": round(rss["agent"], 1),
        "bare_rss_mb": round(rss["bare"], 1),
        "seconds": round(elapsed, 1),
        "requests_per_s": round(reqs["agent"].total / elapsed, 1),
        "bare_requests_per_s": round(reqs["bare"].total / elapsed, 1),
        "agent_requests": _mix_json(reqs["agent"]),
        "bare_requests": _mix_json(reqs["bare"]),
        "agent_cpu_total_s": round(cpu1["agent"], 2),
        "bare_cpu_total_s": round(cpu1["bare"], 2),
        "cpu_window": f"after {warmup_s:g} s of warm-up; *_total_s include start-up",
        "rss": "VmHWM, MiB",
        "cars": CARS,
        "poll_hz": POLL_HZ,
        "fleet": "fleet manager process, plaintext gRPC on loopback"
        if with_fleet
        else "none (agent keeps records in its outbox)",
        "bare_loop": "AsyncModbusTcpClient.read_holding_registers per car: 20..43 once at "
        "start, then every 100 ms 0..9, or 0..15 when counters are due (every 5 s per car)",
        "targets": {"cpu_ratio": CPU_RATIO_TARGET, "agent_rss_mb": RSS_TARGET_MB},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


async def _start_bare(url: str, work: Path) -> Service:
    """This file as the bare-loop process; returns a `Service` once it is connected."""
    from hil_tests.processes import Service

    log_path = work / "bare.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--bare-loop",
        url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    service = Service("bare", process, log_path, _log=log)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
    if not line.startswith(b'{"ready": true'):
        await service.stop()
        raise RuntimeError(f"bare loop did not start:\n{service.log_tail()}")
    return service


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark (or the bare loop), print the JSON object."""
    parser = argparse.ArgumentParser(
        description="CPU seconds and peak RSS of the real agent polling 4 emulated cars at "
        "10 Hz over Modbus TCP, beside a bare pymodbus loop doing the same requests "
        "(targets: cpu_ratio <= 1.5, agent RSS <= 60 MiB).",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="unmeasured seconds after start (default 5)"
    )
    parser.add_argument(
        "--no-fleet",
        action="store_true",
        help="start no fleet manager: the agent keeps its records in its outbox",
    )
    parser.add_argument(
        "--bare-loop",
        metavar="URL",
        help="internal: run only the bare pymodbus loop against tcp://HOST:PORT until SIGTERM",
    )
    args = parser.parse_args(argv)
    if args.bare_loop:
        asyncio.run(bare_loop(args.bare_loop, CARS, POLL_HZ))
        return 0
    result = asyncio.run(run_benchmark(args.seconds, args.warmup, not args.no_fleet))
    print(json.dumps(result))
    ratio = result["cpu_ratio"]
    ok = ratio is not None and ratio <= CPU_RATIO_TARGET and result["agent_rss_mb"] <= RSS_TARGET_MB
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
