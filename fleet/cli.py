"""``liftwatch-fleet``: serve the fleet, import the register, or read its store.

Commands: serve, units (list; ``units import FILE`` loads the register), coverage,
firmware, events, pki (certificates for mutual TLS), agents (the units each agent may
report for), users (dashboard and API accounts, see fleet.cli_users). The read commands
open the store read-only (a SQLite file, which WAL lets them read beside ``serve``, or a
``postgresql://`` URL). Errors in arguments, configuration, policy or database are one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509

from fleet.cli_history import add_parsers as add_history_parsers
from fleet.cli_history import commands as history_commands
from fleet.cli_lifecycle import add_parsers as add_lifecycle_parsers
from fleet.cli_lifecycle import commands as lifecycle_commands
from fleet.cli_users import add_parser as add_users_parser
from fleet.cli_users import commands as users_commands
from fleet.clock import utc_now
from fleet.config import (
    MEMORY,
    ConfigError,
    FleetConfig,
    QueryConfig,
    default_config,
    load_config,
    split_listen,
)
from fleet.coverage import GROUP_KEYS, UnitStatus, coverage, coverage_by
from fleet.firmware import EMPTY_POLICY, PolicyError, inventory, load_policy
from fleet.gateway import id_problem
from fleet.pki import PkiError, init_ca, issue_agent, issue_server
from fleet.reads import UnitFilter, select_units
from fleet.registry import RegistryError, read_register
from fleet.runtime import tune_gc
from fleet.server import ServeError, serve
from fleet.store.agents import normalize_serial, serial_text
from fleet.store.base import EventQuery, StoreError, UnitQuery
from fleet.store.open import open_store
from fleet.store.postgres import is_postgres_url
from fleet.store.sql import SqlStore
from fleet.views import (
    EVENT_TABLE_COLUMNS,
    coverage_change_json,
    coverage_groups_json,
    coverage_json,
    event_cells,
    event_json,
    event_type_number,
    inventory_json,
    iso,
    table,
    unit_json,
)
from fleet.workers import WorkerError, serve_workers

PROG = "liftwatch-fleet"
EXIT_USAGE = 2
EXIT_RUNTIME = 1

log = logging.getLogger("fleet")


class UsageError(Exception):
    """A bad argument, config or database: reported in one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="LiftWatch fleet manager: ingest agent streams; report units, coverage, "
        "firmware and events.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the gRPC server and the JSON API until SIGTERM/SIGINT",
        description="Run the fleet manager. Prints one JSON line "
        '{"ready": true, "grpc": "HOST:PORT", "http": "HOST:PORT"} on stdout once the '
        "ports are bound (no http when [http] listen is empty); logs go to stderr.",
    )
    serve_cmd.add_argument("--config", type=Path, help="TOML config (default: built-in)")
    serve_cmd.add_argument("--listen", help="HOST:PORT for gRPC, overrides server.listen")
    serve_cmd.add_argument(
        "--http", help='HOST:PORT for the JSON API, overrides http.listen ("" disables)'
    )
    serve_cmd.add_argument(
        "--query",
        help='HOST:PORT for FleetQuery (operators), overrides query.listen ("" disables); '
        "with --listen on port 0 and no query.listen, port 0 too",
    )
    serve_cmd.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="allow plaintext listeners on non-loopback addresses (sets tls.plaintext; a "
        "lab only, warned at start)",
    )
    serve_cmd.add_argument(
        "--db", help="SQLite file, :memory: or postgresql:// URL; overrides [store]"
    )
    serve_cmd.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    serve_cmd.add_argument(
        "--workers",
        type=_positive_int,
        help="fleet processes sharing the port and the store, overrides server.workers "
        "(the ready line then also lists their pids)",
    )

    def store_command(name: str, help_text: str, description: str = "") -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description or help_text)
        source = sub.add_mutually_exclusive_group()
        source.add_argument("--config", type=Path, help="TOML config naming the store")
        source.add_argument("--db", help="the fleet's SQLite file or postgresql:// URL")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        return sub

    units_cmd = store_command(
        "units",
        "list units, or `units import FILE.csv` to load the district register",
        "List units (registered or ever reported) with their live status, or with "
        "`import FILE.csv` load the district unit register: every bad row is reported "
        "with its line and reason, the rest imported; re-importing updates units.",
    )
    units_cmd.add_argument(
        "action", nargs="?", choices=["import"], help="import: load FILE into the register"
    )
    units_cmd.add_argument("file", nargs="?", type=Path, help="the register CSV to import")
    units_cmd.add_argument("--street")
    units_cmd.add_argument("--building")
    units_cmd.add_argument("--contractor")
    units_cmd.add_argument("--model")
    units_cmd.add_argument("--firmware")
    units_cmd.add_argument("--status", choices=[s.value for s in UnitStatus])
    units_cmd.add_argument(
        "--monitored",
        action="store_true",
        help="only units that have reported (ignored with --status never_seen)",
    )
    units_cmd.add_argument(
        "--unregistered", action="store_true", help="only units that report but are not registered"
    )

    coverage_cmd = store_command(
        "coverage",
        "count registered, monitored, online, ... units",
        "Coverage of the district: units online, stale, offline, blind (agent up, controller "
        "link down) or never seen, and unregistered units reporting. See fleet/coverage.py "
        "for the thresholds ([coverage] in the config).",
    )
    coverage_cmd.add_argument("--by", choices=GROUP_KEYS, help="also count per group")
    coverage_cmd.add_argument(
        "--history", metavar="UNIT", help="the coverage transitions of UNIT ('all' for every unit)"
    )
    coverage_cmd.add_argument(
        "--limit", type=_positive_int, default=100, help="newest N transitions (default 100)"
    )

    firmware_cmd = store_command(
        "firmware",
        "firmware and agent versions by model, and policy violations",
        "Controller firmware and agent versions by model, the units that violate the "
        "firmware policy ([firmware] policy in the config, or --policy), and a unit's "
        "change history.",
    )
    firmware_cmd.add_argument("--violations", action="store_true", help="only the violations")
    firmware_cmd.add_argument("--model", help="only this controller model")
    firmware_cmd.add_argument("--history", metavar="UNIT", help="firmware history of UNIT")
    firmware_cmd.add_argument("--policy", type=Path, help="policy TOML, overrides the config")

    add_lifecycle_parsers(commands, store_command)  # alarms, report, audit
    add_history_parsers(commands, store_command)  # verify-history, history, db
    events_cmd = store_command("events", "list stored events, oldest first")
    events_cmd.add_argument("--unit", help="only this unit_id")
    events_cmd.add_argument("--type", help="event type, e.g. ENTRAPMENT")
    events_cmd.add_argument(
        "--limit", type=_positive_int, default=100, help="newest N events (default 100)"
    )
    _add_security_commands(commands)
    add_users_parser(commands)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _config(path: Path | None) -> FleetConfig:
    return load_config(path) if path is not None else default_config(Path.cwd())


