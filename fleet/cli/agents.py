"""``liftwatch-fleet agents``: which units each agent may report for, and revoked certificates."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from fleet.cli.common import (
    PROG,
    UsageError,
    add_group,
    open_readonly,
    print_json,
    store_options,
    store_target,
)
from fleet.clock import utc_now
from fleet.ingest.gateway import id_problem
from fleet.read.shape import out, to_json
from fleet.read.views import (
    iso,
    table,
)
from fleet.store.agents import normalize_serial, serial_text
from fleet.store.open import open_store

# What `agents ... --json` prints: one definition each (fleet.read.shape), like the API's
# answers, but not API components.


@dataclass(frozen=True, slots=True)
class RevocationView:
    """One entry of the revocation list."""

    agent_id: str = out("every certificate of this agent; empty when revoked by serial")
    serial: str = out("this certificate (hexadecimal); empty when revoked by agent")
    reason: str = out()
    at: str = out("when it was revoked", fmt="date-time")


@dataclass(frozen=True, slots=True)
class RevokedView:
    """`agents revoked --json`."""

    revoked: tuple[RevocationView, ...] = out()


@dataclass(frozen=True, slots=True)
class RevocationChange:
    """`agents revoke/unrevoke --json`: what was named, and whether anything changed."""

    agent_id: str = out()
    serial: str = out()
    changed: bool = out("false: it already was (or was not) revoked")
    state: Literal["revoked", "not revoked"] = out()


@dataclass(frozen=True, slots=True)
class AgentUnitsView:
    """An agent and the units it is registered for."""

    agent_id: str = out()
    units: tuple[str, ...] = out()


@dataclass(frozen=True, slots=True)
class AgentsView:
    """`agents list --json`."""

    agents: tuple[AgentUnitsView, ...] = out()


@dataclass(frozen=True, slots=True)
class UnitsAdded:
    """`agents add --json`: units newly registered, and all the agent's units now."""

    agent_id: str = out()
    added: int = out(minimum=0)
    units: tuple[str, ...] = out()


