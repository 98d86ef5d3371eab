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
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from hil_tests.evidence_checks import CHECKS
from liftconf.schema import Range, bounded, missing, out_of_range, read_section

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


# The tables of a scenario file as written, checked by the one config validator
# (liftconf.schema): keys, types, ranges and required keys; each default is typed here.


@dataclass(frozen=True, slots=True)
class _TopKeys:
    """The file's top-level keys besides its tables (``cars``, ``detect``, ``inject``,
    ``expect``, ``evidence``); an empty ``name`` is the file's name."""

    name: str = ""
    description: str = ""
    transport: str = "rtu"
    duration_s: float = bounded(90.0, 0)
    quiet_s: float = bounded(5.0, 0)
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _CarsKeys:
    """``[cars]``: the emulated cars (slave ids 1..count)."""

    count: int = bounded(4, 1, 247)
    seed: int = 1
    traffic: str = ""


@dataclass(frozen=True, slots=True)
class _InjectKeys:
    """An ``[[inject]]`` table, ``options`` (a table of extra request fields) aside."""

    at_s: float = field(metadata={"range": Range(0)})
    car: int
    fault: str
    clear_at_s: float | None = bounded(None, 0)


@dataclass(frozen=True, slots=True)
class _ExpectKeys:
    """An ``[[expect]]`` table; no ``after`` is the first injection on the same car."""

    type: str
    car: int
    within_s: float = field(metadata={"range": Range(0)})
    phase: str = "RAISED"
    after: int | None = None


@dataclass(frozen=True, slots=True)
class _EvidenceKeys:
    """An ``[[evidence]]`` table."""

    expect: int
    shows: str


_TABLES = ("cars", "detect", "inject", "expect", "evidence")


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def table(self, schema: type, value: object, where: str) -> dict[str, Any]:
        """The keys of the table ``value`` that fit ``schema``, converted, over its
        defaults; every problem (`liftconf.schema`) is noted with its key."""
        if not isinstance(value, dict):
            self.problems.append(f"{where}: must be a table")
            return {}
        values, found = read_section(schema, where, value, Path())
        found += out_of_range(schema, where, values) + missing(schema, where, value)
        self.problems.extend(found)
        defaults = {f.name: f.default for f in fields(schema) if f.default is not MISSING}
        return defaults | values


def parse_scenario(raw: dict[str, Any], path: Path) -> Scenario:
    """Build a `Scenario` from parsed TOML, or raise `ScenarioError` listing every problem."""
    c = _Checker()
    top = c.table(_TopKeys, {k: v for k, v in raw.items() if k not in _TABLES}, "")
    transport = top["transport"]
    if transport not in TRANSPORTS:
        c.problems.append(f"transport: must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    cars_table = c.table(_CarsKeys, raw.get("cars", {}), "cars")
    cars = cars_table.get("count", 0)
    detect_raw = raw.get("detect", {})
    if not isinstance(detect_raw, dict):
        c.problems.append("detect: must be a table")
        detect_raw = {}
    detect: dict[str, float] = {}
    for key, value in detect_raw.items():
        # Any key: the agent checks names and ranges. Kept as written: counts and
        # landings are integers, and the agent checks that.
        if isinstance(value, bool) or not isinstance(value, int | float):
            c.problems.append(f"detect.{key}: must be a number, got {value!r}")
        detect[key] = value if isinstance(value, int | float) else 0.0

    injections: list[Injection] = []
    for i, item in enumerate(_array(c, raw, "inject")):
        where = f"inject[{i}]"
        options = item.get("options", {}) if isinstance(item, dict) else {}
        keys = {k: v for k, v in item.items() if k != "options"} if isinstance(item, dict) else item
        t = c.table(_InjectKeys, keys, where)
        car = t.get("car", 0)
        if "car" in t and not 1 <= car <= cars:
            c.problems.append(f"{where}.car: must be 1..{cars} (cars.count), got {car}")
        if not isinstance(options, dict):
            c.problems.append(f"{where}.options: must be a table")
            options = {}
        at, clear_at = t.get("at_s", 0.0), t.get("clear_at_s")
        if clear_at is not None and clear_at <= at:
            c.problems.append(f"{where}.clear_at_s: {clear_at} is not after at_s {at}")
        injections.append(Injection(at, car, t.get("fault", ""), clear_at, dict(options)))

    expectations: list[Expectation] = []
    for i, item in enumerate(_array(c, raw, "expect")):
        where = f"expect[{i}]"
        t = c.table(_ExpectKeys, item, where)
        car = t.get("car", 0)
        phase = t["phase"].upper()
        if phase not in PHASES:
            c.problems.append(f"{where}.phase: must be RAISED or CLEARED, got {phase!r}")
        first_on_car = next((j for j, inj in enumerate(injections) if inj.car == car), -1)
        after = t["after"] if t.get("after") is not None else first_on_car
        if isinstance(item, dict) and not 0 <= after < len(injections):
            c.problems.append(f"{where}.after: no [[inject]] number {after} for car {car}")
        expectations.append(
            Expectation(t.get("type", "").upper(), car, after, t.get("within_s", 0.0), phase)
        )

    evidence: list[EvidenceExpectation] = []
    for i, item in enumerate(_array(c, raw, "evidence")):
        where = f"evidence[{i}]"
        t = c.table(_EvidenceKeys, item, where)
        expect, shows = t.get("expect", -1), t.get("shows", "")
        if "expect" in t and not 0 <= expect < len(expectations):
            c.problems.append(f"{where}.expect: no [[expect]] number {expect}")
        elif "expect" in t and expectations[expect].phase != "RAISED":
            c.problems.append(f"{where}.expect: [[expect]] {expect} is not a RAISED event")
        if "shows" in t and shows not in CHECKS:
            c.problems.append(
                f"{where}.shows: unknown check {shows!r} (known: {', '.join(sorted(CHECKS))})"
            )
        evidence.append(EvidenceExpectation(expect, shows))

    if c.problems:
        raise ScenarioError(f"{path}:\n" + "\n".join(f"  {p}" for p in c.problems))
    return Scenario(
        name=top["name"] or path.stem,
        path=path,
        description=top["description"],
        transport=transport,
        cars=cars,
        seed=cars_table["seed"],
        traffic=cars_table["traffic"],
        duration_s=top["duration_s"],
        quiet_s=top["quiet_s"],
        detect=detect,
        injections=tuple(injections),
        expectations=tuple(expectations),
        allow=frozenset(a.upper() for a in top["allow"]),
        evidence=tuple(evidence),
    )


def _array(c: _Checker, top: dict[str, Any], key: str) -> list[Any]:
    """The array of tables ``key`` of the file (empty when absent)."""
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
