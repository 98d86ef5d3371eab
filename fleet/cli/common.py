"""What every ``liftwatch-fleet`` command shares: the program name, exit codes, the usage
error, resolving --config / --db to a store, and printing JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from fleet.config import MEMORY, FleetConfig, default_config, load_config
from fleet.store.open import open_store
from fleet.store.postgres import is_postgres_url
from fleet.store.sql import SqlStore

PROG = "liftwatch-fleet"
EXIT_USAGE = 2
EXIT_RUNTIME = 1

StoreCommand = Callable[..., argparse.ArgumentParser]


class UsageError(Exception):
    """A bad argument, config or database: reported in one line, exit status 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def config_or_default(path: Path | None) -> FleetConfig:
    """The config at ``path``, or the built-in one relative to the working directory."""
    return load_config(path) if path is not None else default_config(Path.cwd())


def store_target(args: argparse.Namespace) -> tuple[str, FleetConfig]:
    """The store named by --db or by the --config file, and the config; never :memory:."""
    if args.db is not None:
        config = default_config(Path.cwd())
        target = args.db if is_postgres_url(args.db) or args.db == MEMORY else str(Path(args.db))
    else:
        config = config_or_default(args.config)
        target = config.store.target
    if target == MEMORY:
        raise UsageError("the store is :memory:, which only the serving process can read")
    return target, config


def existing_store_target(args: argparse.Namespace) -> tuple[str, FleetConfig]:
    """`store_target` for a command on a store that must exist already: given neither
    --db nor --config and with no fleet database in the working directory, a usage error
    saying which to give (instead of "cannot open database")."""
    target, config = store_target(args)
    given = args.db is not None or args.config is not None
    if not given and not is_postgres_url(target) and not Path(target).exists():
        raise UsageError(
            f"no store given and no {Path(target).name} in this directory: give --db "
            "FILE_OR_URL (the fleet's SQLite file or postgresql:// URL) or --config FILE "
            "(the TOML serve runs with)"
        )
    return target, config


def open_readonly(args: argparse.Namespace) -> tuple[SqlStore, FleetConfig]:
    """The store named by ``args`` (`existing_store_target`), opened read-only, and the
    config."""
    target, config = existing_store_target(args)
    return open_store(target, readonly=True), config


def print_json(value: object) -> None:
    """One JSON object on stdout, non-ASCII kept as is."""
    print(json.dumps(value, ensure_ascii=False))


def store_options(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add what every command on the store takes to ``sub``: --config or --db, and
    --json; returns ``sub``."""
    source = sub.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="TOML config naming the store")
    source.add_argument("--db", help="the fleet's SQLite file or postgresql:// URL")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    return sub


def add_store_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    description: str = "",
) -> argparse.ArgumentParser:
    """A sub-command reading the store: --config or --db, and --json."""
    return store_options(
        commands.add_parser(name, help=help_text, description=description or help_text)
    )


Action = Callable[..., argparse.ArgumentParser]


def add_group(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    description: str,
    *,
    dest: str,
    metavar: str = "ACTION",
) -> Action:
    """A command of several actions (``pki STEP``, ``agents ACTION``, ``users ACTION``):
    adds ``name``, whose action is required and lands in ``args.<dest>``, and returns the
    function that adds one action: ``action(name, help, description="")`` (the help is
    the description where none is given)."""
    group = commands.add_parser(name, help=help_text, description=description)
    actions = group.add_subparsers(dest=dest, required=True, metavar=metavar)

    def action(
        action_name: str, action_help: str, action_description: str = ""
    ) -> argparse.ArgumentParser:
        return actions.add_parser(
            action_name, help=action_help, description=action_description or action_help
        )

    return action