@dataclass(frozen=True, slots=True)
class UnitsRemoved:
    """`agents remove --json`: units withdrawn, and the agent's units left."""

    agent_id: str = out()
    removed: int = out(minimum=0)
    units: tuple[str, ...] = out()


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `agents` command."""
    action = add_group(
        commands,
        "agents",
        "register which units each agent may report for (mutual TLS)",
        "The agent registry: under mutual TLS the fleet admits an agent (its "
        "certificate's Common Name) only for the units registered here and while its "
        "certificate is not revoked; changes reach open streams within a second. Without "
        "[tls] (demo, rig) the registry is not consulted.",
        dest="agents_command",
    )
    add_cmd = action("add", "register units for an agent", "Register units for AGENT_ID.")
    add_cmd.add_argument("agent_id", metavar="AGENT_ID")
    add_cmd.add_argument(
        "--unit", action="append", required=True, help="unit id (repeatable)", dest="units"
    )
    list_cmd = action("list", "list agents and their units", "List agents and their units.")
    remove_cmd = action(
        "remove",
        "withdraw units from an agent (all without --unit)",
        "Withdraw the --unit(s) from AGENT_ID, or all of its units: a serving "
        "fleet ends its open streams that declare a withdrawn unit within a second "
        "(fleet.ingest.access.ACCESS_POLL_S), and refuses them from then on.",
    )
    remove_cmd.add_argument("agent_id", metavar="AGENT_ID")
    remove_cmd.add_argument("--unit", action="append", help="unit id (repeatable)", dest="units")
    revocation_cmds = []
    for name, verb in (("revoke", "Revoke"), ("unrevoke", "Take off the revocation list")):
        sub = action(
            name,
            f"{verb.lower()} an agent's certificates (AGENT_ID) or one (--serial/--cert)",
            f"{verb} every certificate of AGENT_ID, or the one certificate "
            "with --serial HEX (or read from --cert FILE.pem): a revoked certificate is "
            "refused at its next connection, and a serving fleet ends its open streams "
            "within a second (fleet.ingest.access.ACCESS_POLL_S). Revoke a stolen box's "
            "certificate by serial, then issue its replacement (`pki agent --force`).",
        )
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("agent_id", metavar="AGENT_ID", nargs="?")
        which.add_argument("--serial", help="certificate serial number, hexadecimal")
        which.add_argument("--cert", type=Path, help="the certificate (PEM) to take the serial of")
        revocation_cmds.append(sub)
    revocation_cmds[0].add_argument("--reason", default="", help="why (kept and shown)")
    revoked_cmd = action("revoked", "list the revocation list", "List the revocation list.")
    for sub in (add_cmd, list_cmd, remove_cmd, *revocation_cmds, revoked_cmd):
        store_options(sub)


def _revocation_target(args: argparse.Namespace) -> tuple[str, str]:
    """(agent_id, serial) named by `agents revoke/unrevoke`, one of them empty."""
    if args.agent_id:
        problem = id_problem(args.agent_id)
        if problem is not None:
            raise UsageError(f"agent id {args.agent_id!r} {problem}")
        return args.agent_id, ""
    if args.cert is not None:
        try:
            pem = args.cert.read_bytes()
            return "", serial_text(x509.load_pem_x509_certificate(pem).serial_number)
        except OSError as exc:
            raise UsageError(f"--cert: cannot read {args.cert}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"--cert: {args.cert} is not a PEM certificate ({exc})") from None
    try:
        return "", normalize_serial(args.serial)
    except ValueError as exc:
        raise UsageError(f"--serial: {exc}") from None


def _cmd_revocations(args: argparse.Namespace) -> int:
    if args.agents_command == "revoked":
        store, _ = open_readonly(args)
        try:
            entries = store.revocations()
        finally:
            store.close()
        rows = tuple(
            RevocationView(r.agent_id, r.serial, r.reason, iso(r.revoked)) for r in entries
        )
        if args.json:
            print_json(to_json(RevokedView(rows)))
        else:
            columns = ("agent_id", "serial", "at", "reason")
            print(
                table(
                    [c.upper() for c in columns], [[getattr(r, c) for c in columns] for r in rows]
                )
            )
        return 0
    agent_id, serial = _revocation_target(args)
    target, _ = store_target(args)
    store = open_store(target)
    try:
        if args.agents_command == "revoke":
            changed = store.revoke_agent(
                utc_now(), agent_id=agent_id, serial=serial, reason=args.reason
            )
        else:
            changed = store.unrevoke_agent(agent_id=agent_id, serial=serial)
    finally:
        store.close()
    what = f"agent {agent_id}" if agent_id else f"certificate serial {serial}"
    state: Literal["revoked", "not revoked"] = (
        "revoked" if args.agents_command == "revoke" else "not revoked"
    )
    if args.json:
        print_json(to_json(RevocationChange(agent_id, serial, changed, state)))
    else:
        print(f"{what}: {state}" + ("" if changed else " (unchanged)"))
    return 0


def run(args: argparse.Namespace) -> int:
    """Add, list, remove agent registrations or (un)revoke certificates; returns the exit status."""
    if args.agents_command in ("revoke", "unrevoke", "revoked"):
        return _cmd_revocations(args)
    if args.agents_command == "list":
        store, _ = open_readonly(args)
        try:
            registrations = store.agent_registrations()
        finally:
            store.close()
        if args.json:
            print_json(
                to_json(AgentsView(tuple(AgentUnitsView(a, u) for a, u in registrations.items())))
            )
        else:
            rows = [(a, ",".join(u)) for a, u in registrations.items()]
            print(table(("AGENT_ID", "UNITS"), rows))
        return 0
    agent_id: str = args.agent_id
    units: list[str] = list(args.units or [])
    for text, what in ((agent_id, "agent id"), *((u, "--unit") for u in units)):
        problem = id_problem(text)
        if problem is not None:
            raise UsageError(f"{what} {text!r} {problem}")
    target, _ = store_target(args)
    store = open_store(target)
    try:
        if args.agents_command == "add":
            added = store.add_agent_units(agent_id, units)
            unknown = [u for u in units if (row := store.get_unit(u)) is None or not row.registered]
            now_units = store.agent_units(agent_id)
        else:
            known = store.agent_units(agent_id)
            if not known:
                raise UsageError(f"agent {agent_id!r} is not registered")
            missing = [u for u in units if u not in known]
            if missing:
                raise UsageError(
                    f"agent {agent_id!r} is not registered for unit(s) "
                    f"{', '.join(map(repr, missing))}"
                )
            removed = store.remove_agent_units(agent_id, units)
            now_units = store.agent_units(agent_id)
    finally:
        store.close()
    if args.agents_command == "add":
        for unit in unknown:
            # Not an error: agents may be set up before the register is imported.
            print(f"{PROG}: note: unit {unit!r} is not in the district register", file=sys.stderr)
        result: UnitsAdded | UnitsRemoved = UnitsAdded(agent_id, added, now_units)
        text = f"agent {agent_id}: {added} unit(s) added; registered for {', '.join(now_units)}"
    else:
        result = UnitsRemoved(agent_id, removed, now_units)
        text = f"agent {agent_id}: {removed} unit(s) removed; " + (
            f"registered for {', '.join(now_units)}" if now_units else "no longer registered"
        )
    if args.json:
        print_json(to_json(result))
    else:
        print(text)
    return 0
