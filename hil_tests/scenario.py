"""Scenario files: the cars, a timeline of injections, and the events expected.

A scenario is a TOML file in ``hil_tests/scenarios/``::

    name = "entrapment-between-floors"      # default: the file name without .toml
    description = "..."
    transport = "rtu"                       # rtu (pty serial line) | tcp; --transport overrides
    duration_s = 90.0                       # hard limit of the run after all cars are online
    quiet_s = 5.0                           # keep watching this long after the last expectation
    allow = ["DOOR_OPEN_FAILURE"]           # event types tolerated besides the expected ones

    [cars]
    count = 4                               # emulated cars, slave ids 1..count
    seed = 1                                # the emulator's random seed
    traffic = ""                            # emulator traffic profile; "" = its default

    [detect]                                # the agent's threshold overrides (docs/events.md)
    entrapment_between_floors_s = 5.0

    [[inject]]                              # one fault on one car
    at_s = 2.0                              # after all cars are online
    car = 2
    fault = "entrapment"                    # an emulator fault name
    clear_at_s = 30.0                       # optional: clear it then (the rescue)
    options = { delay_ms = 800 }            # optional: extra fields of the control request

    [[expect]]                              # an event the fleet must commit
    type = "ENTRAPMENT"
    car = 2
    phase = "RAISED"                        # RAISED (default) | CLEARED
    within_s = 45.0                         # deadline after the injection `after` names
    after = 0                               # index of that [[inject]]; default: the first
                                            # injection on the same car

    [[evidence]]                            # what an expected event's evidence must show
    expect = 0                              # index of the [[expect]] (a RAISED one)
    shows = "trapped_between_floors"        # a check of hil_tests/evidence_checks.py

Anything RAISED that no expectation matches and `allow` does not list fails the scenario:
"and nothing else" is the default. Every problem in a file is reported with its key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil_tests.evidence_checks import CHECKS

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
TRANSPORTS = ("rtu", "tcp")
PHASES = ("RAISED", "CLEARED")


class ScenarioError(ValueError):
    """A scenario file with problems; the message lists each with its key."""


@dataclass(frozen=True, slots=True)
class Injection:
    at_s: float
    car: int
    fault: str
    clear_at_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Expectation:
    type: str
    car: int
    after: int
    within_s: float
    phase: str = "RAISED"


@dataclass(frozen=True, slots=True)
class EvidenceExpectation:
    """The flight-recorder window of expectation number ``expect`` must pass ``shows``."""

    expect: int
    shows: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    path: Path
    description: str
    transport: str
    cars: int
    seed: int
    traffic: str
    duration_s: float
    quiet_s: float
    detect: dict[str, float]
    injections: tuple[Injection, ...]
    expectations: tuple[Expectation, ...]
    allow: frozenset[str]
    evidence: tuple[EvidenceExpectation, ...] = ()


_TOP = {
    "name",
    "description",
    "transport",
    "duration_s",
    "quiet_s",
    "allow",
    "cars",
    "detect",
    "inject",
    "expect",
    "evidence",
}
_CARS = {"count", "seed", "traffic"}
_INJECT = {"at_s", "car", "fault", "clear_at_s", "options"}
_EXPECT = {"type", "car", "phase", "within_s", "after"}
_EVIDENCE = {"expect", "shows"}


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def keys(self, table: object, where: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(table, dict):
            self.problems.append(f"{where}: must be a table")
            return {}
        self.problems.extend(
            f"{where}.{k}: unknown key" if where else f"{k}: unknown key"
            for k in sorted(set(table) - known)
        )
        return table

    def number(
        self,
        table: dict[str, Any],
        where: str,
        key: str,
        default: float | None,
        *,
        minimum: float = 0.0,
    ) -> float:
        value = table.get(key, default)
        name = f"{where}.{key}" if where else key
        if value is None:
            self.problems.append(f"{name}: is required")
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problems.append(f"{name}: must be a number, got {value!r}")
            return 0.0
        if value < minimum:
            self.problems.append(f"{name}: must be >= {minimum}, got {value}")
        return float(value)

    def integer(self, table: dict[str, Any], where: str, key: str, default: int | None) -> int:
        value = table.get(key, default)
        name = f"{where}.{key}" if where else key
        if value is None:
            self.problems.append(f"{name}: is required")
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(f"{name}: must be an integer, got {value!r}")
            return 0
        return value

    def text(self, table: dict[str, Any], where: str, key: str, default: str | None) -> str:
        value = table.get(key, default)
        name = f"{where}.{key}" if where else key
        if value is None:
            self.problems.append(f"{name}: is required")
            return ""
        if not isinstance(value, str):
            self.problems.append(f"{name}: must be a string, got {value!r}")
            return ""
        return value


def parse_scenario(raw: dict[str, Any], path: Path) -> Scenario:
    """Build a `Scenario` from parsed TOML, or raise `ScenarioError` listing every problem."""
    c = _Checker()
    top = c.keys(raw, "", _TOP)
    name = c.text(top, "", "name", path.stem)
    transport = c.text(top, "", "transport", "rtu")
    if transport not in TRANSPORTS:
        c.problems.append(f"transport: must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    cars_table = c.keys(top.get("cars", {}), "cars", _CARS)
    cars = c.integer(cars_table, "cars", "count", 4)
    if not 1 <= cars <= 247:
        c.problems.append(f"cars.count: must be 1..247, got {cars}")
    detect_raw = c.keys(top.get("detect", {}), "detect", set(top.get("detect", {})))
    detect: dict[str, float] = {}
    for key, value in detect_raw.items():
        c.number(detect_raw, "detect", key, None)  # reports a value that is not a number
        # Kept as written: counts and landings are integers, and the agent checks that.
        detect[key] = value if isinstance(value, int | float) else 0.0
    allow = top.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        c.problems.append("allow: must be an array of event type names")
        allow = []

    injections: list[Injection] = []
    for i, item in enumerate(_array(c, top, "inject")):
        where = f"inject[{i}]"
        t = c.keys(item, where, _INJECT)
        car = c.integer(t, where, "car", None)
        if t and not 1 <= car <= cars:
            c.problems.append(f"{where}.car: must be 1..{cars} (cars.count), got {car}")
        options = t.get("options", {})
        if not isinstance(options, dict):
            c.problems.append(f"{where}.options: must be a table")
            options = {}
        clear_at = c.number(t, where, "clear_at_s", -1.0, minimum=-1.0)
        at = c.number(t, where, "at_s", None)
        if clear_at >= 0 and clear_at <= at:
            c.problems.append(f"{where}.clear_at_s: {clear_at} is not after at_s {at}")
        injections.append(
            Injection(
                at,
                car,
                c.text(t, where, "fault", None),
                clear_at if clear_at >= 0 else None,
                dict(options),
            )
        )

    expectations: list[Expectation] = []
    for i, item in enumerate(_array(c, top, "expect")):
        where = f"expect[{i}]"
        t = c.keys(item, where, _EXPECT)
        car = c.integer(t, where, "car", None)
        phase = c.text(t, where, "phase", "RAISED").upper()
        if phase not in PHASES:
            c.problems.append(f"{where}.phase: must be RAISED or CLEARED, got {phase!r}")
        first_on_car = next((j for j, inj in enumerate(injections) if inj.car == car), None)
        after = c.integer(t, where, "after", first_on_car if first_on_car is not None else -1)
        if t and not 0 <= after < len(injections):
            c.problems.append(f"{where}.after: no [[inject]] number {after} for car {car}")
        expectations.append(
            Expectation(
                c.text(t, where, "type", None).upper(),
                car,
                after,
                c.number(t, where, "within_s", None),
                phase,
            )
        )

    evidence: list[EvidenceExpectation] = []
    for i, item in enumerate(_array(c, top, "evidence")):
        where = f"evidence[{i}]"
        t = c.keys(item, where, _EVIDENCE)
        expect = c.integer(t, where, "expect", None)
        shows = c.text(t, where, "shows", None)
        if t and not 0 <= expect < len(expectations):
            c.problems.append(f"{where}.expect: no [[expect]] number {expect}")
        elif t and expectations[expect].phase != "RAISED":
            c.problems.append(f"{where}.expect: [[expect]] {expect} is not a RAISED event")
        if t and shows not in CHECKS:
            c.problems.append(
                f"{where}.shows: unknown check {shows!r} (known: {', '.join(sorted(CHECKS))})"
            )
        evidence.append(EvidenceExpectation(expect, shows))

    if c.problems:
        raise ScenarioError(f"{path}:\n" + "\n".join(f"  {p}" for p in c.problems))
    return Scenario(
        name=name,
        path=path,
        description=str(top.get("description", "")),
        transport=transport,
        cars=cars,
        seed=c.integer(cars_table, "cars", "seed", 1),
        traffic=c.text(cars_table, "cars", "traffic", ""),
        duration_s=c.number(top, "", "duration_s", 90.0),
        quiet_s=c.number(top, "", "quiet_s", 5.0),
        detect=detect,
        injections=tuple(injections),
        expectations=tuple(expectations),
        allow=frozenset(a.upper() for a in allow),
        evidence=tuple(evidence),
    )


def _array(c: _Checker, top: dict[str, Any], key: str) -> list[Any]:
    value = top.get(key, [])
    if not isinstance(value, list):
        c.problems.append(f"{key}: must be an array of tables: [[{key}]]")
        return []
    return value


def load_scenario(path: Path) -> Scenario:
    """Read and check one scenario file; `ScenarioError` names every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(raw, path)


def resolve(name_or_path: str) -> Path:
    """A scenario argument as a path: a file, or a name in `SCENARIO_DIR`."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".toml":
        return path
    return SCENARIO_DIR / f"{name_or_path}.toml"
