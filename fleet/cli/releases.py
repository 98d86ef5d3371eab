"""``liftwatch-fleet releases`` and ``liftwatch-fleet rollout`` (issue 20; docs/updates.md).

- ``releases keygen KEY``: a new ed25519 release key (the private half in KEY, 0600); prints
  the public half, which agents pin in ``[update] release_keys``;
- ``releases build``: a signed bundle of wheels; ``releases add BUNDLE``: verify it with
  the pinned public key and keep it; ``releases list``;
- ``rollout start RELEASE``: offer it in waves (canary first) to every agent not on it,
  or to --agents; ``rollout status [ID]``; ``rollout pause|resume|abort ID``.

A serving fleet advances its rollouts and sends the offers on the agents' streams.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path

from fleet.cli.common import (
    UsageError,
    add_group,
    open_readonly,
    print_json,
    store_options,
    store_target,
)
from fleet.releases.bundle import build, generate_key, load_key
from fleet.releases.rollout import Plan, parse_waves
from fleet.releases.service import ReleaseRefusedError, add_release, control, start_rollout
from fleet.store.open import open_store
from fleet.store.releases import ReleaseStore

_DEFAULT = Plan()


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `releases` and `rollout` command groups."""
    action = add_group(
        commands,
        "releases",
        "signed agent releases: keygen, build, add, list",
        "A release is a bundle of the agent's wheels with a manifest of their sha256, "
        "signed with an ed25519 release key that agents pin (docs/updates.md).",
        dest="action",
    )
    keygen = action("keygen", "make a release key; print its public half for agents to pin")
    keygen.add_argument("key", type=Path, help="where to write the private key (PEM, 0600)")
    build_cmd = action(
        "build",
        "sign wheels into a bundle directory",
        "Write OUT: the wheels, manifest.json (each wheel's sha256 and size) and "
        "manifest.sig (ed25519 by --key).",
    )
    build_cmd.add_argument("wheels", nargs="+", type=Path, help="the agent's wheels (all of them)")
    build_cmd.add_argument("--id", required=True, help="release id, e.g. agent-0.2.0")
    build_cmd.add_argument("--version", required=True, help="the agent version it installs")
    build_cmd.add_argument("--key", type=Path, required=True, help="the release private key")
    build_cmd.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    add = store_options(
        action(
            "add",
            "verify a bundle and keep it for rollouts",
            "Verify BUNDLE's signature with --public-key (what agents pin) and keep a copy "
            "in --keep-in; a wrongly signed or unsigned bundle is refused (exit status 2).",
        )
    )
    add.add_argument("bundle", type=Path, help="bundle directory (releases build)")
    add.add_argument("--public-key", required=True, help="base64 ed25519 public key")
    add.add_argument(
        "--keep-in", type=Path, default=Path("releases"), help="where the fleet keeps bundles"
    )
    store_options(action("list", "list releases, newest first"))

    rollout = add_group(
        commands,
        "rollout",
        "staged rollouts of a release: start, status, pause, resume, abort",
        "Offer a release in waves gated on health; a failed gate halts the rollout and "
        "rolls back the failed agents (docs/updates.md).",
        dest="action",
    )
    start = store_options(rollout("start", "start a rollout of a release"))
    start.add_argument("release", help="release id (releases list)")
    start.add_argument(
        "--agents", help="comma-separated agent ids, in offer order (default: every agent)"
    )
    start.add_argument(
        "--waves",
        default=",".join(_DEFAULT.waves),
        help="cumulative wave sizes, counts or percentages (default "
        + ",".join(_DEFAULT.waves).replace("%", "%%")
        + ")",
    )
    start.add_argument(
        "--gate-s",
        type=float,
        default=_DEFAULT.gate_s,
        help=f"how long each agent must stay healthy (default {_DEFAULT.gate_s:g})",
    )
    start.add_argument(
        "--offer-timeout-s",
        type=float,
        default=_DEFAULT.offer_timeout_s,
        help=f"to come back with the new version (default {_DEFAULT.offer_timeout_s:g})",
    )
    start.add_argument(
        "--error-threshold",
        type=float,
        default=_DEFAULT.error_threshold,
        help="the fraction of a wave that may fail with the rollout going on (default 0)",
    )
    status = store_options(rollout("status", "a rollout's waves and agents (default: newest)"))
    status.add_argument("id", nargs="?", type=int, help="rollout id")
    for name, text in (
        ("pause", "stop offering; go on judging"),
        ("resume", "go on offering after a pause"),
        ("abort", "stop for good; withdraw offers not yet taken"),
    ):
        store_options(rollout(name, text)).add_argument("id", type=int, help="rollout id")


