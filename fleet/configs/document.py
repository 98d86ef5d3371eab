"""Configuration documents as the fleet sees them: text, digest, what a change touches.

The fleet does not judge a document's content: the agent does, with exactly the checks
of its ``check-config`` (agent.remote_config), and reports the problems. The fleet only
refuses what could never be applied: text that is not TOML, and tables a fleet document
may not hold (`REMOTE_TABLES`; the box's own file keeps the rest, see the agent's module
doc for why).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from typing import Any

from liftconf.remote import REMOTE_TABLES, document_digest

# The digest DesiredConfig.sha256 carries.
digest = document_digest


class DocumentError(ValueError):
    """A document the fleet will not keep; the message says what and where."""


def parse(text: str, where: str) -> dict[str, Any]:
    """``text`` parsed; `DocumentError` naming ``where`` for bad TOML or a table a fleet
    document may not hold."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DocumentError(f"{where}: not TOML: {exc}") from None
    refused = sorted(set(raw) - REMOTE_TABLES)
    if refused:
        raise DocumentError(
            f"{where}: {', '.join(refused)}: a fleet document holds only [detect], [recorder], "
            "[[bus]] and [[unit]]; the rest stays in the box's own file"
        )
    return raw


def _units(raw: Mapping[str, Any]) -> dict[str, Any]:
    units = raw.get("unit", [])
    if not isinstance(units, list):
        return {}
    return {str(u.get("id", "")): u for u in units if isinstance(u, dict)}


def unit_ids(text: str) -> set[str]:
    """The ids of the [[unit]] tables a document ``text`` names (none if not TOML)."""
    try:
        return set(_units(tomllib.loads(text)))
    except tomllib.TOMLDecodeError:
        return set()


def _buses(raw: Mapping[str, Any]) -> dict[str, Any]:
    buses = raw.get("bus", [])
    if not isinstance(buses, list):
        return {}
    return {str(b.get("name", f"bus{i}")): b for i, b in enumerate(buses) if isinstance(b, dict)}


def affected_units(previous: str | None, new: str) -> dict[str, str]:
    """The units a change from ``previous`` (None: the box's own file) to ``new`` touches,
    each with ``added``, ``changed`` or ``removed``. A change of [detect] or [recorder]
    touches every unit, a change of a bus every unit on it; the first document touches
    every unit it names."""
    after = tomllib.loads(new)
    after_units = _units(after)
    if previous is None:
        return dict.fromkeys(after_units, "changed")
    before = tomllib.loads(previous)
    before_units = _units(before)
    shared = {k for k in ("detect", "recorder") if before.get(k) != after.get(k)}
    before_buses, after_buses = _buses(before), _buses(after)
    out: dict[str, str] = {}
    for unit_id in before_units.keys() | after_units.keys():
        old, cur = before_units.get(unit_id), after_units.get(unit_id)
        if old is None:
            out[unit_id] = "added"
        elif cur is None:
            out[unit_id] = "removed"
        elif (
            old != cur
            or shared
            or before_buses.get(str(cur.get("bus"))) != after_buses.get(str(cur.get("bus")))
        ):
            out[unit_id] = "changed"
    return out


def diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """A unified diff of two document texts ("" when they are the same)."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=before_name,
            tofile=after_name,
        )
    )
