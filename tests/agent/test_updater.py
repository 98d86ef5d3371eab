"""The on-box updater (issue 20, item 4) with real virtualenvs and real pip installs of
small real wheels: signed bundles installed beside the running version and kept once
healthy, old versions pruned, a release that fails to start switched back by the updater
alone (no fleet), unsigned / wrongly signed / tampered bundles refused, a disk without
room refused before anything is written, and the outbox never touched. The deadlines run
on an explicit clock: nothing here sleeps.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import UpdateSettings
from agent.updater import COMPLETE, Layout, SystemdAgent, Updater, read_journal
from fleet.releases.bundle import build, public_text
from tests.agent.wheels import make_wheel

KEY = Ed25519PrivateKey.generate()
SETTINGS = UpdateSettings(
    release_keys=(public_text(KEY),),
    health_timeout_s=60.0,
    healthy_for_s=30.0,
    keep_versions=1,
    min_free_mb=0.0,
)


class Box:
    """A box's tree in ``tmp``: an outbox in the data dir, the spool, the updater."""

    def __init__(self, tmp: Path, settings: UpdateSettings = SETTINGS) -> None:
        self.tmp = tmp
        self.now = 1_000_000.0
        self.restarts = 0
        self.layout = Layout(tmp / "opt", tmp / "data" / "updates", tmp / "updater")
        self.outbox = tmp / "data" / "outbox.db"
        self.outbox.parent.mkdir(parents=True)
        self.outbox.write_bytes(b"records that must survive" * 1000)
        self.outbox_hash = hashlib.sha256(self.outbox.read_bytes()).hexdigest()
        self.settings = settings
        self.updater = self.make_updater()

    def make_updater(self) -> Updater:
        return Updater(
            self.layout,
            self.settings,
            clock=lambda: self.now,
            healthy=self.healthy,
            restart=self.restart,
        )

    def healthy(self) -> bool:
        python = self.layout.current / "bin" / "python"
        return subprocess.run([str(python), "-m", "fakeagent"], check=False).returncode == 0

    def restart(self) -> None:
        self.restarts += 1

    def stage(
        self,
        release_id: str,
        version: str,
        *,
        healthy: bool = True,
        key: Ed25519PrivateKey | None = KEY,
        payload: bytes = b"",
    ) -> Path:
        """What agent.update does: a bundle in the spool, READY written last."""
        wheel = make_wheel(
            self.tmp / "wheels" / release_id, version, healthy=healthy, payload=payload
        )
        bundle = self.layout.incoming / release_id
        build(bundle, release_id, version, [wheel], key)
        (bundle / "READY").touch()
        return bundle

    def status(self, release_id: str) -> dict[str, str]:
        import json

        return json.loads((self.layout.status / f"{release_id}.json").read_text())  # type: ignore[no-any-return]

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.layout.versions.iterdir())

    def outbox_untouched(self) -> bool:
        return hashlib.sha256(self.outbox.read_bytes()).hexdigest() == self.outbox_hash


def install_and_keep(box: Box, release_id: str, version: str) -> None:
    box.stage(release_id, version)
    assert box.updater.step() == "trial"
    assert box.updater.step() == "trial"  # healthy, but not for healthy_for_s yet
    box.now += SETTINGS.healthy_for_s
    assert box.updater.step() == "idle"
    assert box.status(release_id)["state"] == "healthy"


def test_releases_install_beside_the_running_one_and_old_ones_are_pruned(tmp_path: Path) -> None:
    box = Box(tmp_path)
    install_and_keep(box, "r1", "1.0")
    assert box.layout.current.readlink().name == "1.0"
    assert (box.layout.versions / "1.0" / COMPLETE).exists()
    install_and_keep(box, "r2", "2.0")
    assert box.versions() == ["1.0", "2.0"]  # the previous one kept for switching back
    install_and_keep(box, "r3", "3.0")
    assert box.versions() == ["2.0", "3.0"]  # keep_versions = 1: 1.0 pruned
    assert box.layout.current.readlink().name == "3.0"
    assert box.restarts == 3
    assert not any(box.layout.incoming.iterdir())  # the staged bundles are cleared
    assert box.outbox_untouched()


def test_a_release_that_fails_to_start_is_switched_back_without_a_fleet(tmp_path: Path) -> None:
    box = Box(tmp_path)
    install_and_keep(box, "r1", "1.0")
    box.stage("r2", "2.0", healthy=False)
    assert box.updater.step() == "trial"
    assert box.layout.current.readlink().name == "2.0"
    box.now += SETTINGS.health_timeout_s - 1
    assert box.updater.step() == "trial"  # not yet: the bound is not reached
    box.now += 1
    assert box.updater.step() == "idle"
    assert box.layout.current.readlink().name == "1.0"
    assert box.status("r2")["state"] == "rolled_back"
    assert box.versions() == ["1.0"]
    assert box.restarts == 3  # r1, r2, and back
    assert box.healthy()
    assert box.outbox_untouched()


