"""Firmware policy and inventory: pure functions over stored units.

The policy (TOML, see deploy/fleet/firmware-policy.toml) names per controller model a
minimum version, known-bad versions, or that the model gets no updates at all. A unit
whose firmware is not known yet is not judged.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from fleet.store.base import UnitRow
from liftconf.schema import read_section

RULES = ("below_minimum", "known_bad", "no_updates")


class PolicyError(Exception):
    """The policy file is unusable; the message names the file and every problem."""


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """What the policy says about one controller model."""

    minimum: str = ""
    known_bad: frozenset[str] = frozenset()
    no_updates: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """The firmware policy: rules per controller model (models not named are not judged)."""

    models: Mapping[str, ModelPolicy]


EMPTY_POLICY = Policy(models={})


@dataclass(frozen=True, slots=True)
class Violation:
    """A unit whose firmware breaks ``rule`` (one of `RULES`) of the policy."""

    unit_id: str
    model: str
    firmware: str
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class VersionCount:
    """How many units of ``model`` run ``version`` (firmware or agent version)."""

    model: str
    version: str
    units: int


@dataclass(frozen=True, slots=True)
class Inventory:
    """Firmware and agent versions by model, and the units that violate the policy."""

    firmware: tuple[VersionCount, ...]
    agent_versions: tuple[VersionCount, ...]
    violations: tuple[Violation, ...]


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key: dotted parts, numbers numerically and before any text part."""
    parts = version.strip().lstrip("vV").replace("-", ".").split(".")
    # ASCII digits only: `isdigit` also takes "²", which `int` refuses.
    return tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p) for p in parts)


def load_policy(path: Path) -> Policy:
    """Read the policy TOML at ``path``; raises `PolicyError` listing every problem."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise PolicyError(f"firmware policy {path}: file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"firmware policy {path}: cannot read: {exc}") from None
    return parse_policy(data, str(path))


def parse_policy(data: Mapping[str, object], source: str) -> Policy:
    """Validate parsed policy TOML; raises `PolicyError` listing every problem."""
    problems: list[str] = []
    models: dict[str, ModelPolicy] = {}
    extra = sorted(set(data) - {"model"})
    problems += [f"{key}: unknown key" for key in extra]
    table = data.get("model", {})
    if not isinstance(table, Mapping):
        problems.append("model: expected a table")
        table = {}
    for name, rules in table.items():
        where = f"model.{name}"
        if not isinstance(rules, Mapping):
            problems.append(f"{where}: expected a table")
            continue
        # The rules are ModelPolicy's fields, read by the one config validator.
        values, found = read_section(ModelPolicy, where, rules, Path())
        problems += found
        models[name] = replace(ModelPolicy(), **values)
    if problems:
        raise PolicyError(f"firmware policy {source}: " + "; ".join(problems))
    return Policy(models=models)


def violations_of(unit: UnitRow, policy: Policy) -> list[Violation]:
    """The rules of ``policy`` that ``unit`` breaks (none when its firmware is unknown)."""
    rules = policy.models.get(unit.model)
    firmware = unit.controller.firmware
    if rules is None:
        return []
    found: list[Violation] = []
    suffix = f" ({rules.note})" if rules.note else ""
    if rules.no_updates:
        found.append(
            Violation(
                unit.unit_id,
                unit.model,
                firmware,
                "no_updates",
                f"{unit.model} gets no firmware updates{suffix}",
            )
        )
    if not firmware:
        return found
    if rules.minimum and version_key(firmware) < version_key(rules.minimum):
        found.append(
            Violation(
                unit.unit_id,
                unit.model,
                firmware,
                "below_minimum",
                f"{firmware} is below the minimum {rules.minimum}{suffix}",
            )
        )
    if firmware in rules.known_bad:
        found.append(
            Violation(
                unit.unit_id, unit.model, firmware, "known_bad", f"{firmware} is known bad{suffix}"
            )
        )
    return found


def inventory(units: Iterable[UnitRow], policy: Policy, model: str = "") -> Inventory:
    """Count firmware and agent versions by model (units that reported them) and list the
    policy violations; ``model`` restricts all three to one controller model."""
    firmware: Counter[tuple[str, str]] = Counter()
    agents: Counter[tuple[str, str]] = Counter()
    violations: list[Violation] = []
    for unit in units:
        if model and unit.model != model:
            continue
        if unit.controller.firmware:
            firmware[(unit.model, unit.controller.firmware)] += 1
        if unit.agent_version:
            agents[(unit.model, unit.agent_version)] += 1
        violations += violations_of(unit, policy)

    def counts(counter: Counter[tuple[str, str]]) -> tuple[VersionCount, ...]:
        ordered = sorted(counter.items(), key=lambda kv: (kv[0][0], version_key(kv[0][1])))
        return tuple(VersionCount(m, v, n) for (m, v), n in ordered)

    return Inventory(counts(firmware), counts(agents), tuple(violations))
