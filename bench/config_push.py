"""Remote configuration with real processes (issue 20, item 1): a fleet (`python -m fleet
serve`, SQLite), the emulator and N agents (`python -m agent run`, each watching two
emulated cars: unit a and unit b). Then:

1. An invalid document to every agent (unit a's door_close_failure_s = -5): every agent
   must reject it with check-config's problem and change nothing.
2. A valid one (unit a's door_close_failure_s = 25, unit b as it was): every agent must
   apply it without restarting (same process), and its history must name unit a only.

Prints ``{"agents", "rejected", "applied", "restarted", "history_units_touched",
"push_to_all_rejected_s", "push_to_all_applied_s", "apply_latency_ms": {p50, max}}``
(with --json one JSON object). Latency is from the version's creation to the agent's
report as the fleet stamps them; on this shared 2-core machine it also measures the load.

    python bench/config_push.py --agents 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollout_config import remote_tables  # beside this script

from fleet.configs.service import set_document
from fleet.store.configs import agent_document
from fleet.store.open import open_store
from hil_tests.processes import Service, start


def agent_config(i: int, data: Path, bus: str, fleet: str) -> str:
    return (
        f'[agent]\nid = "edge-{i:02d}"\ndata_dir = "{data}"\nmetrics_listen = ""\n'
        f'[fleet]\nendpoints = ["{fleet}"]\ninsecure = true  # loopback only\n'
        f'[[bus]]\nname = "group-1"\nurl = "{bus}"\npoll_hz = 2.0\ntimeout_s = 1.0\n'
        f'[[unit]]\nid = "U-{i:02d}-a"\nbus = "group-1"\nslave = {2 * i + 1}\n'
        f'[[unit]]\nid = "U-{i:02d}-b"\nbus = "group-1"\nslave = {2 * i + 2}\n'
    )


def with_unit_a_threshold(text: str, seconds: float) -> str:
    """The remote tables of an agent file with unit a's door_close_failure_s set."""
    tables = remote_tables(text)
    marker = '-a"\nbus = "group-1"\n'
    at = tables.index(marker) + len(marker)
    at = tables.index("\n", at) + 1  # after unit a's slave line
    return tables[:at] + f"[unit.detect]\ndoor_close_failure_s = {seconds}\n" + tables[at:]


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, params).fetchall()


async def until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.2)
    return round(time.monotonic() - start, 2)


def push(db: Path, texts: dict[str, str]) -> dict[str, int]:
    store = open_store(str(db))
    try:
        now_us = int(time.time() * 1e6)
        return {a: set_document(store, agent_document(a), t, now_us) for a, t in texts.items()}
    finally:
        store.close()


def reported(db: Path, versions: dict[str, int]) -> dict[str, tuple[int, str, int | None]]:
    """Per agent that reported its version: (applied, problems JSON, report_us)."""
    found = rows(
        db,
        "SELECT agent_id, report_version, report_applied, problems, report_us FROM agent_configs",
    )
    return {a: (ok, p, us) for a, v, ok, p, us in found if versions.get(a) == v}


async def scenario(n: int, work: Path) -> dict[str, Any]:
    db = work / "fleet.db"
    fleet_toml = work / "fleet.toml"
    fleet_toml.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[http]\nlisten = ""\n[query]\nauth = false\n'
        f'[store]\npath = "{db}"\n'
    )
    services: list[Service] = []
    try:
        fleet = await start("fleet", "fleet", ["serve", "--config", str(fleet_toml)], work)
        services.append(fleet)
        emulator = await start(
            "emulator",
            "hil_tests",
            [
                "emulate",
                "--cars",
                str(2 * n),
                "--control",
                "127.0.0.1:0",
                "--modbus",
                "tcp://127.0.0.1:0",
                "--seed",
                "7",
            ],
            work,
        )
        services.append(emulator)
        files: dict[str, Path] = {}
        agents: dict[str, Service] = {}
        for i in range(n):
            path = work / f"agent-{i:02d}.toml"
            (work / f"data-{i:02d}").mkdir()
            path.write_text(
                agent_config(
                    i,
                    work / f"data-{i:02d}",
                    str(emulator.ready["modbus"]),
                    str(fleet.ready["grpc"]),
                )
            )
            files[f"edge-{i:02d}"] = path
            agents[f"edge-{i:02d}"] = await start(
                f"agent-{i:02d}", "agent", ["run", "--config", str(path)], work
            )
            services.append(agents[f"edge-{i:02d}"])
        await until(
            f"{n} agents connected", lambda: len(rows(db, "SELECT agent_id FROM agents")) == n, 120
        )
        pids = {a: s.process.pid for a, s in agents.items()}

        async def push_all(seconds: float, what: str) -> tuple[dict[str, int], Any, float]:
            """Unit a's threshold set to ``seconds`` on every agent; wait for every report."""
            texts = {a: with_unit_a_threshold(p.read_text(), seconds) for a, p in files.items()}
            t0 = time.monotonic()
            versions = await asyncio.to_thread(push, db, texts)
            await until(what, lambda: len(reported(db, versions)) == n, 120)
            return versions, reported(db, versions), round(time.monotonic() - t0, 2)

        _, bad_reports, rejected_s = await push_all(-5.0, "every agent reported the invalid one")
        rejected = sum(
            1
            for ok, problems, _ in bad_reports.values()
            if not ok and "door_close_failure_s" in problems
        )
        good_versions, good_reports, applied_s = await push_all(
            25.0, "every agent reported the valid one"
        )
        applied = sum(1 for ok, _, _ in good_reports.values() if ok)
        created = dict(rows(db, "SELECT version, created_us FROM config_versions"))
        latencies = sorted(
            (us - created[good_versions[a]]) / 1000 for a, (_, _, us) in good_reports.items() if us
        )
        touched = sorted(
            {u for (u,) in rows(db, "SELECT unit_id FROM unit_history WHERE kind = 'config'")}
        )
        restarted = sum(
            1
            for a, s in agents.items()
            if s.process.returncode is not None or s.process.pid != pids[a]
        )
        return {
            "agents": n,
            "rejected": rejected,
            "applied": applied,
            "restarted": restarted,
            "history_units_touched": {
                "a": sum(1 for u in touched if u.endswith("-a")),
                "b": sum(1 for u in touched if u.endswith("-b")),
            },
            "push_to_all_rejected_s": rejected_s,
            "push_to_all_applied_s": applied_s,
            "apply_latency_ms": {
                "p50": round(statistics.median(latencies)) if latencies else None,
                "max": round(latencies[-1]) if latencies else None,
            },
        }
    finally:
        for service in reversed(services):
            await service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="agent processes (default 20)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="config-push-") as work:
        result = asyncio.run(scenario(args.agents, Path(work)))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    ok = result["rejected"] == result["agents"] == result["applied"] and not result["restarted"]
    return 0 if ok and result["history_units_touched"]["b"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