def _target(args: argparse.Namespace) -> tuple[str, FleetConfig]:
    if args.db is not None:
        config = default_config(Path.cwd())
        target = args.db if is_postgres_url(args.db) or args.db == MEMORY else str(Path(args.db))
    else:
        config = _config(args.config)
        target = config.store.target
    if target == MEMORY:
        raise UsageError("the store is :memory:, which only the serving process can read")
    return target, config


def _open_store(args: argparse.Namespace) -> tuple[SqlStore, FleetConfig]:
    target, config = _target(args)
    return open_store(target, readonly=True), config


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False))


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = _config(args.config)
    if args.listen is not None:
        try:
            split_listen(args.listen)
        except ValueError as exc:
            raise UsageError(f"--listen: {exc}") from None
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=args.listen)
        )
        if args.listen.endswith(":0") and config.query.listen == QueryConfig().listen:
            # A throwaway fleet (tests, the rig) must not collide on the default port.
            config = dataclasses.replace(
                config, query=dataclasses.replace(config.query, listen="127.0.0.1:0")
            )
    if args.query is not None:
        if args.query:
            try:
                split_listen(args.query)
            except ValueError as exc:
                raise UsageError(f"--query: {exc}") from None
        config = dataclasses.replace(
            config, query=dataclasses.replace(config.query, listen=args.query)
        )
    if args.insecure_plaintext:
        config = dataclasses.replace(config, tls=dataclasses.replace(config.tls, plaintext=True))
    if args.http is not None:
        if args.http:
            try:
                split_listen(args.http)
            except ValueError as exc:
                raise UsageError(f"--http: {exc}") from None
        config = dataclasses.replace(
            config, http=dataclasses.replace(config.http, listen=args.http)
        )
    if args.db is not None:
        if is_postgres_url(args.db):
            store = dataclasses.replace(config.store, url=args.db)
        else:
            db = args.db if args.db == MEMORY else str(Path(args.db).resolve())
            store = dataclasses.replace(config.store, path=db, url="")
        config = dataclasses.replace(config, store=store)

    if args.workers is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, workers=args.workers)
        )

    def ready(addresses: Mapping[str, object]) -> None:
        print(json.dumps({"ready": True, **addresses}), flush=True)
        tune_gc()  # after startup: see fleet.runtime

    if config.server.workers > 1:
        if config.store.target == MEMORY:
            raise UsageError("several workers cannot share a :memory: store; use a file or URL")
        try:
            serve_workers(config, ready, args.log_level)
        except WorkerError as exc:
            raise ServeError(str(exc)) from None
        return 0
    asyncio.run(serve(config, ready))
    return 0


