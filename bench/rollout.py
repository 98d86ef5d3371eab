"""Agent updates in the rig (issue 20, item 6): real agents, their updaters and a real fleet.

    python bench/rollout.py --agents 20 --json

What runs: one `liftwatch-fleet serve` (SQLite), one `liftwatch-rig emulate` with one car
per agent, and per box an agent process run from its box's ``current`` symlink (restarted
by a small supervisor here, as systemd's Restart=always would) and a real
`liftwatch-updater` process (its health command: the supervisor's "this version printed
ready and runs" file; its restart command: ask the supervisor). Each box has its own
``root`` (versions/, current) and data dir; the first version (0.1.0) is one shared
virtualenv linked into every box.

Steps, each waiting on what the fleet's database says:

1. Build the agent as wheels in this run, from the repository's committed tree
   (``git archive HEAD``): 0.1.0, 0.2.0 (good) and 0.3.0 (broken: ``liftwatch-agent run``
   exits at once), with every dependency wheel (pip download from the configured index).
2. Sign 0.2.0 and 0.3.0 with a new release key (`liftwatch-fleet releases build`), add them
   (`releases add`, which checks the signature), pin the key in every agent's config.
3. Roll out 0.2.0 in waves 1,50%,100%: ``updated`` = agents back with 0.2.0.
4. Roll out 0.3.0 in waves 1,100%: the canary's updater switches back by itself, the
   rollout halts after its canary (``broken_release_halted``: halted, no agent beyond the
   canary offered); ``rolled_back``: agents that reported rolled_back and run 0.2.0 again.
5. One configuration change pushed to every agent (bench/rollout_config.py: each its own
   document, its box's tables with a changed threshold); ``config_applied`` counts the
   agents that reported it applied.
6. An unsigned bundle: `releases add` refuses it; put in the store behind the CLI's back (a
   compromised fleet) and offered to every agent: ``unsigned_refused`` = agents that
   refused it (nothing fetched: bytes served do not move).
7. ``lost_records``: once the outboxes drained, every agent's seqs the fleet lacks.

Prints ``{"agents", "updated", "broken_release_halted", "rolled_back", "config_applied",
"unsigned_refused", "lost_records"}`` (with --json one JSON object, plus timings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout_config import config_step  # bench/rollout_config.py, beside this script

from agent.updater import COMPLETE
from fleet.releases.bundle import build, generate_key, load_key
from fleet.store.releases import Release, ReleaseStore
from fleet.store.sqlite import SqliteStore
from hil_tests.processes import Service, run_cli, start

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
GOOD, BROKEN, BASE = "0.2.0", "0.3.0", "0.1.0"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr[-2000:]}")
    return result


def build_version(work: Path, version: str, *, broken: bool = False) -> Path:
    """The liftwatch wheel of ``version`` built from HEAD; ``broken``: `run` exits 1."""
    src = work / f"src-{version}"
    src.mkdir(parents=True)
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(src)], input=tar.stdout, check=True)
    init = src / "agent" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    pyproject = src / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('version = "0.1.0"', f'version = "{version}"', 1)
    )
    if broken:
        cli = src / "agent" / "cli.py"
        text = cli.read_text()
        marker = "def main("
        assert marker in text
        cli.write_text(
            text
            + "\n\n_real_main = main\n\n\ndef main(argv=None):  # type: ignore[no-untyped-def]\n"
            + "    import sys as _s\n"
            + "    args = _s.argv[1:] if argv is None else argv\n"
            + "    if args[:1] == ['run']:\n"
            + "        print('broken release: refusing to start', file=_s.stderr)\n"
            + "        return 1\n"
            + "    return _real_main(argv)\n"
        )
    out = work / f"wheels-{version}"
    run(
        [
            PYTHON,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ]
    )
    (wheel,) = out.glob("liftwatch-*.whl")
    return wheel


def dependency_wheels(work: Path, wheel: Path) -> list[Path]:
    """Every wheel the agent needs (pip download of ``wheel[agent]`` from the index)."""
    deps = work / "deps"
    run([PYTHON, "-m", "pip", "download", "-q", "--dest", str(deps), f"{wheel}[agent]"])
    return sorted(p for p in deps.glob("*.whl") if not p.name.startswith("liftwatch-"))


@dataclass
class Box:
    """One edge box: its agent (supervised), its updater, its files."""

    index: int
    dir: Path
    agent: asyncio.subprocess.Process | None = None
    updater: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def agent_id(self) -> str:
        return f"edge-{self.index:02d}"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def config(self) -> Path:
        return self.dir / "agent.toml"

    @property
    def healthy_file(self) -> Path:
        return self.dir / "healthy"

    @property
    def restart_file(self) -> Path:
        return self.dir / "restart"

    def running_version(self) -> str:
        return (self.root / "current").readlink().name


def box_config(box: Box, bus: str, fleet: str, keys: list[str]) -> str:
    return "\n".join(
        [
            "[agent]",
            f'id = "{box.agent_id}"',
            f'data_dir = "{box.dir / "data"}"',
            "state_interval_s = 10.0",
            "counters_interval_s = 30.0",
            'metrics_listen = ""',
            "[fleet]",
            f'endpoints = ["{fleet}"]',
            "insecure = true  # the rig runs on loopback only",
            "[update]",
            "release_keys = [" + ", ".join(f'"{k}"' for k in keys) + "]",
            f'root = "{box.root}"',
            "health_timeout_s = 60.0",
            "healthy_for_s = 5.0",
            "keep_versions = 1",
            "min_free_mb = 0.0",
            "[[bus]]",
            'name = "group-1"',
            f'url = "{bus}"',
            "poll_hz = 2.0",
            "timeout_s = 1.0",
            "[[unit]]",
            f'id = "U-{box.index:02d}"',
            'bus = "group-1"',
            f"slave = {box.index + 1}",
            'profile = "reference"',
            "",
        ]
    )


async def _announce_ready(box: Box, proc: asyncio.subprocess.Process, version: str) -> None:
    """Write ``version`` to the box's healthy file once the agent prints its ready line."""
    assert proc.stdout is not None
    async for line in proc.stdout:
        with contextlib.suppress(ValueError):
            if json.loads(line).get("ready") is True:
                box.healthy_file.write_text(version)


