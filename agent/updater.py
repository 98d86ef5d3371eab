"""`liftwatch-updater`: installs a signed release on the box and switches back by itself
when the new version does not become healthy (issue 20, item 4; docs/updates.md).

The agent verifies an offered release, fetches its wheels over the fleet's mutual-TLS
channel and stages the bundle in ``<spool>/incoming/<release_id>/`` (``agent.update``).
This program, run by its own systemd unit as root from its own virtualenv (never from the
one it switches), then:

1. copies the bundle out of the agent's reach and verifies it again against the pinned
   keys (it trusts nothing the agent's user could have written), signature and hashes;
2. checks the disk has room (twice the bundle's size plus ``min_free_mb``);
3. creates ``<root>/versions/<version>/``, a new virtualenv beside the running one, and
   pip-installs the wheels into it with ``--no-index --require-hashes`` from the bundle;
   ``.liftwatch-complete`` is written last, so a directory without it is a torn install;
4. switches ``<root>/current`` to it atomically (a new symlink renamed over the old one)
   and restarts the agent;
5. keeps the version once it has been healthy for ``healthy_for_s`` (the agent active and
   its watchdog never restarting it), and prunes old versions; if it is not healthy by
   ``health_timeout_s`` it switches ``current`` back and restarts the agent again, with
   or without a fleet to tell it to.

Every step is recorded in a journal (``state.json``, written by rename) before it is
taken, so an updater killed at any point finishes or undoes its work at its next start.
It never opens the agent's data directory beyond the spool: the outbox is untouched.
Results go to ``<spool>/status/<release_id>.json`` for the agent to report to the fleet.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from agent import __version__
from agent.config import ConfigError, UpdateSettings, load_config
from agent.release import Manifest, ReleaseError, load_bundle

log = logging.getLogger("liftwatch.updater")

COMPLETE = ".liftwatch-complete"
# A torn install is tried again at the next start this many times, then given up.
MAX_ATTEMPTS = 3

Clock = Callable[[], float]
Probe = Callable[[], bool]
Action = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the updater reads and writes: ``root`` holds ``versions/`` and the
    ``current`` symlink, ``spool`` is the agent's hand-over directory, ``state_dir`` the
    updater's own (journal, verified copies of bundles)."""

    root: Path
    spool: Path
    state_dir: Path

    @property
    def versions(self) -> Path:
        """One virtualenv per installed version."""
        return self.root / "versions"

    @property
    def current(self) -> Path:
        """The symlink the agent's unit runs through."""
        return self.root / "current"

    @property
    def journal(self) -> Path:
        """The updater's state, written before every step."""
        return self.state_dir / "state.json"

    @property
    def incoming(self) -> Path:
        """Bundles the agent staged, one directory per release id."""
        return self.spool / "incoming"

    @property
    def status(self) -> Path:
        """Outcomes for the agent to report, one JSON file per release id."""
        return self.spool / "status"


@dataclass(frozen=True, slots=True)
class Journal:
    """The updater's state. ``phase``: idle, installing (into ``version``) or trial (the
    ``current`` link points at ``version`` until it is judged)."""

    phase: str = "idle"
    release_id: str = ""
    version: str = ""
    # Where `current` pointed before the switch ("": nowhere), as a path: the first
    # install may be a virtualenv outside versions/ (deploy/agent/install.sh).
    previous: str = ""
    deadline: float = 0.0
    healthy_since: float | None = None
    attempts: int = 0
    installed: list[str] = field(default_factory=list)  # versions in install order


def read_journal(path: Path) -> Journal:
    """The journal at ``path``; a fresh one when there is none (first start)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Journal()
    return Journal(**raw)


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a reader (or the next start after a
    crash) sees the old content or the new, never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def point(link: Path, target: Path) -> None:
    """Make the symlink ``link`` point at ``target`` atomically (rename over it)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def free_bytes(where: Path) -> int:
    """Bytes an unprivileged writer may still use on ``where``'s file system."""
    stat = os.statvfs(where)
    return stat.f_bavail * stat.f_frsize


def _run(argv: list[str]) -> None:
    """Run ``argv``; `subprocess.CalledProcessError` (with its stderr) if it fails."""
    subprocess.run(argv, check=True, capture_output=True, text=True)


