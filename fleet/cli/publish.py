"""``liftwatch-fleet publish``: the district's published lists (issue 17, item 5).

- ``publish draft --as REGULATOR``: draw the lists as of now and keep them as a draft.
- ``publish approve ID --as REGULATOR``: approve a draft; with ``[publication]
  approval_by_another`` (the default) another regulator than the drafter.
- ``publish publish ID --as REGULATOR``: publish an approved draft: ``/public/`` serves it.
- ``publish status``: the publications, their steps (who, when) and what is public now.

``--as`` names a dashboard account (``liftwatch-fleet users``) with the regulator role;
each step is kept with it in the publication's history. The same steps are on the
dashboard and the API (``/api/publication``). Bad input is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys

from fleet.auth.roles import Role
from fleet.cli.common import (
    EXIT_USAGE,
    PROG,
    StoreCommand,
    UsageError,
    add_group,
    open_readonly,
    print_json,
    store_options,
    store_target,
)
from fleet.clock import utc_now
from fleet.read.shape import to_json
from fleet.read.views import table
from fleet.reports.publication import (
    LISTS,
    PublicationStatusView,
    PublicationStepView,
    PublicationView,
    draw_lists,
)
from fleet.store.open import open_store
from fleet.store.publication import PublicationError
from fleet.store.sql import SqlStore


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add ``publish`` and its steps."""
    action = add_group(
        commands,
        "publish",
        "draft, approve and publish the district's lists (regulators)",
        "A regulator drafts the lists (draft), another regulator approves the draft "
        "(approve; [publication] approval_by_another), a regulator publishes it (publish) "
        "and /public/ serves it; status shows each step with who and when.",
        dest="publish_command",
        metavar="STEP",
    )

    def step(name: str, help_text: str, with_id: bool) -> None:
        sub = store_options(action(name, help_text))
        if with_id:
            sub.add_argument("id", type=int, help="the publication's id (publish status)")
        if name != "status":
            sub.add_argument(
                "--as", dest="username", required=True, help="the regulator's account name"
            )

    del store_command
    step("draft", "draw the lists as of now and keep them as a draft", False)
    step("approve", "approve a draft (another regulator than the drafter)", True)
    step("publish", "publish an approved draft: /public/ serves it", True)
    step("status", "the publications, their steps and what is public now", False)


def _regulator(store: SqlStore, username: str) -> str:
    user = store.user(username)
    if user is None:
        raise UsageError(f"--as {username}: no such account (liftwatch-fleet users add)")
    if user.role is not Role.REGULATOR:
        raise UsageError(
            f"--as {username}: a {user.role.value} may not publish; only a regulator drafts, "
            "approves and publishes the lists"
        )
    return username


def run(args: argparse.Namespace) -> int:
    """Run ``liftwatch-fleet publish STEP``; exit status 2 for a step not allowed now."""
    if args.publish_command == "status":
        return _status(args)
    target, config = store_target(args)
    store = open_store(target)
    now = utc_now()
    try:
        username = _regulator(store, args.username)
        if args.publish_command == "draft":
            lists = draw_lists(
                store, now, config.publication, config.reports, config.maintenance.plan
            )
            new_id = store.draft_publication(lists, now, username, now)
            made = store.publication(new_id)
            assert made is not None
            done = made
        elif args.publish_command == "approve":
            done = store.approve_publication(
                args.id, username, now, by_another=config.publication.approval_by_another
            )
        else:
            done = store.publish_publication(args.id, username, now)
    except PublicationError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()
    if args.json:
        print_json(to_json(PublicationView.of(done, lists=args.publish_command == "draft")))
    else:
        counts = ", ".join(f"{n} {len(done.lists.get(n, {}).get('rows', []))}" for n in LISTS)
        print(f"publication {done.id}: {done.state} ({counts})")
    return 0


def _status(args: argparse.Namespace) -> int:
    store, _ = open_readonly(args)
    try:
        found = store.publications(50)
        steps = store.publication_steps()
        current = store.current_publication()
    finally:
        store.close()
    if args.json:
        view = PublicationStatusView(
            None if current is None else current.id,
            tuple(PublicationView.of(p, lists=False) for p in found),
            tuple(PublicationStepView.of(s) for s in steps),
        )
        print_json(to_json(view))
        return 0
    rows = [
        [str(s.publication_id), s.step, s.username, s.at.isoformat(timespec="seconds")]
        for s in steps
    ]
    print(table(["ID", "STEP", "BY", "AT"], rows))
    print(f"public now: {'none' if current is None else current.id}")
    return 0