def _cmd_units(args: argparse.Namespace) -> int:
    if args.action == "import":
        return _import_units(args)
    if args.file is not None:
        raise UsageError(f"unexpected argument {str(args.file)!r} (did you mean `units import`?)")
    store, config = _open_store(args)
    wanted = UnitFilter(
        street=args.street or "",
        building=args.building or "",
        contractor=args.contractor or "",
        model=args.model or "",
        firmware=args.firmware or "",
        status=UnitStatus(args.status) if args.status else None,
        monitored=args.monitored or args.unregistered,
    )
    try:
        rows = store.list_units(wanted.store_query())
    finally:
        store.close()
    if args.unregistered:
        rows = [u for u in rows if not u.registered]
    listed = select_units(rows, wanted, utc_now(), config.coverage).units
    if args.json:
        _print_json({"units": [unit_json(u, s) for u, s in listed]})
        return 0
    headers = ("UNIT_ID", "STATUS", "REG", "STREET", "BUILDING", "CONTRACTOR", "MODEL")
    rows_out = [
        (
            u.unit_id,
            s.value,
            "yes" if u.registered else "NO",
            u.register.street,
            u.register.building,
            u.register.contractor,
            u.model,
            u.controller.firmware,
            u.agent_id,
            iso(u.last_seen),
        )
        for u, s in listed
    ]
    print(table([*headers, "FIRMWARE", "AGENT", "LAST_SEEN"], rows_out))
    return 0


def _import_units(args: argparse.Namespace) -> int:
    if args.file is None:
        raise UsageError("units import: name the register CSV file")
    target, _ = _target(args)
    register = read_register(args.file)
    for problem in register.problems:
        print(f"{PROG}: {args.file}: {problem} (row skipped)", file=sys.stderr)
    store = open_store(target)
    try:
        imported = store.upsert_register(register.entries)
    finally:
        store.close()
    result = {
        "file": str(args.file),
        "imported": imported,
        "skipped": len(register.problems),
        "problems": [{"line": p.line, "reason": p.message} for p in register.problems],
    }
    if args.json:
        _print_json(result)
    else:
        print(
            f"imported {imported} unit(s) from {args.file}; skipped {len(register.problems)} row(s)"
        )
    # Bad rows are reported, not fatal: the rest is in. A wholly bad file exits 2 above.
    return 0


