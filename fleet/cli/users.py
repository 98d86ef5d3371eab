"""The ``users`` command of ``liftwatch-fleet``: dashboard and API accounts.

``users add | list | remove | passwd | token | tokens | revoke``, each with the same
``--config`` / ``--db`` as the other store commands. Passwords are read with getpass
(asked twice) or, with ``--password-stdin``, as one line of standard input for scripts;
they are stored as scrypt hashes (`fleet.auth.passwords`) and never printed, nor is a
hash. An API token is printed once, when it is made. ``fleet.cli.main`` adds the parser with
`add_parser` and dispatches to `commands`. Bad input is one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass

from fleet.auth.passwords import MIN_LENGTH, hash_password
from fleet.auth.roles import Role, role_problem
from fleet.cli.common import EXIT_USAGE, PROG, add_group, print_json, store_options
from fleet.clock import utc_now
from fleet.config import FleetConfig
from fleet.read.shape import out, to_json
from fleet.read.views import UserView, iso, table, users_json
from fleet.store.base import UnitQuery, UserError, UserRow
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.store.users import label_problem, username_problem

Target = Callable[[argparse.Namespace], tuple[str, FleetConfig]]

# What `users ... --json` prints: one definition each (fleet.read.shape), like the API's
# answers (`users add` prints the API's User), but not API components.


@dataclass(frozen=True, slots=True)
class UserGone:
    """`users remove --json`."""

    username: str = out()
    removed: bool = out("with its sessions and API tokens")


@dataclass(frozen=True, slots=True)
class PasswordChanged:
    """`users passwd --json`."""

    username: str = out()
    password_changed: bool = out("its sessions have ended")


@dataclass(frozen=True, slots=True)
class TokenMade:
    """`users token --json`: the token, shown only now."""

    username: str = out()
    label: str = out()
    token: str = out("lwt_...: send it as Authorization: Bearer")


@dataclass(frozen=True, slots=True)
class TokenRevoked:
    """`users revoke --json`."""

    username: str = out()
    label: str = out()
    revoked: bool = out()


@dataclass(frozen=True, slots=True)
class TokenView:
    """An API token as listed: never the token itself."""

    label: str = out()
    created: str = out(fmt="date-time")


@dataclass(frozen=True, slots=True)
class TokensView:
    """`users tokens --json`."""

    username: str = out()
    tokens: tuple[TokenView, ...] = out()


class UsersUsageError(Exception):
    """Bad input to ``users``; reported in one line, exit status 2."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``users`` command and its actions to ``commands``."""
    action = add_group(
        commands,
        "users",
        "manage dashboard and API users, their passwords and API tokens",
        "Users of the dashboard and the JSON API. Roles: regulator (sees "
        "everything, changes nothing), contractor (only the units whose register names its "
        "contractor; acts on their alarms), dispatcher (every unit; acts on alarms), admin "
        "(users, register, policy). See docs/fleet.md, 'Users and roles'.",
        dest="users_command",
    )
    add_cmd = action(
        "add",
        "create a user",
        "Create user NAME (1-64 of A-Z a-z 0-9 . _ -) with a role. A contractor "
        "user needs --contractor, spelled exactly as the unit register's contractor column. "
        f"The password (at least {MIN_LENGTH} characters) is asked twice, or read as one "
        "line from standard input with --password-stdin.",
    )
    add_cmd.add_argument("username", metavar="NAME")
    add_cmd.add_argument("--role", required=True, choices=[r.value for r in Role])
    add_cmd.add_argument("--contractor", default="", help="the contractor (contractor role)")
    add_cmd.add_argument("--display-name", default="", help="the name the dashboard shows")
    list_cmd = action(
        "list",
        "list users (never their password hashes)",
        "List users: name, role, contractor, display name, creation time.",
    )
    remove_cmd = action(
        "remove",
        "delete a user with its sessions and API tokens",
        "Delete user NAME; its sessions end and its API tokens stop working at once.",
    )
    remove_cmd.add_argument("username", metavar="NAME")
    passwd_cmd = action(
        "passwd",
        "set a user's password (ends its sessions)",
        "Set the password of NAME (asked twice, or one line of standard input "
        "with --password-stdin) and end its sessions. Its API tokens stay valid.",
    )
    passwd_cmd.add_argument("username", metavar="NAME")
    for sub in (add_cmd, passwd_cmd):
        sub.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password as one line of standard input instead of asking",
        )
    token_cmd = action(
        "token",
        "create an API token for a user (printed once)",
        "Create an API token (lwt_...) for NAME, named --label, and print it: "
        "it is shown this once and stored only as a hash. Clients send it as "
        "'Authorization: Bearer lwt_...' and act as NAME, with NAME's role.",
    )
    tokens_cmd = action(
        "tokens",
        "list a user's API tokens (labels, never the secrets)",
        "List the labels and creation times of NAME's API tokens.",
    )
    revoke_cmd = action(
        "revoke",
        "revoke a user's API token",
        "Delete NAME's API token --label; clients using it are refused at once.",
    )
    for sub in (token_cmd, tokens_cmd, revoke_cmd):
        sub.add_argument("username", metavar="NAME")
    for sub in (token_cmd, revoke_cmd):
        sub.add_argument("--label", required=True, help="the token's name, e.g. 'ci'")
    for sub in (add_cmd, list_cmd, remove_cmd, passwd_cmd, token_cmd, tokens_cmd, revoke_cmd):
        store_options(sub)


