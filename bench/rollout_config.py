"""The remote-configuration step of bench/rollout.py (issue 20, item 6): push one
configuration change to every agent and count the agents that applied it.

Each agent gets a document of its own: the [[bus]], [[unit]], [detect] and [recorder]
tables of its box's file (`remote_tables`) with a changed threshold in front
(`CHANGE`), kept in the fleet's store as ``liftwatch-fleet config set --agent`` does. The
serving fleet sends it on the agent's stream; the agent checks it with check-config's
checks, applies it (the changed unit gets a new monitor, nothing else stops) and reports.
`config_step` waits until every agent reported the version it was given, or the timeout:
``config_applied`` counts the agents whose report says applied, ``config_rejected``
those that refused it (with their first problem in ``config_problems``).

Used by bench/rollout.py (`config_step`); importable alone for another bench.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleet.configs.service import set_document
from fleet.store.configs import ConfigStore, agent_document
from fleet.store.open import open_store
from liftconf.remote import REMOTE_TABLES

# The change pushed: a door-close threshold every profile's doors support (default 20 s).
CHANGE = "[detect]\ndoor_close_failure_s = 25.0\n"


def remote_tables(text: str) -> str:
    """The tables of an agent's TOML ``text`` a fleet document may hold (their header
    lines and everything up to the next header), in their order; keys before the first
    header and every other table are left out. Headers must start their line, as in the
    files the rig writes."""
    kept: list[str] = []
    keep = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            name = stripped.strip("[]").split(".")[0].strip().strip('"')
            keep = name in REMOTE_TABLES
        if keep:
            kept.append(line)
    return "".join(kept)


def push_config(target: str, configs: Mapping[str, Path], change: str = CHANGE) -> dict[str, int]:
    """Keep for each agent (id -> its box's config file) a new version of its own document:
    ``change`` then its file's remote tables. Returns each agent's version."""
    store = open_store(target)
    try:
        now_us = int(time.time() * 1e6)
        return {
            agent_id: set_document(
                store,
                agent_document(agent_id),
                change + remote_tables(path.read_text(encoding="utf-8")),
                now_us,
                author="bench",
                note="bench/rollout.py: one change to every agent",
            )
            for agent_id, path in configs.items()
        }
    finally:
        store.close()


def _reports(target: str, versions: Mapping[str, int]) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """Per agent that reported the version it was given: (applied, problems)."""
    store = open_store(target, readonly=True)
    try:
        states = ConfigStore(store).states(list(versions))
    finally:
        store.close()
    return {
        s.agent_id: (s.report_applied, s.problems)
        for s in states
        if s.report_version == versions[s.agent_id]
    }


async def config_step(
    target: str, configs: Mapping[str, Path], timeout_s: float = 120.0
) -> dict[str, Any]:
    """Push one change to every agent (`push_config`) and wait until each reported it or
    ``timeout_s`` passed. Returns ``config_applied``, ``config_rejected``,
    ``config_missing`` (no report in time), ``config_s`` (push to the last report) and
    ``config_problems`` (agent: its first problem, for each rejection)."""
    start = time.monotonic()
    versions = await asyncio.to_thread(push_config, target, configs)
    reports: dict[str, tuple[bool, tuple[str, ...]]] = {}
    while time.monotonic() - start < timeout_s:
        reports = await asyncio.to_thread(_reports, target, versions)
        if len(reports) == len(versions):
            break
        await asyncio.sleep(0.5)
    return {
        "config_applied": sum(1 for ok, _ in reports.values() if ok),
        "config_rejected": sum(1 for ok, _ in reports.values() if not ok),
        "config_missing": len(versions) - len(reports),
        "config_s": round(time.monotonic() - start, 1),
        "config_problems": {
            a: problems[0] for a, (ok, problems) in sorted(reports.items()) if not ok and problems
        },
    }