def _cmd_coverage(args: argparse.Namespace) -> int:
    store, config = _open_store(args)
    try:
        units = store.list_units(UnitQuery())
        history = (
            store.coverage_history("" if args.history == "all" else args.history, args.limit)
            if args.history
            else None
        )
    finally:
        store.close()
    now = utc_now()
    if history is not None:
        changes = [coverage_change_json(c) for c in history]
        if args.json:
            _print_json({"history": changes})
        else:
            columns = ("at", "unit_id", "old_status", "new_status", "cause")
            print(table([c.upper() for c in columns], [[c[k] for k in columns] for c in changes]))
        return 0
    counts = coverage_json(coverage(units, now, config.coverage))
    groups = (
        coverage_groups_json(coverage_by(units, args.by, now, config.coverage)) if args.by else []
    )
    if args.json:
        _print_json({**counts, "groups": groups} if args.by else counts)
    elif args.by:
        names = ("name", *counts)
        print(table([c.upper() for c in names], [[g[c] for c in names] for g in groups]))
    else:
        print(table(("", "UNITS"), list(counts.items())))
    return 0


def _cmd_firmware(args: argparse.Namespace) -> int:
    target, config = _target(args)
    policy_path = args.policy or config.firmware.policy
    policy = load_policy(policy_path) if policy_path else EMPTY_POLICY
    store = open_store(target, readonly=True)
    try:
        units = store.list_units(UnitQuery(model=args.model or ""))
        history = store.firmware_history(args.history, 1000) if args.history else []
    finally:
        store.close()
    inv = inventory(units, policy, args.model or "")
    rendered = inventory_json(inv, history, violations_only=args.violations)
    if args.json:
        _print_json(rendered)
        return 0
    sections: list[str] = []
    if not args.violations:
        for title, counts in (("FIRMWARE", inv.firmware), ("AGENT_VERSION", inv.agent_versions)):
            rows = [(c.model, c.version, c.units) for c in counts]
            sections.append(table(("MODEL", title, "UNITS"), rows))
    violations = [(v.unit_id, v.model, v.firmware, v.rule, v.reason) for v in inv.violations]
    sections.append(table(("UNIT_ID", "MODEL", "FIRMWARE", "RULE", "REASON"), violations))
    if args.history:
        changes = [
            (iso(h.at), h.old_firmware, h.new_firmware, h.old_agent_version, h.new_agent_version)
            for h in history
        ]
        headers = ("AT", "OLD_FIRMWARE", "NEW_FIRMWARE", "OLD_AGENT", "NEW_AGENT")
        sections.append(table(headers, changes))
    print("\n\n".join(sections))
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    try:
        type_number = event_type_number(args.type) if args.type else 0
    except ValueError as exc:
        raise UsageError(f"--type: {exc}") from None
    store, _ = _open_store(args)
    try:
        events = store.list_events(
            EventQuery(unit_id=args.unit or "", type=type_number, limit=args.limit)
        )
    finally:
        store.close()
    if args.json:
        _print_json({"events": [event_json(e) for e in events]})
        return 0
    print(table([c.upper() for c in EVENT_TABLE_COLUMNS], [event_cells(e) for e in events]))
    return 0


# -- pki and agents: mutual TLS between agents and the fleet (see fleet.pki, fleet.access) --


