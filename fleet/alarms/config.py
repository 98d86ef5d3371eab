"""The ``[alarms]`` section of the fleet config (documented in `fleet.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protos.liftwatch.v1 import records_pb2

DEFAULT_TYPES = (
    "ENTRAPMENT",
    "DOOR_OPEN_WHILE_MOVING",
    "DOOR_LOCK_BYPASS",
    "UNINTENDED_MOVEMENT",
    "ALARM_BUTTON",
)
TARGET_KINDS = ("webhook", "mqtt")


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One place alarms are sent: an HTTP webhook or an MQTT topic (QoS 1)."""

    name: str
    kind: str
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
    escalate_after_s: float = 300.0
    repeat_s: float = 60.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    timeout_s: float = 5.0
    target: Mapping[str, TargetConfig] = field(default_factory=dict)

    @property
    def type_numbers(self) -> frozenset[int]:
        """The EventType numbers of `types`."""
        return frozenset(records_pb2.EventType.Value(f"EVENT_TYPE_{t}") for t in self.types)


_NUMBERS = ("escalate_after_s", "repeat_s", "retry_initial_s", "retry_max_s", "timeout_s")
_TARGET_KEYS = {
    "kind": str,
    "url": str,
    "secret": str,
    "host": str,
    "port": int,
    "topic": str,
    "username": str,
    "password": str,
}


def _names(value: object, key: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"alarms.{key}: expected an array of strings")
        return ()
    return tuple(value)


def parse_alarms(section: object) -> tuple[AlarmsConfig, list[str]]:
    """The ``[alarms]`` table as `AlarmsConfig`, and every problem (dotted key first)."""
    problems: list[str] = []
    defaults = AlarmsConfig()
    if not isinstance(section, Mapping):
        return defaults, ["alarms: expected a table"]
    known = {"types", "targets", "escalation_targets", "target", *_NUMBERS}
    problems += [f"alarms.{k}: unknown key" for k in sorted(section) if k not in known]
    types = _names(section.get("types", list(defaults.types)), "types", problems)
    for name in types:
        if f"EVENT_TYPE_{name}" not in set(records_pb2.EventType.keys()) or name == "UNSPECIFIED":
            problems.append(f"alarms.types: unknown event type {name!r}")
    targets = _names(section.get("targets", []), "targets", problems)
    escalation = _names(section.get("escalation_targets", []), "escalation_targets", problems)
    numbers: dict[str, float] = {}
    for key in _NUMBERS:
        value = section.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"alarms.{key}: expected a number")
            continue
        low = 0.0 if key == "repeat_s" else 0.001
        if not low <= float(value) <= 86_400:
            problems.append(f"alarms.{key}: must be between {low:g} and 86400, got {value}")
        numbers[key] = float(value)
    tables = section.get("target", {})
    found: dict[str, TargetConfig] = {}
    if not isinstance(tables, Mapping):
        problems.append("alarms.target: expected a table of targets")
        tables = {}
    for name, table in tables.items():
        where = f"alarms.target.{name}"
        if not isinstance(table, Mapping):
            problems.append(f"{where}: expected a table")
            continue
        values: dict[str, object] = {}
        for key, value in table.items():
            wanted = _TARGET_KEYS.get(key)
            if wanted is None:
                problems.append(f"{where}.{key}: unknown key")
            elif isinstance(value, bool) or not isinstance(value, wanted):
                problems.append(
                    f"{where}.{key}: expected {'an integer' if wanted is int else 'a string'}"
                )
            else:
                values[key] = value
        kind = values.get("kind")
        if kind not in TARGET_KINDS:
            problems.append(f"{where}.kind: expected one of {', '.join(TARGET_KINDS)}")
            continue
        if kind == "webhook" and not str(values.get("url", "")).startswith(("http://", "https://")):
            problems.append(f"{where}.url: a webhook needs an http:// or https:// URL")
        if kind == "mqtt" and not 0 < int(str(values.get("port", 1883))) < 65536:
            problems.append(f"{where}.port: must be between 1 and 65535")
        found[name] = TargetConfig(name=name, **values)  # type: ignore[arg-type]
    for key, names in (("targets", targets), ("escalation_targets", escalation)):
        problems += [f"alarms.{key}: no [alarms.target.{n}] table" for n in names if n not in found]
    if problems:
        return defaults, problems
    return (
        AlarmsConfig(
            types=types,
            targets=targets,
            escalation_targets=escalation,
            target=found,
            **numbers,
        ),
        [],
    )
