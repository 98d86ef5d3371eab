"""``liftwatch-fleet firmware``: versions by model, firmware policy violations, history."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet.cli.common import (
    StoreCommand,
    existing_store_target,
    print_json,
)
from fleet.read.views import (
    inventory_json,
    iso,
    table,
)
from fleet.store.base import UnitQuery
from fleet.store.open import open_store
from fleet.units.firmware import EMPTY_POLICY, inventory, load_policy


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add the `firmware` command (``store_command`` adds --config, --db and --json)."""
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


def run(args: argparse.Namespace) -> int:
    """Print the firmware inventory, policy violations and a history; returns the exit status."""
    target, config = existing_store_target(args)
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
        print_json(rendered)
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
        sections.append(table(headers, changes, time_zone=config.http.time_zone))
    print("\n\n".join(sections))
    return 0