async def supervise(box: Box) -> None:
    """Run the box's agent from ``current`` as systemd would: restart it when it exits
    (after 1 s) or when the updater asks; ``healthy`` holds the version while it runs
    after printing ready."""
    log_file = (box.dir / "agent.log").open("ab")
    while not box.stopping:
        version = box.running_version()
        program = box.root / "current" / "bin" / "liftwatch-agent"
        box.agent = await asyncio.create_subprocess_exec(
            str(program),
            "run",
            "--config",
            str(box.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
        )
        proc = box.agent
        assert proc.stdout is not None

        reader = asyncio.create_task(_announce_ready(box, proc, version))
        while proc.returncode is None and not box.stopping:
            if box.restart_file.exists():
                box.restart_file.unlink()
                box.healthy_file.unlink(missing_ok=True)
                proc.send_signal(signal.SIGTERM)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.3)
        box.healthy_file.unlink(missing_ok=True)
        if proc.returncode is None:
            if box.stopping:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        reader.cancel()
        box.restarts += 1
        if not box.stopping and not box.restart_file.exists():
            await asyncio.sleep(1.0)  # RestartSec
    log_file.close()


async def start_updater(box: Box) -> None:
    # Healthy: the supervisor's file names the version `current` points at now (a stale
    # file of the version before the switch does not count).
    current = box.root / "current"
    same = f'"$(cat {box.healthy_file} 2>/dev/null)" = "$(basename "$(readlink {current})")"'
    health = f"sh -c 'test {same}'"
    box.updater = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "agent.updater",
        "--config",
        str(box.config),
        "--state-dir",
        str(box.dir / "updater"),
        "--interval",
        "1",
        "--restart-command",
        f"touch {box.restart_file}",
        "--health-command",
        health,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(box.dir / "updater.log").open("ab"),
        stdin=asyncio.subprocess.DEVNULL,
    )


def fleet_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        return c.execute(sql, params).fetchall()


async def until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(1.0)
    log(f"{what} ({time.monotonic() - began:.0f} s)")
    return time.monotonic() - began


def versions(db: Path) -> dict[str, str]:
    return dict(fleet_rows(db, "SELECT agent_id, agent_version FROM agents"))


