"""A full disk never costs an event: on a real, small tmpfs filled to the last page, an
event takes the outbox's reserve, telemetry is refused without committing anything (its
caller keeps it), and the reserve comes back once the disk has room.

Mounting needs root (CI runs as root); elsewhere these tests skip, and under
LIFTWATCH_REQUIRE_SERVICES=1 they fail instead (`tests.conftest.service_missing`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.app import Agent
from agent.bus.scheduler import TurnKind
from agent.config import load_config
from agent.outbox import Outbox, OutboxFullError
from protos.liftwatch.v1 import records_pb2
from tests.agent.test_agent_commits import CONFIG
from tests.agent.test_outbox import event, sample
from tests.conftest import service_missing

PAGE = 4096


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``where`` for the block, unmounted after it."""
    where.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        service_missing(f"cannot mount a tmpfs: {mount.stderr.strip() or mount.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path, name: str = "filler") -> Path:
    """Write ``disk/name`` until the disk refuses another byte; return its path."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, PAGE, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path


def free_bytes(disk: Path) -> int:
    stat = os.statvfs(disk)
    return stat.f_bavail * stat.f_frsize


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", 2 * 1024 * 1024) as where:
        yield where


def kinds(box: Outbox) -> list[str]:
    return [
        records_pb2.Record.FromString(p.payload).WhichOneof("payload") or ""
        for p in box.pending(0, 100_000)
    ]


def test_an_event_takes_the_reserve_when_the_disk_is_full(disk: Path) -> None:
    now = [0.0]
    box = Outbox(
        disk / "outbox.db", reserve_bytes=256 * 1024, wall=lambda: 0.0, monotonic=lambda: now[0]
    )
    assert box.reserve_held()
    box.append([sample("a", floor) for floor in range(20)])
    filler = fill(disk)
    assert free_bytes(disk) < PAGE

    # Telemetry alone never takes the reserve; nothing of it is committed.
    last_seq, depth = box.last_seq, box.depth()
    with pytest.raises(OutboxFullError):
        box.append([sample("a", 99) for _ in range(500)])
    assert (box.last_seq, box.depth()) == (last_seq, depth)
    assert box.reserve_held()

    # An event does: committed with the next seq, the reserve released.
    (seq,) = box.append([event("a")])
    assert seq == last_seq + 1
    assert not box.reserve_held()
    assert box.reserve_releases == 1
    assert kinds(box).count("event") == 1
    box.close()

    # It was committed, not merely held: a fresh process finds it (on the still full disk).
    reopened = Outbox(disk / "outbox.db", reserve_bytes=256 * 1024, monotonic=lambda: now[0])
    assert [p.seq for p in reopened.pending(seq - 1, 10)] == [seq]

    # Room again: the next append puts the reserve back (no sooner than RESERVE_RETRY_S).
    filler.unlink()
    now[0] += 60.0
    reopened.append([sample("a", 1)])
    assert reopened.reserve_held()
    reopened.close()


def test_a_failed_append_can_be_repeated_and_numbers_without_gaps(disk: Path) -> None:
    box = Outbox(disk / "outbox.db", reserve_bytes=0, wall=lambda: 0.0)
    filler = fill(disk)
    records = [sample("a", floor) for floor in range(2_000)]
    with pytest.raises(OutboxFullError):
        box.append(records)
    filler.unlink()
    seqs = box.append(records)  # the same records again, as the agent retries them
    assert seqs == list(range(1, 2_001))
    assert [r.seq for r in records] == seqs
    assert box.depth() == 2_000


def test_a_full_disk_at_start_is_not_mistaken_for_a_corrupt_file(disk: Path) -> None:
    box = Outbox(disk / "outbox.db", reserve_bytes=0, wall=lambda: 0.0)
    box.append([event("a")])
    box.close()
    (disk / "outbox.db").rename(disk / "kept.db")
    fill(disk)
    # A new file cannot even be created: the error is raised, nothing is moved aside.
    with pytest.raises(Exception, match="full"):
        Outbox(disk / "outbox.db", reserve_bytes=0)
    assert not list(disk.glob("*.corrupt-*"))


def agent_config(data_dir: Path) -> str:
    """test_agent_commits' config with the outbox on ``data_dir``, without a reserve, and
    a 5 s bound on failing appends."""
    return CONFIG.replace(
        'data_dir = "data"',
        f'data_dir = "{data_dir}"\noutbox_reserve_mb = 0\noutbox_fail_restart_s = 5.0',
    )


def stored_kinds(app: Agent) -> list[str]:
    return kinds(app.outbox)


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def app(tmp_path: Path, disk: Path, clock: list[float]) -> Iterator[Agent]:
    path = tmp_path / "agent.toml"
    path.write_text(agent_config(disk), encoding="utf-8")
    agent = Agent(load_config(path), monotonic=lambda: clock[0])
    yield agent
    agent.outbox.close()


def failures(app: Agent) -> float:
    value = app.metrics.registry.get_sample_value("liftwatch_agent_outbox_append_failures_total")
    return value or 0.0


def test_a_failed_append_keeps_the_event_and_retries_it_each_cycle(
    app: Agent, disk: Path, clock: list[float]
) -> None:
    filler = fill(disk)
    app._keep([sample("car-1"), event("car-1")])  # no reserve: even the event fails
    assert app.outbox.depth() == 0
    assert failures(app) == 1
    app.on_cycle_end("line", 1.0)  # retried, fails again, still held
    assert failures(app) == 2
    assert [r.WhichOneof("payload") for r in app._held] == ["car_state", "event"]

    filler.unlink()
    app.on_cycle_end("line", 2.0)
    assert stored_kinds(app) == ["car_state", "event"]  # exactly once, in order
    assert app._held == []
    assert app.liveness.failing_for("outbox") == 0.0


def test_appends_failing_past_their_bound_stop_the_watchdog(
    app: Agent, disk: Path, clock: list[float]
) -> None:
    fill(disk)
    app._keep([event("car-1")])
    assert "outbox" not in app.liveness.stale(within_s=60.0)
    clock[0] += 4.0
    app.on_cycle_end("line", 1.0)
    assert "outbox" not in app.liveness.stale(within_s=60.0)
    clock[0] += 2.0  # 6 s of failures, past outbox_fail_restart_s = 5
    assert app.liveness.stale(within_s=60.0) == ["outbox"]
    assert app.metrics.registry.get_sample_value("liftwatch_agent_outbox_failing_seconds") == 6.0


def test_held_records_are_bounded_by_thinning_samples_never_events(
    app: Agent, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.app.MAX_HELD_RECORDS", 10)
    fill(disk)
    app._keep([event("car-1")])
    for floor in range(30):
        app._keep([sample("car-1", floor)])
        app.on_cycle_end("line", float(floor))
    app._keep([event("car-1")])
    held = app._held
    assert len(held) <= 11
    assert [r.WhichOneof("payload") for r in held].count("event") == 2
    floors = [r.car_state.floor for r in held if r.WhichOneof("payload") == "car_state"]
    assert floors == sorted(floors) and floors[-1] == 29  # the newest kept, oldest dropped
    assert app.held_thinned == 30 - len(floors)


def test_a_delivery_that_keeps_raising_is_counted_and_stops_the_watchdog(
    app: Agent, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the disk this time: a detector bug raising on every sample."""

    def broken(*args: object) -> list[records_pb2.Record]:
        raise RuntimeError("a detector bug")

    monkeypatch.setattr(app.monitors["car-1"], "on_sample", broken)
    sink = app.sink("line")
    for _ in range(3):
        with pytest.raises(RuntimeError):
            sink.on_sample(1, {}, TurnKind.FAST, clock[0])
    assert (
        app.metrics.registry.get_sample_value(
            "liftwatch_agent_sink_failures_total", {"bus": "line"}
        )
        == 3
    )
    clock[0] += 6.0  # past outbox_fail_restart_s = 5
    assert "sink line" in app.liveness.stale(within_s=60.0)
    monkeypatch.undo()
    sink.on_cycle_end(clock[0])  # a delivery that works ends the run of failures
    assert "sink line" not in app.liveness.stale(within_s=60.0)