def run_releases(args: argparse.Namespace) -> int:
    """Run a `releases` action; returns the exit status."""
    if args.action == "keygen":
        if args.key.exists():
            raise UsageError(f"{args.key} exists: a release key is never overwritten")
        print(generate_key(args.key))
        return 0
    if args.action == "build":
        if args.out.exists():
            raise UsageError(f"{args.out} exists")
        build(args.out, args.id, args.version, args.wheels, load_key(args.key))
        print(args.out)
        return 0
    if args.action == "add":
        target, _ = store_target(args)
        store = open_store(target)
        try:
            args.keep_in.mkdir(parents=True, exist_ok=True)
            release = add_release(
                ReleaseStore(store),
                args.bundle,
                args.keep_in.resolve(),
                args.public_key,
                int(time.time() * 1e6),
            )
        except ReleaseRefusedError as exc:
            raise UsageError(str(exc)) from None
        finally:
            store.close()
        _say(
            args,
            {"release_id": release.release_id, "version": release.version},
            f"added {release.release_id} ({release.version})",
        )
        return 0
    store, _ = open_readonly(args)
    try:
        rows = [
            {
                "release_id": r.release_id,
                "version": r.version,
                "added": dt.datetime.fromtimestamp(r.added_us / 1e6, dt.UTC).isoformat(),
                "bundle": r.bundle,
            }
            for r in ReleaseStore(store).releases()
        ]
    finally:
        store.close()
    if args.json:
        print_json({"releases": rows})
    else:
        for row in rows:
            print(f"{row['release_id']}\t{row['version']}\t{row['added']}")
    return 0


def run_rollout(args: argparse.Namespace) -> int:
    """Run a `rollout` action; returns the exit status."""
    now = time.time()
    if args.action == "status":
        store, _ = open_readonly(args)
        try:
            return _status(args, ReleaseStore(store))
        finally:
            store.close()
    target, _ = store_target(args)
    store = open_store(target)
    releases = ReleaseStore(store)
    try:
        if args.action == "start":
            try:
                plan = Plan(
                    waves=parse_waves(args.waves),
                    gate_s=args.gate_s,
                    offer_timeout_s=args.offer_timeout_s,
                    error_threshold=args.error_threshold,
                )
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            release = releases.release(args.release)
            if release is None:
                raise UsageError(f"no release {args.release} (releases list)")
            known = dict(releases.agents())
            wanted = args.agents.split(",") if args.agents else sorted(known)
            if unknown := [a for a in wanted if a not in known]:
                raise UsageError(f"unknown agents: {', '.join(unknown[:5])}")
            agents = [(a, known[a]) for a in wanted if known[a] != release.version]
            rollout_id = start_rollout(releases, args.release, agents, plan, now)
            _say(
                args,
                {"rollout_id": rollout_id},
                f"rollout {rollout_id}: {release.release_id} to {len(agents)} agents",
            )
            return 0
        rollout = control(releases, args.id, args.action, now)
    except ReleaseRefusedError as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()
    _say(
        args,
        {"rollout_id": rollout.rollout_id, "state": rollout.state.value},
        f"rollout {rollout.rollout_id}: {rollout.state.value}",
    )
    return 0


def _say(args: argparse.Namespace, doc: dict[str, object], line: str) -> None:
    """``doc`` as JSON with --json, else ``line``."""
    if args.json:
        print_json(doc)
    else:
        print(line)


def _status(args: argparse.Namespace, releases: ReleaseStore) -> int:
    rollouts = releases.rollouts()
    rollout = (
        releases.rollout(args.id) if args.id is not None else (rollouts[0] if rollouts else None)
    )
    if rollout is None:
        raise UsageError("no such rollout" if args.id is not None else "no rollout yet")
    members = releases.members(rollout.rollout_id)
    waves: dict[int, dict[str, int]] = {}
    for m in members:
        counts = waves.setdefault(m.wave, {})
        counts[m.state.value] = counts.get(m.state.value, 0) + 1
    doc = {
        "rollout_id": rollout.rollout_id,
        "release_id": rollout.release_id,
        "version": rollout.version,
        "state": rollout.state.value,
        "wave": rollout.wave + 1,
        "reason": rollout.reason,
        "plan": asdict(rollout.plan),
        "waves": [{"wave": w + 1, "states": waves[w]} for w in sorted(waves)],
        "agents": [
            {"agent_id": m.agent_id, "wave": m.wave + 1, "state": m.state.value, "detail": m.detail}
            for m in members
        ],
    }
    if args.json:
        print_json(doc)
        return 0
    print(
        f"rollout {rollout.rollout_id}: {rollout.release_id} ({rollout.version}) "
        f"{rollout.state.value}"
    )
    if rollout.reason:
        print(f"  {rollout.reason}")
    for w in sorted(waves):
        marker = "*" if w == rollout.wave else " "
        shown = ", ".join(f"{k} {v}" for k, v in sorted(waves[w].items()))
        print(f" {marker}wave {w + 1}: {shown}")
    return 0