def _add_security_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``pki`` and ``agents`` sub-commands."""
    pki_cmd = commands.add_parser(
        "pki",
        help="create a CA and issue the fleet's and the agents' certificates",
        description="A small PKI for mutual TLS (files in DIR, see fleet/pki.py): `init` "
        "creates the CA, `server` the fleet's certificate, `agent` an agent's (its Common "
        "Name is the agent id). Put DIR/server.pem, server.key and ca.pem in the fleet's "
        "[tls]; give each agent ca.pem and its own pair ([fleet] ca/cert/key).",
    )
    pki_steps = pki_cmd.add_subparsers(dest="pki_command", required=True, metavar="STEP")
    init_cmd = pki_steps.add_parser(
        "init",
        help="create the CA (DIR/ca.pem, DIR/ca.key)",
        description="Create a CA (ECDSA P-256, 10 years) in DIR; refuses to overwrite one. "
        "Keep ca.key offline in production.",
    )
    init_cmd.add_argument("dir", type=Path, metavar="DIR")
    init_cmd.add_argument("--name", default="LiftWatch CA", help="the CA's Common Name")
    server_cmd = pki_steps.add_parser(
        "server",
        help="issue the fleet's certificate (DIR/server.pem, DIR/server.key)",
        description="Issue the fleet manager's server certificate, signed by the CA in DIR, "
        "for every --host the agents use to reach it (DNS names or IP addresses).",
    )
    server_cmd.add_argument("dir", type=Path, metavar="DIR")
    server_cmd.add_argument(
        "--host", action="append", required=True, help="DNS name or IP address (repeatable)"
    )
    server_cmd.add_argument("--force", action="store_true", help="replace an existing pair")
    agent_cmd = pki_steps.add_parser(
        "agent",
        help="issue an agent's certificate (DIR/agents/AGENT_ID.pem, .key)",
        description="Issue agent AGENT_ID's client certificate, signed by the CA in DIR. "
        "The fleet then admits it for the units `agents add AGENT_ID --unit ...` registers.",
    )
    agent_cmd.add_argument("dir", type=Path, metavar="DIR")
    agent_cmd.add_argument("agent_id", metavar="AGENT_ID")
    agent_cmd.add_argument("--force", action="store_true", help="replace an existing pair")
    for sub in (init_cmd, server_cmd, agent_cmd):
        sub.add_argument("--json", action="store_true", help="print one JSON object")

    agents_cmd = commands.add_parser(
        "agents",
        help="register which units each agent may report for (mutual TLS)",
        description="The agent registry: under mutual TLS the fleet admits an agent (its "
        "certificate's Common Name) only for the units registered here and while its "
        "certificate is not revoked; changes reach open streams within a second. Without "
        "[tls] (demo, rig) the registry is not consulted.",
    )
    actions = agents_cmd.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    add_cmd = actions.add_parser(
        "add", help="register units for an agent", description="Register units for AGENT_ID."
    )
    add_cmd.add_argument("agent_id", metavar="AGENT_ID")
    add_cmd.add_argument(
        "--unit", action="append", required=True, help="unit id (repeatable)", dest="units"
    )
    list_cmd = actions.add_parser(
        "list", help="list agents and their units", description="List agents and their units."
    )
    remove_cmd = actions.add_parser(
        "remove",
        help="withdraw units from an agent (all without --unit)",
        description="Withdraw the --unit(s) from AGENT_ID, or all of its units: a serving "
        "fleet ends its open streams that declare a withdrawn unit within a second "
        "(fleet.access.ACCESS_POLL_S), and refuses them from then on.",
    )
    remove_cmd.add_argument("agent_id", metavar="AGENT_ID")
    remove_cmd.add_argument("--unit", action="append", help="unit id (repeatable)", dest="units")
    revocation_cmds = []
    for name, verb in (("revoke", "Revoke"), ("unrevoke", "Take off the revocation list")):
        sub = actions.add_parser(
            name,
            help=f"{verb.lower()} an agent's certificates (AGENT_ID) or one (--serial/--cert)",
            description=f"{verb} every certificate of AGENT_ID, or the one certificate "
            "with --serial HEX (or read from --cert FILE.pem): a revoked certificate is "
            "refused at its next connection, and a serving fleet ends its open streams "
            "within a second (fleet.access.ACCESS_POLL_S). Revoke a stolen box's "
            "certificate by serial, then issue its replacement (`pki agent --force`).",
        )
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("agent_id", metavar="AGENT_ID", nargs="?")
        which.add_argument("--serial", help="certificate serial number, hexadecimal")
        which.add_argument("--cert", type=Path, help="the certificate (PEM) to take the serial of")
        revocation_cmds.append(sub)
    revocation_cmds[0].add_argument("--reason", default="", help="why (kept and shown)")
    revoked_cmd = actions.add_parser(
        "revoked", help="list the revocation list", description="List the revocation list."
    )
    for sub in (add_cmd, list_cmd, remove_cmd, *revocation_cmds, revoked_cmd):
        source = sub.add_mutually_exclusive_group()
        source.add_argument("--config", type=Path, help="TOML config naming the store")
        source.add_argument("--db", help="the fleet's SQLite file or postgresql:// URL")
        sub.add_argument("--json", action="store_true", help="print one JSON object")


def _cmd_pki(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    try:
        if args.pki_command == "init":
            pair = init_ca(directory, args.name)
        elif args.pki_command == "server":
            _refuse_overwrite(directory / "server.pem", directory / "server.key", args.force)
            pair = issue_server(directory, list(args.host))
        else:
            agent_dir = directory / "agents"
            _refuse_overwrite(
                agent_dir / f"{args.agent_id}.pem", agent_dir / f"{args.agent_id}.key", args.force
            )
            pair = issue_agent(directory, args.agent_id)
    except PkiError as exc:
        raise UsageError(f"pki {args.pki_command}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"pki {args.pki_command}: {exc.strerror or exc}: {exc.filename}") from None
    # The serial is what `agents revoke --serial` takes when this certificate is lost.
    pem = pair.certificate.read_bytes()
    serial = serial_text(x509.load_pem_x509_certificate(pem).serial_number)
    if args.json:
        _print_json({"certificate": str(pair.certificate), "key": str(pair.key), "serial": serial})
    else:
        print(f"wrote {pair.certificate} and {pair.key} (serial {serial})")
    return 0


def _refuse_overwrite(cert: Path, key: Path, force: bool) -> None:
    # A reissued key silently locks out whoever runs with the old one: make it deliberate.
    if not force and (cert.exists() or key.exists()):
        raise UsageError(f"{cert} already exists; pass --force to replace it")


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
        store, _ = _open_store(args)
        try:
            entries = store.revocations()
        finally:
            store.close()
        rows = [
            {"agent_id": r.agent_id, "serial": r.serial, "reason": r.reason, "at": iso(r.revoked)}
            for r in entries
        ]
        if args.json:
            _print_json({"revoked": rows})
        else:
            columns = ("agent_id", "serial", "at", "reason")
            print(table([c.upper() for c in columns], [[r[c] for c in columns] for r in rows]))
        return 0
    agent_id, serial = _revocation_target(args)
    target, _ = _target(args)
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
    state = "revoked" if args.agents_command == "revoke" else "not revoked"
    if args.json:
        _print_json({"agent_id": agent_id, "serial": serial, "changed": changed, "state": state})
    else:
        print(f"{what}: {state}" + ("" if changed else " (unchanged)"))
    return 0


def _cmd_agents(args: argparse.Namespace) -> int:
    if args.agents_command in ("revoke", "unrevoke", "revoked"):
        return _cmd_revocations(args)
    if args.agents_command == "list":
        store, _ = _open_store(args)
        try:
            registrations = store.agent_registrations()
        finally:
            store.close()
        if args.json:
            _print_json(
                {"agents": [{"agent_id": a, "units": list(u)} for a, u in registrations.items()]}
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
    target, _ = _target(args)
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
        result = {"agent_id": agent_id, "added": added, "units": list(now_units)}
        text = f"agent {agent_id}: {added} unit(s) added; registered for {', '.join(now_units)}"
    else:
        result = {"agent_id": agent_id, "removed": removed, "units": list(now_units)}
        text = f"agent {agent_id}: {removed} unit(s) removed; " + (
            f"registered for {', '.join(now_units)}" if now_units else "no longer registered"
        )
    if args.json:
        _print_json(result)
    else:
        print(text)
    return 0


_COMMANDS = {
    "pki": _cmd_pki,
    "agents": _cmd_agents,
    "serve": _cmd_serve,
    "units": _cmd_units,
    "coverage": _cmd_coverage,
    "firmware": _cmd_firmware,
    "events": _cmd_events,
    **lifecycle_commands(lambda args: _target(args)),
    **history_commands(lambda args: _target(args)),
    **users_commands(lambda args: _target(args)),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``liftwatch-fleet`` with ``argv`` (default: sys.argv[1:]); returns the exit status.

    0 on success and after SIGTERM/SIGINT; 2 for bad arguments, config or database
    (one line on stderr, no traceback); 1 when the server cannot start otherwise.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except (UsageError, ConfigError, StoreError, RegistryError, PolicyError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are installed
        return 0
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; silence the flush at exit that would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