def rollout_state(db: Path, release_id: str) -> tuple[str, int, str]:
    rows = fleet_rows(
        db,
        "SELECT state, wave, reason FROM rollouts WHERE release_id = ? "
        "ORDER BY rollout_id DESC LIMIT 1",
        (release_id,),
    )
    return (str(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else ("", 0, "")


def reports(db: Path, release_id: str, state: str) -> set[str]:
    rows = fleet_rows(
        db,
        "SELECT agent_id FROM update_reports WHERE release_id = ? AND state = ?",
        (release_id, state),
    )
    return {str(r[0]) for r in rows}


async def scenario(n: int, work: Path) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    log("building agent wheels 0.1.0, 0.2.0, 0.3.0 (broken) from HEAD")
    base_wheel = build_version(work, BASE)
    good_wheel = build_version(work, GOOD)
    broken_wheel = build_version(work, BROKEN, broken=True)
    deps = dependency_wheels(work, good_wheel)
    timings["build_s"] = round(time.monotonic() - t0, 1)
    key_path = work / "release.key"
    public = generate_key(key_path)
    key = load_key(key_path)
    build(work / "bundle-good", "agent-0.2.0", GOOD, [good_wheel, *deps], key)
    build(work / "bundle-broken", "agent-0.3.0", BROKEN, [broken_wheel, *deps], key)
    unsigned_manifest, _ = build(
        work / "bundle-unsigned", "agent-0.2.1", "0.2.1", [good_wheel, *deps], None
    )

    log("the shared first version (0.1.0) virtualenv")
    base = work / "base-0.1.0"
    run([PYTHON, "-m", "venv", "--without-pip", str(base)])
    run(
        [
            PYTHON,
            "-m",
            "pip",
            "--python",
            str(base / "bin" / "python"),
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            str(base_wheel),
            *map(str, deps),
        ]
    )
    (base / COMPLETE).write_text("base\n")

    fleet_toml = work / "fleet.toml"
    db = work / "fleet.db"
    fleet_toml.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[http]\nlisten = ""\n[query]\nauth = false\n'
        f'[store]\npath = "{db}"\n'
    )
    services: list[Service] = []
    boxes = [Box(i, work / f"box-{i:02d}") for i in range(n)]
    try:
        fleet = await start("fleet", "fleet", ["serve", "--config", str(fleet_toml)], work)
        services.append(fleet)
        emulator = await start(
            "emulator",
            "hil_tests",
            [
                "emulate",
                "--cars",
                str(n),
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
        for box in boxes:
            (box.root / "versions").mkdir(parents=True)
            (box.dir / "data").mkdir()
            (box.root / "versions" / BASE).symlink_to(base)
            (box.root / "current").symlink_to(box.root / "versions" / BASE)
            box.config.write_text(
                box_config(box, str(emulator.ready["modbus"]), str(fleet.ready["grpc"]), [public])
            )
            box.tasks.append(asyncio.create_task(supervise(box)))
            await start_updater(box)
        timings["all_connected_s"] = await until(
            f"{n} agents connected with {BASE}",
            lambda: sum(v == BASE for v in versions(db).values()) == n,
            300,
        )
        for bundle in ("bundle-good", "bundle-broken"):
            await run_cli(
                "fleet",
                [
                    "releases",
                    "add",
                    str(work / bundle),
                    "--public-key",
                    public,
                    "--keep-in",
                    str(work / "kept"),
                    "--config",
                    str(fleet_toml),
                    "--json",
                ],
            )

        log(f"rolling out {GOOD} in waves 1,50%,100%")
        await run_cli(
            "fleet",
            [
                "rollout",
                "start",
                "agent-0.2.0",
                "--waves",
                "1,50%,100%",
                "--gate-s",
                "10",
                "--offer-timeout-s",
                "600",
                "--config",
                str(fleet_toml),
                "--json",
            ],
        )
        timings["good_rollout_s"] = await until(
            f"rollout of {GOOD} done",
            lambda: rollout_state(db, "agent-0.2.0")[0] in ("done", "halted"),
            1800,
        )
        good_state = rollout_state(db, "agent-0.2.0")
        updated = sum(v == GOOD for v in versions(db).values())
        log(f"good rollout: {good_state}, {updated} agents on {GOOD}")

        log(f"rolling out {BROKEN} in waves 1,100%")
        await run_cli(
            "fleet",
            [
                "rollout",
                "start",
                "agent-0.3.0",
                "--waves",
                "1,100%",
                "--gate-s",
                "10",
                "--offer-timeout-s",
                "600",
                "--config",
                str(fleet_toml),
                "--json",
            ],
        )
        timings["broken_halt_s"] = await until(
            f"rollout of {BROKEN} halted",
            lambda: rollout_state(db, "agent-0.3.0")[0] in ("halted", "done"),
            900,
        )
        state, wave, reason = rollout_state(db, "agent-0.3.0")
        offered_beyond = fleet_rows(
            db,
            "SELECT COUNT(*) FROM rollout_members m JOIN rollouts r ON r.rollout_id = m.rollout_id "
            "WHERE r.release_id = 'agent-0.3.0' AND m.wave > 0 AND m.state != 'pending'",
        )[0][0]
        halted = state == "halted" and wave == 0 and offered_beyond == 0
        log(f"broken rollout: {state} in wave {wave + 1}: {reason}")
        switched_back = reports(db, "agent-0.3.0", "rolled_back")
        await until(
            f"the switched-back agents connected with {GOOD} again",
            lambda: all(versions(db).get(a) == GOOD for a in switched_back),
            120,
        )
        rolled_back = len(switched_back)

        log("one configuration change pushed to every agent (bench/rollout_config.py)")
        configured = await config_step(str(db), {b.agent_id: b.config for b in boxes})
        config_applied = configured["config_applied"]
        timings["config_s"] = configured["config_s"]
        if configured["config_problems"]:
            log(f"configuration rejected: {configured['config_problems']}")

        log("an unsigned bundle: the CLI refuses it; put in the store directly and offered to all")
        refused_by_cli = False
        try:
            await run_cli(
                "fleet",
                [
                    "releases",
                    "add",
                    str(work / "bundle-unsigned"),
                    "--public-key",
                    public,
                    "--keep-in",
                    str(work / "kept"),
                    "--config",
                    str(fleet_toml),
                ],
            )
        except Exception:
            refused_by_cli = True
        store = SqliteStore.open(str(db))
        try:
            (work / "kept" / "agent-0.2.1").mkdir(parents=True)
            ReleaseStore(store).add_release(
                Release(
                    "agent-0.2.1", "0.2.1", unsigned_manifest, b"", str(work / "bundle-unsigned"), 0
                )
            )
        finally:
            store.close()
        await run_cli(
            "fleet",
            [
                "rollout",
                "start",
                "agent-0.2.1",
                "--waves",
                "100%",
                "--gate-s",
                "10",
                "--config",
                str(fleet_toml),
                "--json",
            ],
        )
        await until(
            "every agent refused the unsigned release",
            lambda: len(reports(db, "agent-0.2.1", "refused")) == n,
            300,
        )
        unsigned_refused = len(reports(db, "agent-0.2.1", "refused"))
        fetched_unsigned = any((b.root / "versions" / "0.2.1").exists() for b in boxes)

        log("waiting for the outboxes to drain")

        def drained() -> bool:
            for box in boxes:
                path = box.dir / "data" / "outbox.db"
                with contextlib.closing(
                    sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
                ) as c:
                    if c.execute("SELECT COUNT(*) FROM records").fetchone()[0] > 5:
                        return False
            return True

        await until("outboxes drained", drained, 300)
        # Per agent, the seqs between its first and last that the fleet does not hold
        # (an agent's seqs are contiguous; the first need not be 1).
        gaps = fleet_rows(
            db,
            "SELECT agent_id, MAX(seq) - MIN(seq) + 1 - COUNT(*) FROM records GROUP BY agent_id",
        )
        lost = int(sum(max(0, int(g)) for _, g in gaps))
        return {
            "agents": n,
            "updated": updated,
            "broken_release_halted": halted,
            "rolled_back": rolled_back,
            "config_applied": config_applied,
            "unsigned_refused": unsigned_refused,
            "lost_records": lost,
            "unsigned_refused_by_cli": refused_by_cli,
            "unsigned_installed_anywhere": fetched_unsigned,
            "good_rollout_state": good_state[0],
            "agent_restarts": sum(b.restarts for b in boxes),
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        }
    finally:
        for box in boxes:
            box.stopping = True
            if box.updater is not None and box.updater.returncode is None:
                box.updater.send_signal(signal.SIGTERM)
        for box in boxes:
            for task in box.tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 20)
            if box.updater is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(box.updater.wait(), 10)
        for service in reversed(services):
            await service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="edge boxes (agents) to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="liftwatch-rollout-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(scenario(args.agents, work))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