def _read_password(args: argparse.Namespace) -> str:
    """The new password's hash: one line of stdin, or asked twice on the terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsersUsageError("--password-stdin: no password on standard input")
    else:
        try:
            password = getpass.getpass(f"password for {args.username}: ")
            again = getpass.getpass(f"password for {args.username} (again): ")
        except EOFError:
            raise UsersUsageError(
                "no password given (use --password-stdin to pipe one in)"
            ) from None
        if password != again:
            raise UsersUsageError("the two passwords differ; nothing was changed")
    try:
        return hash_password(password)
    except ValueError as exc:
        raise UsersUsageError(str(exc)) from None


def _existing(store: SqlStore, username: str) -> UserRow:
    user = store.user(username)
    if user is None:
        raise UsersUsageError(f"user {username!r} does not exist")
    return user


def _add(args: argparse.Namespace, store: SqlStore) -> tuple[object, str]:
    contractor = args.contractor.strip()
    problem = username_problem(args.username) or role_problem(args.role, contractor)
    if problem is not None:
        raise UsersUsageError(problem)
    # Before asking for a password that would be thrown away.
    if store.user(args.username) is not None:
        raise UsersUsageError(f"user {args.username!r} already exists")
    password_hash = _read_password(args)
    store.add_user(
        args.username,
        Role(args.role),
        password_hash,
        contractor,
        args.display_name.strip(),
        now=utc_now(),
    )
    if contractor and not store.list_units(UnitQuery(contractor=contractor)):
        # Not an error: users may be set up before the register is imported.
        print(
            f"{PROG}: note: no unit in the register has contractor {contractor!r}; "
            f"{args.username} sees no unit until one does",
            file=sys.stderr,
        )
    user = _existing(store, args.username)
    scope = f", contractor {contractor}" if contractor else ""
    return UserView.of(user), f"added user {user.username} ({user.role.value}{scope})"


def _remove(args: argparse.Namespace, store: SqlStore) -> tuple[object, str]:
    if not store.remove_user(args.username):
        raise UsersUsageError(f"user {args.username!r} does not exist")
    return (
        UserGone(args.username, removed=True),
        f"removed user {args.username} with its sessions and API tokens",
    )


def _passwd(args: argparse.Namespace, store: SqlStore) -> tuple[object, str]:
    _existing(store, args.username)
    password_hash = _read_password(args)
    if not store.set_password(args.username, password_hash):
        raise UsersUsageError(f"user {args.username!r} does not exist")  # removed meanwhile
    return (
        PasswordChanged(args.username, password_changed=True),
        f"password of {args.username} changed; its sessions have ended",
    )


def _token(args: argparse.Namespace, store: SqlStore) -> tuple[object, str]:
    problem = label_problem(args.label)
    if problem is not None:
        raise UsersUsageError(problem)
    _existing(store, args.username)
    token = store.create_token(args.username, args.label, utc_now())
    if not args.json:
        print(
            f"{PROG}: API token {args.label!r} for {args.username}; it is shown only now",
            file=sys.stderr,
        )
    # The token alone on stdout, so that a script can capture it with $(...).
    return TokenMade(args.username, args.label, token), token


def _revoke(args: argparse.Namespace, store: SqlStore) -> tuple[object, str]:
    _existing(store, args.username)
    if not store.revoke_token(args.username, args.label):
        raise UsersUsageError(f"user {args.username!r} has no API token labelled {args.label!r}")
    return (
        TokenRevoked(args.username, args.label, revoked=True),
        f"revoked API token {args.label!r} of {args.username}",
    )


_WRITES: dict[str, Callable[[argparse.Namespace, SqlStore], tuple[object, str]]] = {
    "add": _add,
    "remove": _remove,
    "passwd": _passwd,
    "token": _token,
    "revoke": _revoke,
}


def _users(args: argparse.Namespace, target: Target) -> int:
    where, _ = target(args)
    if args.users_command in ("list", "tokens"):
        store = open_store(where, readonly=True)
        try:
            if args.users_command == "list":
                return _list(args, store)
            return _list_tokens(args, store)
        finally:
            store.close()
    store = open_store(where)
    try:
        result, text = _WRITES[args.users_command](args, store)
    finally:
        store.close()
    if args.json:
        print_json(to_json(result))
    else:
        print(text)
    return 0


def _list(args: argparse.Namespace, store: SqlStore) -> int:
    shown = users_json(store.users())
    users: list[dict[str, object]] = shown["users"]  # type: ignore[assignment]
    if args.json:
        print_json(shown)
    else:
        columns = ("username", "role", "contractor", "display_name", "created")
        print(table([c.upper() for c in columns], [[u[c] for c in columns] for u in users]))
    return 0


def _list_tokens(args: argparse.Namespace, store: SqlStore) -> int:
    _existing(store, args.username)
    tokens = tuple(TokenView(t.label, iso(t.created)) for t in store.tokens(args.username))
    if args.json:
        print_json(to_json(TokensView(args.username, tokens)))
    else:
        print(table(("LABEL", "CREATED"), [[t.label, t.created] for t in tokens]))
    return 0


def commands(target: Target) -> dict[str, Callable[[argparse.Namespace], int]]:
    """The handler of ``users``; ``target`` resolves --config / --db to a store."""

    def run(args: argparse.Namespace) -> int:
        try:
            return _users(args, target)
        except (UsersUsageError, UserError) as exc:
            print(f"{PROG}: error: users {args.users_command}: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return {"users": run}
