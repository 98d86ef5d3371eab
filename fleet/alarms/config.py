"""The ``[alarms]`` section of the fleet config (documented in `fleet.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from liftconf.schema import Problem, bounded, out_of_range, read_section
from protos.liftwatch.v1 import records_pb2

DEFAULT_TYPES = (
    "ENTRAPMENT",
    "DOOR_OPEN_WHILE_MOVING",
    "DOOR_LOCK_BYPASS",
    "UNINTENDED_MOVEMENT",
    "ALARM_BUTTON",
)
TARGET_KINDS = ("webhook", "mqtt")
_DAY_S = 86_400
_NOT_A_KEY = {"key": False}


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One place alarms are sent: an HTTP webhook or an MQTT topic (QoS 1)."""

    name: str = field(metadata=_NOT_A_KEY)  # the NAME of its [alarms.target.NAME] table
    kind: str  # required: checked by parse_alarms
    url: str = ""
    secret: str = ""
    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = "liftwatch/alarms"
    username: str = ""
    password: str = ""


@dataclass(frozen=True, slots=True)
class AlarmsConfig:
    """Which events are alarms, where they go, and how hard the fleet keeps trying."""

    types: tuple[str, ...] = DEFAULT_TYPES
    targets: tuple[str, ...] = ()
    escalation_targets: tuple[str, ...] = ()
    escalate_after_s: float = bounded(300.0, 0.001, _DAY_S)
    repeat_s: float = bounded(60.0, 0, _DAY_S)
    retry_initial_s: float = bounded(1.0, 0.001, _DAY_S)
    retry_max_s: float = bounded(60.0, 0.001, _DAY_S)
    timeout_s: float = bounded(5.0, 0.001, _DAY_S)
    target: Mapping[str, TargetConfig] = field(default_factory=dict, metadata=_NOT_A_KEY)

    @property
    def type_numbers(self) -> frozenset[int]:
        """The EventType numbers of `types`."""
        return frozenset(records_pb2.EventType.Value(f"EVENT_TYPE_{t}") for t in self.types)


def parse_alarms(section: object) -> tuple[AlarmsConfig, list[Problem]]:
    """The ``[alarms]`` table as `AlarmsConfig`, and every problem (dotted key first).

    Its keys and each target's are read against the dataclasses (`liftconf.schema`); here
    only what the schema cannot say: event type names, target kinds and their needs, and
    that every named target has a table.
    """
    defaults = AlarmsConfig()
    if not isinstance(section, Mapping):
        return defaults, [Problem("alarms", "expected a table")]
    keys = {k: v for k, v in section.items() if k != "target"}
    values, problems = read_section(AlarmsConfig, "alarms", keys, Path())
    problems += out_of_range(AlarmsConfig, "alarms", values)
    for name in values.get("types", ()):
        if f"EVENT_TYPE_{name}" not in set(records_pb2.EventType.keys()) or name == "UNSPECIFIED":
            problems.append(Problem("alarms.types", f"unknown event type {name!r}"))
    tables = section.get("target", {})
    found: dict[str, TargetConfig] = {}
    if not isinstance(tables, Mapping):
        problems.append(Problem("alarms.target", "expected a table of targets"))
        tables = {}
    for name, table in tables.items():
        where = f"alarms.target.{name}"
        if not isinstance(table, Mapping):
            problems.append(Problem(f"{where}", "expected a table"))
            continue
        target, target_problems = read_section(TargetConfig, where, table, Path())
        problems += target_problems
        kind = target.get("kind")
        if kind not in TARGET_KINDS:
            problems.append(Problem(f"{where}.kind", f"expected one of {', '.join(TARGET_KINDS)}"))
            continue
        if kind == "webhook" and not str(target.get("url", "")).startswith(("http://", "https://")):
            problems.append(Problem(f"{where}.url", "a webhook needs an http:// or https:// URL"))
        if kind == "mqtt" and not 0 < int(target.get("port", 1883)) < 65536:
            problems.append(Problem(f"{where}.port", "must be between 1 and 65535"))
        found[name] = TargetConfig(name=name, **target)
    for key in ("targets", "escalation_targets"):
        names = values.get(key, ())
        problems += [
            Problem(f"alarms.{key}", f"no [alarms.target.{n}] table")
            for n in names
            if n not in found
        ]
    if problems:
        return defaults, problems
    return replace(defaults, **values, target=found), []