def test_a_restarted_updater_goes_on_judging_the_trial(tmp_path: Path) -> None:
    box = Box(tmp_path)
    install_and_keep(box, "r1", "1.0")
    box.stage("r2", "2.0", healthy=False)
    assert box.updater.step() == "trial"
    box.updater = box.make_updater()  # a new process reads the journal
    box.now += SETTINGS.health_timeout_s
    assert box.updater.step() == "idle"
    assert box.layout.current.readlink().name == "1.0"


def test_unsigned_wrongly_signed_and_tampered_bundles_are_refused(tmp_path: Path) -> None:
    box = Box(tmp_path)
    install_and_keep(box, "r1", "1.0")
    box.stage("unsigned", "2.0", key=None)
    box.updater.step()
    assert box.status("unsigned")["state"] == "refused"
    assert "unsigned" in box.status("unsigned")["detail"]
    box.stage("stranger", "2.0", key=Ed25519PrivateKey.generate())
    box.updater.step()
    assert "no pinned release key" in box.status("stranger")["detail"]
    bundle = box.stage("tampered", "2.0")
    wheel = next(bundle.glob("*.whl"))
    wheel.write_bytes(make_wheel(tmp_path / "evil", "2.0", healthy=False).read_bytes())
    box.updater.step()
    assert "differs from the signed manifest" in box.status("tampered")["detail"]
    assert box.versions() == ["1.0"] and box.layout.current.readlink().name == "1.0"
    assert box.restarts == 1
    assert read_journal(box.layout.journal).phase == "idle"


def test_rotation_a_release_signed_by_the_new_key_is_accepted_once_both_are_pinned(
    tmp_path: Path,
) -> None:
    new_key = Ed25519PrivateKey.generate()
    box = Box(tmp_path)
    box.stage("r1", "1.0", key=new_key)
    box.updater.step()
    assert box.status("r1")["state"] == "refused"
    box.settings = replace(SETTINGS, release_keys=(public_text(KEY), public_text(new_key)))
    box.updater = box.make_updater()
    box.stage("r1b", "1.0", key=new_key)
    assert box.updater.step() == "trial"


def test_no_room_for_the_release_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    box = Box(tmp_path, replace(SETTINGS, min_free_mb=1e9))
    box.stage("r1", "1.0")
    assert box.updater.step() == "idle"
    assert box.status("r1")["state"] == "failed"
    assert "not enough disk" in box.status("r1")["detail"]
    assert box.versions() == []
    assert box.restarts == 0


def test_a_roll_back_offer_switches_to_the_version_kept_on_disk(tmp_path: Path) -> None:
    box = Box(tmp_path)
    install_and_keep(box, "r1", "1.0")
    install_and_keep(box, "r2", "2.0")
    marker = box.layout.versions / "1.0" / COMPLETE
    before = marker.stat().st_mtime_ns
    install_and_keep(box, "r1-again", "1.0")  # the fleet rolls 2.0 back: 1.0 offered again
    assert box.layout.current.readlink().name == "1.0"
    assert marker.stat().st_mtime_ns == before  # switched to, not installed again
    assert box.versions() == ["1.0", "2.0"]


def test_systemd_health_is_active_and_not_restarted_since_our_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`SystemdAgent` against a stand-in `systemctl` on PATH that answers `show` from a
    file and logs `restart`: healthy while active with the restart count seen right after
    our restart; a watchdog restart (the count grows) or a failed unit is not healthy."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "state"
    calls = tmp_path / "calls"
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = show ] && cat {state}\nexit 0\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    agent = SystemdAgent("liftwatch-agent.service")
    state.write_text("ActiveState=activating\nNRestarts=4\n")
    agent.restart()
    assert "restart --no-block liftwatch-agent.service" in calls.read_text()
    assert not agent.healthy()  # not READY yet
    state.write_text("ActiveState=active\nNRestarts=4\n")
    assert agent.healthy()
    state.write_text("ActiveState=active\nNRestarts=5\n")  # the watchdog killed it once
    assert not agent.healthy()
    agent.restart()  # a new trial counts from here
    assert agent.healthy()
    state.write_text("ActiveState=failed\nNRestarts=5\n")
    assert not agent.healthy()
