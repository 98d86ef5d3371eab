"""``liftwatch-fleet config set|unset|diff|history|rollback`` (issue 20): agents' configuration
documents, per agent or per group, every version kept (docs/updates.md).

- ``config set (--agent ID | --group NAME [--agents A,B]) FILE``: a new version; a serving
  fleet sends it on the agents' streams, they check it with check-config's checks and
  report applied or the problems;
- ``config diff [AGENT]``: desired against applied for every agent, or for one the text
  diff and its last report;
- ``config history (--agent ID | --group NAME)``: every version;
- ``config rollback (--agent ID | --group NAME) VERSION``: a new version with VERSION's
  text;
- ``config unset --agent ID`` / ``config unset --group NAME --agents A,B``: withdraw an
  agent's own document (its group's applies again), or take agents out of a group (their
  own document applies again); refused when an agent would be left with none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
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
from fleet.configs import service
from fleet.configs.document import DocumentError
from fleet.store.open import open_store


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `config` command group."""
    action = add_group(
        commands,
        "config",
        "agents' configuration documents: set, unset, diff, history, rollback",
        "Each agent runs its own file with the [detect], [recorder], [[bus]] and [[unit]] "
        "tables of its fleet document, per agent or per group (an agent's own document "
        "wins over its group's). Every version is kept; agents check a new one with "
        "check-config's checks and report applied or the problems (docs/updates.md).",
        dest="action",
    )

    def target(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("--agent", help="the document of this agent")
        which.add_argument("--group", help="the document of this group")
        return sub

    set_cmd = target(store_options(action("set", "keep a new version of a document")))
    set_cmd.add_argument("file", type=Path, help="TOML: [detect], [recorder], [[bus]], [[unit]]")
    set_cmd.add_argument("--agents", help="with --group: comma-separated agents to put in it")
    set_cmd.add_argument("--note", default="", help="why (kept with the version)")
    set_cmd.add_argument("--by", default="", help="who (default: the login name)")
    diff_cmd = store_options(
        action(
            "diff",
            "desired against applied per agent",
            "Without AGENT a line per agent: the version it should run, the one it runs, "
            "and its last report. With AGENT the text diff and the problems it reported.",
        )
    )
    diff_cmd.add_argument("agent", nargs="?", help="one agent")
    target(store_options(action("history", "every version of a document, oldest first")))
    rollback_cmd = target(
        store_options(action("rollback", "a new version carrying an earlier one's text"))
    )
    rollback_cmd.add_argument("version", type=int, help="the version to go back to (history)")
    rollback_cmd.add_argument("--by", default="", help="who (default: the login name)")
    unset_cmd = target(
        store_options(
            action(
                "unset",
                "withdraw an agent's document, or take agents out of a group",
                "--agent ID: a new version of the agent's document marking it withdrawn "
                "(kept in its history; rollback undoes it), so that its group's document "
                "applies again. --group NAME --agents A,B: those agents leave the group, so "
                "that their own documents apply again. Each affected agent is sent what it "
                "should now run; its units' history records the change when it applies it. "
                "Refused, changing nothing, when an agent would be left with no document "
                "(an agent cannot yet be told to go back to the file on its box).",
            )
        )
    )
    unset_cmd.add_argument("--agents", help="with --group: comma-separated agents to take out")
    unset_cmd.add_argument("--note", default="", help="why (kept with the version)")
    unset_cmd.add_argument("--by", default="", help="who (default: the login name)")


def _who(args: argparse.Namespace) -> str:
    return str(args.by) if args.by else getpass.getuser()


def _iso(us: int | None) -> str:
    return "" if us is None else dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat()


def run(args: argparse.Namespace) -> int:
    """Run a `config` action; returns the exit status."""
    now_us = int(time.time() * 1e6)
    try:
        if args.action == "unset":
            return _unset(args, now_us)
        if args.action in ("set", "rollback"):
            document = service.document_id(args.agent, args.group)
            target_db, _ = store_target(args)
            store = open_store(target_db)
            try:
                if args.action == "set":
                    try:
                        text = args.file.read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError) as exc:
                        raise UsageError(f"{args.file}: {exc}") from None
                    agents = [a for a in (args.agents or "").split(",") if a]
                    version = service.set_document(
                        store,
                        document,
                        text,
                        now_us,
                        author=_who(args),
                        note=args.note,
                        group_agents=agents,
                    )
                else:
                    version = service.rollback(
                        store, document, args.version, now_us, author=_who(args)
                    )
            finally:
                store.close()
            if args.json:
                print_json({"document_id": document, "version": version})
            else:
                print(f"{document} version {version}")
            return 0
        store, _ = open_readonly(args)
        try:
            if args.action == "history":
                return _history(
                    args, service.history(store, service.document_id(args.agent, args.group))
                )
            if args.agent:
                state, text = service.agent_diff(store, args.agent)
                if args.json:
                    print_json({"state": asdict(state), "in_sync": state.in_sync, "diff": text})
                else:
                    print(_line(state))
                    for problem in state.problems:
                        print(f"  {problem}")
                    print(text, end="")
                return 0
            states = service.states(store)
        finally:
            store.close()
    except DocumentError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json({"agents": [asdict(s) | {"in_sync": s.in_sync} for s in states]})
    else:
        for state in states:
            print(_line(state))
    return 0


def _line(state: service.AgentConfigState) -> str:
    if state.desired_version == 0:
        status = "own file"
    elif state.in_sync:
        status = "in sync"
    elif state.report_version == state.desired_version and not state.report_applied:
        status = f"rejected ({len(state.problems)} problem(s))"
    else:
        status = "pending"
    desired = f"{state.desired_document} v{state.desired_version}" if state.desired_version else "-"
    return f"{state.agent_id}\tdesired {desired}\tapplied v{state.applied_version}\t{status}"


def _unset(args: argparse.Namespace, now_us: int) -> int:
    target_db, _ = store_target(args)
    store = open_store(target_db)
    try:
        agents = [a for a in (args.agents or "").split(",") if a]
        after = service.unset(
            store, args.agent, args.group, agents, now_us, author=_who(args), note=args.note
        )
    finally:
        store.close()
    document = service.document_id(args.agent, args.group)
    if args.json:
        print_json(
            {
                "document_id": document,
                "agents": {
                    a: {"document_id": v.document_id, "version": v.version}
                    for a, v in after.items()
                },
            }
        )
    else:
        for agent, version in after.items():
            print(
                f"agent {agent}: {document} no longer applies; now {version.document_id} "
                f"version {version.version}"
            )
    return 0


def _history(args: argparse.Namespace, versions: list[service.ConfigVersion]) -> int:
    if args.json:
        print_json(
            {
                "versions": [
                    {k: v for k, v in asdict(x).items() if k != "toml"}
                    | {"created": _iso(x.created_us)}
                    for x in versions
                ]
            }
        )
        return 0
    for x in versions:
        back = f"\t(rollback to v{x.rollback_of})" if x.rollback_of is not None else ""
        print(
            f"v{x.version}\t{_iso(x.created_us)}\t{x.author}\t{x.sha256[:12] or 'withdrawn'}"
            f"\t{x.note}{back}"
        )
    return 0
