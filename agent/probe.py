"""`liftwatch-agent probe`: the installer's commissioning tool, read-only like the agent.

It scans slave ids on a serial line (or behind a Modbus TCP gateway) with a short
timeout, reads the identity strings of the ones that answer, then polls them with the
agent's own scheduler and profile decoder and shows the decoded live state with link
statistics (requests, errors by kind, latency), refreshing in the terminal. ``--once
--json`` prints one JSON object for scripts instead::

    {"slaves": [{"slave": 1, "identity": {...}, "state": {...}, "link": {...}}]}

Only read function codes are ever sent (it goes through agent.bus.link like the agent).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TextIO

from agent.bus.health import LinkStats
from agent.bus.link import (
    LinkError,
    LinkFault,
    ModbusLink,
    ModbusRtuLink,
    ModbusTcpLink,
    SerialEndpoint,
    TcpEndpoint,
)
from agent.bus.plan import RTU_COST, TCP_COST, Read
from agent.bus.scheduler import BusScheduler, RawValues, Station, TurnKind
from agent.bus.wire import SerialFormat, silent_interval_s
from agent.decode.decoder import SampleRejectedError, car_state, decode, decode_identity
from agent.decode.model import Profile


@dataclass
class ProbedSlave:
    """What the probe knows of one slave that answered the scan."""

    slave: int
    stats: LinkStats = field(default_factory=LinkStats)
    identity: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    carried: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"slave", "identity", "state", "link"}``."""
        link = self.stats.as_dict()
        if self.problems:
            link["last_problems"] = self.problems[-5:]
        return {"slave": self.slave, "identity": self.identity, "state": self.state, "link": link}


def _jsonable(value: object) -> object:
    return value.name.lower() if isinstance(value, enum.Enum) else value


class ProbeSink:
    """Decodes what the scheduler reads into each probed slave's latest state."""

    def __init__(self, profile: Profile, slaves: dict[int, ProbedSlave]) -> None:
        self._profile = profile
        self._slaves = slaves

    def on_identity(self, slave: int, values: RawValues, t: float) -> None:
        """Identity strings of ``slave``."""
        identity = decode_identity(self._profile, values)
        if identity is not None:
            self._slaves[slave].identity = {
                "vendor": identity.vendor,
                "model": identity.model,
                "firmware": identity.firmware,
                "serial": identity.serial,
            }

    def on_sample(self, slave: int, values: RawValues, kind: TurnKind, t: float) -> None:
        """A live sample of ``slave``, decoded with the profile."""
        probed = self._slaves[slave]
        try:
            decoded = decode(self._profile, values)
        except SampleRejectedError as exc:
            probed.problems.append(str(exc))
            probed.state = {}
            return
        probed.problems.extend(f"implausible {item}" for item in decoded.implausible)
        probed.carried.update(decoded.fields)  # keeps counters between slow reads
        sample = car_state(t, [probed.carried])
        probed.state = {
            f.name: _jsonable(getattr(sample, f.name))
            for f in fields(sample)
            if f.name != "t" and f.name in self._profile.signal_names
        }

    def on_failure(self, slave: int, fault: LinkFault, t: float) -> None:
        """A failed request to ``slave``: its state is unknown until the next answer."""
        self._slaves[slave].state = {}
        self._slaves[slave].carried = {}

    def on_cycle_end(self, t: float) -> None:
        """Every slave had its turn; the display refreshes on its own schedule."""


async def scan(
    link: ModbusLink, candidates: Sequence[int], first_read: Read, gap_s: float
) -> list[int]:
    """The slave ids among ``candidates`` that answer ``first_read`` at all (an exception
    response counts: something lives at that id, if perhaps not this profile)."""
    found = []
    for slave in candidates:
        try:
            await link.read(slave, first_read)
            found.append(slave)
        except LinkError as exc:
            if exc.fault in (LinkFault.EXCEPTION_RESPONSE, LinkFault.MALFORMED):
                found.append(slave)
        await asyncio.sleep(gap_s)
    return found


def build_link(args: argparse.Namespace) -> tuple[ModbusLink, float, bool]:
    """The link the arguments describe, its inter-frame gap, and whether it is RTU."""
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        return ModbusTcpLink(TcpEndpoint(host, int(port), args.timeout)), 0.0, False
    fmt = SerialFormat(args.bytesize, args.parity, args.stopbits)
    link = ModbusRtuLink(SerialEndpoint(args.port, args.baud, fmt, args.timeout))
    return link, silent_interval_s(args.baud, fmt), True


async def probe(
    args: argparse.Namespace, profile: Profile, out: TextIO, clock: Callable[[], float]
) -> int:
    """Scan, then show live state (or print one JSON object with ``--once``)."""
    link, gap_s, is_rtu = build_link(args)
    plan = profile.plan(RTU_COST if is_rtu else TCP_COST)
    first = (plan.fast or plan.slow_cycle)[0]
    candidates = [args.slave] if args.slave else list(range(1, 248))
    found = await scan(link, candidates, first, gap_s)
    slaves = {n: ProbedSlave(n) for n in found}
    if not found:
        link.close()
        if args.json:
            print(json.dumps({"slaves": []}), file=out)
        else:
            print(f"no slave answered on {args.tcp or args.port}", file=out)
        return 1
    scheduler = BusScheduler(
        "probe",
        link,
        [Station(n, plan, slaves[n].stats) for n in found],
        ProbeSink(profile, slaves),
        clock,
        period_s=1.0 / args.poll_hz,
        frame_gap_s=gap_s,
    )
    try:
        if args.once:
            await scheduler.cycle()
            report = {"slaves": [slaves[n].as_dict() for n in found]}
            print(json.dumps(report) if args.json else json.dumps(report, indent=2), file=out)
            return 0
        task = asyncio.create_task(scheduler.run())
        try:
            while not task.done():
                _show(out, args, profile, [slaves[n] for n in found])
                await asyncio.sleep(args.refresh)
        finally:
            task.cancel()
    finally:
        scheduler.close()
    return 0


def _show(
    out: TextIO, args: argparse.Namespace, profile: Profile, slaves: list[ProbedSlave]
) -> None:
    where = args.tcp or f"{args.port} {args.baud} {args.bytesize}{args.parity}{args.stopbits}"
    lines = [f"\x1b[H\x1b[2J{where}  profile {profile.name}  {time.strftime('%H:%M:%S')}"]
    for probed in slaves:
        d = probed.as_dict()
        link = d["link"]
        errors = ", ".join(f"{k} {v}" for k, v in link["errors"].items() if v) or "none"
        lines.append(
            f"\nslave {probed.slave}  {probed.identity or ''}\n"
            f"  requests {link['requests']}  answered {link['responses']}  errors: {errors}"
            f"  latency p50 {link['latency_ms_p50']} ms max {link['latency_ms_max']} ms"
        )
        state = probed.state or {"state": "unknown (no valid answer)"}
        lines.extend(f"  {k:24} {v}" for k, v in state.items())
        lines.extend(f"  ! {p}" for p in probed.problems[-3:])
    print("\n".join(lines), file=out, flush=True)


def main(args: argparse.Namespace) -> int:
    """Run the probe from parsed arguments; exit status 0 when a slave answered."""
    from agent.decode.parser import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return asyncio.run(probe(args, profile, sys.stdout, time.monotonic))
    except KeyboardInterrupt:
        return 0