class Updater:
    """The updater's steps on an explicit clock (``clock``: seconds since the epoch, so a
    deadline survives a restart); ``healthy`` says whether the running agent is healthy
    now, ``restart`` restarts it, ``python`` makes the new virtualenvs."""

    def __init__(
        self,
        layout: Layout,
        settings: UpdateSettings,
        *,
        clock: Clock,
        healthy: Probe,
        restart: Action,
        python: str = sys.executable,
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.clock = clock
        self.healthy = healthy
        self.restart = restart
        self.python = python
        self.journal = read_journal(layout.journal)

    # -- journal and reports -----------------------------------------------------------

    def _save(self, journal: Journal) -> None:
        write_durably(self.layout.journal, json.dumps(asdict(journal), indent=1))
        self.journal = journal

    def report(self, release_id: str, state: str, detail: str = "", version: str = "") -> None:
        """Tell the agent (and through it the fleet) where ``release_id`` stands."""
        doc = {"release_id": release_id, "state": state, "detail": detail, "version": version}
        write_durably(self.layout.status / f"{release_id}.json", json.dumps(doc))
        log.info("release %s: %s %s", release_id, state, detail)

    def running_version(self) -> str:
        """The version ``current`` points at ("" before the first install)."""
        try:
            return self.layout.current.readlink().name
        except OSError:
            return ""

    # -- the loop ----------------------------------------------------------------------

    def step(self) -> str:
        """Do the next piece of work (recover a torn install, judge a trial, or start on a
        staged bundle); return the phase afterwards. Never raises for a bad bundle."""
        phase = self.journal.phase
        if phase == "installing":
            self._recover_install()
        elif phase == "trial":
            self._judge()
        else:
            self._take_staged()
        return self.journal.phase

    def _take_staged(self) -> None:
        staged = sorted(
            p for p in self.layout.incoming.glob("*") if p.is_dir() and (p / "READY").exists()
        )
        if staged:
            self._install(staged[0].name, attempts=0)

    def _copy(self, release_id: str) -> Path:
        """The staged bundle copied into the updater's own directory (the agent's user
        cannot change it between verification and install)."""
        source = self.layout.incoming / release_id
        copy = self.layout.state_dir / "bundles" / release_id
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        for item in source.iterdir():
            if item.is_file() and not item.is_symlink():
                shutil.copyfile(item, copy / item.name)
        return copy

    def _done_with(self, release_id: str) -> None:
        shutil.rmtree(self.layout.incoming / release_id, ignore_errors=True)
        shutil.rmtree(self.layout.state_dir / "bundles" / release_id, ignore_errors=True)

    def _install(self, release_id: str, attempts: int) -> None:
        try:
            bundle = self._copy(release_id)
            manifest = load_bundle(bundle, self.settings.release_keys)
        except (ReleaseError, OSError) as exc:
            self.report(release_id, "refused", str(exc))
            self._done_with(release_id)
            return
        if manifest.version == self.running_version():
            self.report(release_id, "healthy", "already running", manifest.version)
            self._done_with(release_id)
            return
        self.layout.versions.mkdir(parents=True, exist_ok=True)
        kept = self.layout.versions / manifest.version
        if (kept / COMPLETE).exists():
            # A version still on disk (the one before, offered again for a roll-back):
            # switch to it without installing anything.
            self._switch(kept, manifest)
            return
        need = 2 * manifest.total_bytes + int(self.settings.min_free_mb * 1024 * 1024)
        have = free_bytes(self.layout.versions)
        if have < need:
            self.report(
                release_id,
                "failed",
                f"not enough disk: {need} bytes needed, {have} free",
                manifest.version,
            )
            self._done_with(release_id)
            return
        self._save(
            replace(
                self.journal,
                phase="installing",
                release_id=release_id,
                version=manifest.version,
                attempts=attempts + 1,
            )
        )
        self.report(release_id, "installing", "", manifest.version)
        target = self.layout.versions / manifest.version
        try:
            self._build(target, bundle, manifest)
        except (OSError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            detail = (
                exc.stderr.strip()[-500:] if isinstance(exc, subprocess.CalledProcessError) else ""
            )
            self.report(release_id, "failed", f"install failed: {exc} {detail}".strip())
            self._done_with(release_id)
            self._save(replace(self.journal, phase="idle", attempts=0))
            return
        self._switch(target, manifest)

    def _build(self, target: Path, bundle: Path, manifest: Manifest) -> None:
        """A fresh virtualenv at ``target`` with exactly the bundle's wheels installed."""
        shutil.rmtree(target, ignore_errors=True)
        _run([self.python, "-m", "venv", "--without-pip", str(target)])
        requirements = bundle / "requirements.txt"
        requirements.write_text(
            "".join(f"{bundle / w.file} --hash=sha256:{w.sha256}\n" for w in manifest.wheels)
        )
        pip = [self.python, "-m", "pip", "--python", str(target / "bin" / "python")]
        quiet = ["--disable-pip-version-check", "--no-input", "--no-cache-dir"]
        install = ["install", *quiet, "--no-index", "--no-deps", "--require-hashes"]
        _run([*pip, *install, "-r", str(requirements)])
        # --no-deps: every dependency must be in the bundle; pip check says if one is not.
        _run([*pip, "check", *quiet[:2]])
        write_durably(target / COMPLETE, manifest.release_id + "\n")

    def _switch(self, target: Path, manifest: Manifest) -> None:
        try:
            previous = str(self.layout.current.readlink())
        except OSError:
            previous = ""
        self._save(
            replace(
                self.journal,
                phase="trial",
                release_id=manifest.release_id,
                version=manifest.version,
                previous=previous,
                deadline=self.clock() + self.settings.health_timeout_s,
                healthy_since=None,
                installed=[v for v in self.journal.installed if v != manifest.version]
                + [manifest.version],
            )
        )
        point(self.layout.current, target)
        self.restart()
        self.report(
            manifest.release_id,
            "switched",
            f"from {Path(previous).name or 'nothing'}",
            manifest.version,
        )

    def _recover_install(self) -> None:
        """A start after the updater died mid-install: the torn virtualenv goes, and the
        install is tried again from the bundle (at most `MAX_ATTEMPTS` times)."""
        j = self.journal
        torn = self.layout.versions / j.version
        if j.version and not (torn / COMPLETE).exists():
            shutil.rmtree(torn, ignore_errors=True)
        self._save(replace(j, phase="idle"))
        log.warning("release %s: install interrupted (attempt %d)", j.release_id, j.attempts)
        if j.attempts < MAX_ATTEMPTS and (self.layout.incoming / j.release_id / "READY").exists():
            self._install(j.release_id, attempts=j.attempts)
        else:
            self.report(j.release_id, "failed", "install interrupted too often", j.version)
            self._done_with(j.release_id)
            self._save(replace(self.journal, attempts=0))

    def _judge(self) -> None:
        j = self.journal
        target = self.layout.versions / j.version
        if self.running_version() != j.version:
            # Died between journal and switch: finish the switch first.
            point(self.layout.current, target)
            self.restart()
            return
        now = self.clock()
        if self.healthy():
            since = j.healthy_since if j.healthy_since is not None else now
            if now - since >= self.settings.healthy_for_s:
                self._keep()
                return
            if since != j.healthy_since:
                self._save(replace(j, healthy_since=since))
        elif j.healthy_since is not None:
            self._save(replace(j, healthy_since=None))
        if now >= j.deadline and self.journal.phase == "trial":
            self._roll_back()

    def _keep(self) -> None:
        j = self.journal
        self._save(replace(j, phase="idle", attempts=0, healthy_since=None))
        self.report(j.release_id, "healthy", "", j.version)
        self._done_with(j.release_id)
        self.prune()

    def _roll_back(self) -> None:
        j = self.journal
        if not j.previous:
            detail = "not healthy in time and no earlier version to go back to"
            self.report(j.release_id, "failed", detail, j.version)
            self._save(replace(j, phase="idle", attempts=0))
            return
        point(self.layout.current, Path(j.previous))
        self.restart()
        installed = [v for v in j.installed if v != j.version]
        self._save(replace(j, phase="idle", attempts=0, installed=installed))
        shutil.rmtree(self.layout.versions / j.version, ignore_errors=True)
        back = Path(j.previous).name
        detail = f"not healthy within {self.settings.health_timeout_s:g} s; back on {back}"
        self.report(j.release_id, "rolled_back", detail, j.version)
        self._done_with(j.release_id)

    def prune(self) -> list[str]:
        """Remove versions beyond the running one and the ``keep_versions`` newest others,
        and any directory that is no complete install; return what went."""
        running = self.running_version()
        others = [v for v in self.journal.installed if v != running]
        keep = {running, *others[-self.settings.keep_versions :]}
        gone: list[str] = []
        for path in sorted(self.layout.versions.iterdir()):
            if path.name not in keep or not (path / COMPLETE).exists():
                shutil.rmtree(path, ignore_errors=True)
                gone.append(path.name)
        self._save(
            replace(self.journal, installed=[v for v in self.journal.installed if v in keep])
        )
        return gone


class SystemdAgent:
    """The agent as systemd runs it: `restart` restarts ``unit``; `healthy` is True while
    the unit is active (a Type=notify agent said READY) and systemd has not restarted it
    since our restart (its watchdog never fired, it never crashed)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self._restarts: int | None = None  # NRestarts right after our restart

    def _show(self) -> dict[str, str]:
        out = subprocess.run(
            ["systemctl", "show", self.unit, "-p", "ActiveState", "-p", "NRestarts"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def restart(self) -> None:
        """Restart the agent and remember systemd's restart count from then on."""
        command_action(["systemctl", "restart", "--no-block", self.unit])()
        self._restarts = None

    def healthy(self) -> bool:
        """Active, and not restarted by systemd since `restart`."""
        props = self._show()
        restarts = int(props.get("NRestarts", "0") or 0)
        if self._restarts is None:
            self._restarts = restarts
        return props.get("ActiveState") == "active" and restarts == self._restarts


def command_probe(argv: Sequence[str]) -> Probe:
    """Healthy: ``argv`` exits 0 (for a box without systemd, and for tests)."""
    return lambda: subprocess.run(list(argv), check=False, capture_output=True).returncode == 0


def command_action(argv: Sequence[str]) -> Action:
    """Run ``argv``; a failure is logged (the health judgement then decides)."""

    def act() -> None:
        result = subprocess.run(list(argv), check=False, capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("%s failed: %s", argv[0], result.stderr.strip())

    return act


def build_parser() -> argparse.ArgumentParser:
    """The updater's argument parser."""
    parser = argparse.ArgumentParser(
        prog="liftwatch-updater",
        description="Install signed agent releases the agent staged, each into a new "
        "virtualenv beside the running one; switch to it atomically, restart the agent, and "
        "switch back by itself if it is not healthy in time (docs/updates.md).",
    )
    parser.add_argument("--version", action="version", version=f"liftwatch-updater {__version__}")
    parser.add_argument("--config", type=Path, required=True, help="the agent's config (TOML)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/liftwatch-updater"),
        help="the updater's journal and bundle copies (default /var/lib/liftwatch-updater)",
    )
    parser.add_argument(
        "--unit", default="liftwatch-agent.service", help="the agent's systemd unit"
    )
    parser.add_argument(
        "--health-command",
        type=shlex.split,
        help="judge health by this command's exit status (one string, split like a shell "
        "would, never run by one) instead of systemd's view of --unit",
    )
    parser.add_argument(
        "--restart-command",
        type=shlex.split,
        help="restart the agent with this command instead of `systemctl restart UNIT`",
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between steps (default 5)"
    )
    parser.add_argument(
        "--once", action="store_true", help="take steps until idle or judging, then exit"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the updater until SIGTERM (or, with --once, until it has nothing to do now)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    settings = config.update
    spool = Path(settings.spool_dir) if settings.spool_dir else config.data_dir / "updates"
    layout = Layout(Path(settings.root), spool, args.state_dir)
    agent = SystemdAgent(args.unit)
    healthy = command_probe(args.health_command) if args.health_command else agent.healthy
    restart = command_action(args.restart_command) if args.restart_command else agent.restart
    updater = Updater(layout, settings, clock=time.time, healthy=healthy, restart=restart)
    while True:
        phase = updater.step()
        if args.once and phase == "idle":
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
