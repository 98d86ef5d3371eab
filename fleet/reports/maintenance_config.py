"""The ``[maintenance]`` section of the fleet's TOML: each sub-table owned by its feature.

``[maintenance.minimums]`` and ``[maintenance.verdicts]`` belong to the maintenance-record
verdicts (`fleet.reports.maintenance`) and the visit derivation (`fleet.reports.visits`);
``[maintenance.plan]`` to the plan by need (`fleet.reports.plan_config` documents it).
Every key of the first two, with its default::

    [maintenance.minimums]       # minutes a visit of each TSG T5002 type must last to
                                 # support a record of that type. TSG T5002-2017 lists
                                 # the items of each type (its annexes A-D) but sets no
                                 # duration; these defaults are planning times of
                                 # contractor practice (the half-monthly items take one
                                 # worker about three quarters of an hour, each longer
                                 # type adds its items), not a national rule: set the
                                 # district's own figures here
    half_monthly = 45            # 半月维保: the half-monthly items (annex A)
    quarterly = 60               # 季度维保: half-monthly plus the quarterly items (annex B)
    half_yearly = 90             # 半年维保: quarterly plus the half-yearly items (annex C)
    annual = 120                 # 年度维保: half-yearly plus the annual items (annex D)

    [maintenance.verdicts]
    slack_minutes = 30           # a visit within this long of the claimed window matches
                                 # it, and the window is judged watched (or not) this much
                                 # wider on each side: a record written by hand rounds
                                 # its times; the slack only ever helps the contractor
    too_short_fraction = 0.5     # "too short" only below this share of the minimum: a
                                 # visit between it and the minimum is "cannot tell",
                                 # never an accusation
    max_gap_s = 60               # longest silence between car-state records still
                                 # "watched" (agents send one on every change and at
                                 # least every 10 s); a longer one is a gap in watching
    max_visit_hours = 12         # a session (inspection or out of service) longer than
                                 # this is an outage (a lift stopped, or left in
                                 # inspection, for days), not a visit: it supports no
                                 # record and refutes none
    derive_interval_s = 60       # serve derives visits from new car-state records and
                                 # re-judges recent records this often; 0 = never
                                 # (`maintenance audit` still does)
    rejudge_days = 14            # ... records whose window began this recently (late
                                 # records from an agent's outbox may change a verdict)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleet.reports.plan_config import PlanConfig
from liftconf.schema import Problem, bounded, out_of_range, read_section, type_name


@dataclass(frozen=True, slots=True)
class MinimumsConfig:
    """Minimum minutes of a visit per TSG T5002 maintenance type (see module docstring)."""

    half_monthly: float = bounded(45.0, 1, 1440)
    quarterly: float = bounded(60.0, 1, 1440)
    half_yearly: float = bounded(90.0, 1, 1440)
    annual: float = bounded(120.0, 1, 1440)

    def minutes(self, kind: str) -> float:
        """The minimum of ``kind`` (one of `fleet.store.maintenance.RECORD_KINDS`)."""
        return float(getattr(self, kind))


@dataclass(frozen=True, slots=True)
class VerdictRulesConfig:
    """The thresholds of the verdict rules and of the visit derivation."""

    slack_minutes: float = bounded(30.0, 0, 240)
    too_short_fraction: float = bounded(0.5, 0, 1)
    max_gap_s: float = bounded(60.0, 1, 3600)
    max_visit_hours: float = bounded(12.0, 0.5, 240)
    derive_interval_s: float = bounded(60.0, 0, 86_400)
    rejudge_days: float = bounded(14.0, 0, 366)


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    """``[maintenance]``: one field per sub-table."""

    minimums: MinimumsConfig = field(default_factory=MinimumsConfig)
    verdicts: VerdictRulesConfig = field(default_factory=VerdictRulesConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


# Sub-table -> the dataclass whose fields are its keys (the plan's joins here).
SUBSECTIONS: dict[str, type] = {
    "minimums": MinimumsConfig,
    "verdicts": VerdictRulesConfig,
    "plan": PlanConfig,  # owned by the plan by need: fleet.reports.plan_config
}


def parse_maintenance(table: object, base_dir: Path) -> tuple[MaintenanceConfig, list[Problem]]:
    """``[maintenance]`` read against `SUBSECTIONS`: unknown keys, types and ranges named
    by dotted key (``maintenance.minimums.annual``)."""
    if not isinstance(table, Mapping):
        return MaintenanceConfig(), [
            Problem("maintenance", f"expected a table, got {type_name(table)}")
        ]
    problems: list[Problem] = []
    given: dict[str, Any] = {}
    for name, section in table.items():
        key = f"maintenance.{name}"
        if name not in SUBSECTIONS:
            problems.append(Problem(key, "unknown key"))
        elif not isinstance(section, Mapping):
            problems.append(Problem(key, f"expected a table, got {type_name(section)}"))
        else:
            values, found = read_section(SUBSECTIONS[name], key, section, base_dir)
            problems += found + out_of_range(SUBSECTIONS[name], key, values)
            given[name] = replace(SUBSECTIONS[name](), **values)
    return replace(MaintenanceConfig(), **given), problems
