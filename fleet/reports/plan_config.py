"""``[maintenance.plan]`` and ``[publication]``: the plan by need and the district's
published lists (issue 17, items 4-5). Every key, with its default::

    [maintenance.plan]           # the next maintenance due date of each unit
    interval_days = 15           # TSG T5002-2017 (电梯维护保养规则) 5.1: half-monthly
                                 # maintenance at least every 15 days; every unit outside the
                                 # on-demand programme keeps it
    on_demand_units = []         # registration codes of units in the on-demand programme
                                 # (按需维保) ...
    on_demand_contractors = []   # ... and every unit these contractors maintain
    on_demand_max_days = 30      # an on-demand unit, lightly used and healthy, may go this
                                 # long between visits (the pilots' upper bound; set the
                                 # district's own)
    trip_limit = 6000            # ... as long as, since its last supported visit, it makes
    door_cycle_limit = 12000     # fewer trips, door cycles and run hours than these: the
    run_hour_limit = 300         # interval stretches to the day the first limit is reached
                                 # at the unit's own rate, never below interval_days
    max_age_years = 15           # a unit this old or older (or of unknown install date) is
                                 # not stretched
    door_trend_percent = 10      # a door opening or closing time this much above its own
                                 # baseline (Counters door_*_trend) is a health sign ...
    trend_interval_days = 7      # ... that cuts the interval to this many days at once
    fault_due_days = 2           # a lift fault since the last supported visit makes the
                                 # unit due this many days after the first one
    due_soon_days = 7            # "due this week": due within this many days

    [publication]                # the lists a regulator drafts, approves and publishes
    approval_by_another = true   # the approver must be another regulator than the drafter
                                 # (four eyes: a list that names contractors in public is
                                 # checked by a second person); false for a district with
                                 # one regulator account
    period_days = 90             # the high-fault list ranks the fault rate over this many
                                 # days before the draft
    high_fault_count = 20        # ... and lists this many of the ranked lifts (worst first)
    aged_years = 15              # the aged-lift list: lifts this old or older ...
                                 # ... with no safety assessment on record
"""

from __future__ import annotations

from dataclasses import dataclass

from liftconf.schema import bounded


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """The plan-by-need policy (see the module docstring for each key)."""

    interval_days: int = bounded(15, 1, 366)
    on_demand_units: tuple[str, ...] = ()
    on_demand_contractors: tuple[str, ...] = ()
    on_demand_max_days: int = bounded(30, 1, 366)
    trip_limit: int = bounded(6000, 1)
    door_cycle_limit: int = bounded(12000, 1)
    run_hour_limit: int = bounded(300, 1)
    max_age_years: float = bounded(15.0, 0, 200)
    door_trend_percent: float = bounded(10.0, 0, 1000)
    trend_interval_days: int = bounded(7, 0, 366)
    fault_due_days: int = bounded(2, 0, 366)
    due_soon_days: int = bounded(7, 1, 366)

    def on_demand(self, unit_id: str, contractor: str) -> bool:
        """Whether the unit is in the on-demand programme."""
        return unit_id in self.on_demand_units or (
            bool(contractor) and contractor in self.on_demand_contractors
        )


@dataclass(frozen=True, slots=True)
class PublicationConfig:
    """How the district's lists are approved and drawn (see the module docstring)."""

    approval_by_another: bool = True
    period_days: int = bounded(90, 1, 3660)
    high_fault_count: int = bounded(20, 1, 10_000)
    aged_years: float = bounded(15.0, 0, 200)
