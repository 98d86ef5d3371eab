"""Profile parser: TOML register maps loaded and validated into `agent.decode.model`.

Every problem in a profile is reported with the file and the dotted key that has it
(`ProfileError`), when the config is loaded: a wrong profile stops the agent at start-up
and fails check-config, never the first read. The format is documented in
agent/profiles/template.toml.

The tables with fixed keys (``[profile]``, a point, an ``[[expect]]``, an ``[identity]``
string) are checked by the one config validator, `liftconf.schema`, against their
schema dataclasses below (keys, types, ranges, required keys); what is a profile's own
(enum names, the register map, the fault-code map, signals named by CarState's fields)
is checked here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from agent.bus.plan import PlanError, Rate, Table, plan_polls
from agent.decode.model import (
    DirectionSignal,
    DoorSignal,
    Expect,
    IdentityString,
    ModeSignal,
    Point,
    Profile,
    Signal,
    ValueSignal,
    ValueType,
)
from agent.detect.controller import UNMAPPABLE
from agent.detect.events import EventType
from agent.state import CarState, ServiceMode
from liftconf.schema import Range, bounded, missing, out_of_range, read_section

CAR_STATE_FIELDS = frozenset(f.name for f in fields(CarState)) - {"t"}
# Counters change slowly and are read on slow cycles unless the profile says otherwise.
SLOW_BY_DEFAULT = frozenset({"trips", "door_cycles", "run_hours"})
# Read from CarState's annotations, so a field added there is known here at once.
_BOOL_FIELDS = frozenset(f.name for f in fields(CarState) if f.type == "bool | None")
_DOOR_PARTS = ("open", "closed", "opening", "closing")
_IDENTITY_FIELDS = ("firmware", "model", "serial")


class ProfileError(ValueError):
    """A profile with problems: each is (dotted key, message), all reported at once."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {key}: {message}" for key, message in problems))


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in agent/profiles."""
    root = resources.files("agent.profiles")
    return sorted(p.name.removesuffix(".toml") for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(ref: str, base_dir: Path | None = None) -> Profile:
    """Load a shipped profile by name, or a file when ``ref`` is a path ending in .toml
    (relative to ``base_dir``). Raises `ProfileError` naming file, key and problem."""
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(source, [("(file)", exc.strerror or str(exc))]) from exc
    else:
        resource = resources.files("agent.profiles") / f"{ref}.toml"
        source = f"agent/profiles/{ref}.toml"
        if not resource.is_file():
            known = ", ".join(shipped_profiles())
            raise ProfileError(source, [("(name)", f"no shipped profile {ref!r} (known: {known})")])
        text = resource.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, [("(syntax)", str(exc))]) from exc
    return parse_profile(raw, source)


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def table(self, raw: object, key: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.add(key, f"must be a table, got {type(raw).__name__}")
            return {}
        for name in sorted(set(raw) - known):
            self.add(f"{key}.{name}", "unknown key")
        return raw

    def section(self, schema: type, raw: object, key: str) -> dict[str, Any]:
        """The keys of the table ``raw`` at ``key`` that fit ``schema`` (`liftconf.schema`:
        unknown keys, types, ranges and missing required keys are problems), converted."""
        if not isinstance(raw, dict):
            self.add(key, f"must be a table, got {type(raw).__name__}")
            return {}
        values, found = read_section(schema, key, raw, Path())
        found += out_of_range(schema, key, values) + missing(schema, key, raw)
        self.items.extend((problem.key, problem.message) for problem in found)
        return values

    def enum(
        self, values: Mapping[str, Any], key: str, name: str, kind: type[Any], default: Any
    ) -> Any:
        text = values.get(name) or None  # "" is the default too
        if text is None:
            return default
        try:
            return kind(text)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            self.add(f"{key}.{name}", f"must be one of {allowed}, got {text!r}")
            return default


@dataclass(frozen=True, slots=True)
class _Head:
    """The ``[profile]`` table's keys; ``table`` and ``word_order`` are its points'
    defaults."""

    name: str = ""  # required, and not empty: checked by parse_profile
    description: str = ""
    vendor: str = ""
    table: str = Table.HOLDING.value
    word_order: str = "big"


@dataclass(frozen=True, slots=True)
class _PointKeys:
    """A point table's keys (`Point`); an empty ``table``, ``type``, ``word_order`` or
    ``rate`` takes the profile's or the signal's default. ``range`` ([min, max]) is
    checked by `_point`."""

    address: int = field(metadata={"range": Range(0, 0xFFFF)})
    table: str = ""
    type: str = ""
    bit: int | None = bounded(None, 0, 15)
    invert: bool = False
    scale: float = 1.0
    word_order: str = ""
    rate: str = ""


@dataclass(frozen=True, slots=True)
class _ExpectKeys:
    """An ``[[expect]]`` table's own keys, beside its point's."""

    value: int
    what: str = ""


@dataclass(frozen=True, slots=True)
class _IdentityKeys:
    """An ``[identity]`` string's keys: ``count`` registers from ``address`` (``count`` is
    required too: `parse_profile` says so with what it counts)."""

    address: int
    count: int | None = None
    table: str = ""


_POINT_KEYS = {f.name for f in fields(_PointKeys)} | {"range"}


@dataclass(frozen=True, slots=True)
class _Defaults:
    table: Table
    word_order: str


def _point(
    p: _Problems, raw: object, key: str, defaults: _Defaults, *, boolean: bool, rate: Rate
) -> Point | None:
    before = len(p.items)
    t = raw if isinstance(raw, dict) else {}
    v = p.section(_PointKeys, {k: b for k, b in t.items() if k != "range"} if t else raw, key)
    if not t:
        return None
    table = p.enum(v, key, "table", Table, defaults.table)
    address = v.get("address", 0)
    bit = v.get("bit")
    vtype = p.enum(v, key, "type", ValueType, None)
    if table.is_bits:
        if bit is not None:
            p.add(f"{key}.bit", f"a {table.value} is a single bit already; remove 'bit'")
        vtype = vtype or ValueType.BOOL
    elif bit is not None:
        vtype = vtype or ValueType.BOOL
    else:
        vtype = vtype or (ValueType.BOOL if boolean else ValueType.UINT16)
    if boolean and vtype is not ValueType.BOOL:
        p.add(
            f"{key}.type",
            f"this signal is a bool, so it needs a bit, coil or discrete input, not {vtype.value}",
        )
    if not boolean and vtype is ValueType.BOOL:
        p.add(f"{key}", "this signal is a number: read a register, not a bit")
    if vtype is ValueType.BOOL and not table.is_bits and bit is None:
        p.add(f"{key}.bit", "a bool read from a register needs 'bit'")
    invert = v.get("invert", False)
    scale = v.get("scale", 1.0)
    if scale == 0:
        p.add(f"{key}.scale", "must not be 0")
    word_order = v.get("word_order") or defaults.word_order
    if word_order not in ("big", "little"):
        p.add(f"{key}.word_order", f"must be 'big' or 'little', got {word_order!r}")
    valid: tuple[float, float] | None = None
    if "range" in t:
        bounds = t["range"]
        ok = (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        )
        if not ok:
            p.add(f"{key}.range", f"must be [min, max] numbers, got {bounds!r}")
        elif bounds[0] > bounds[1]:
            p.add(f"{key}.range", f"min {bounds[0]} is above max {bounds[1]}")
        else:
            valid = (float(bounds[0]), float(bounds[1]))
        if boolean:
            p.add(f"{key}.range", "a bool has no range")
    rate = p.enum(v, key, "rate", Rate, rate)
    if rate is Rate.IDENTITY:
        p.add(f"{key}.rate", "'identity' is for [identity] strings; use 'fast' or 'slow'")
    if len(p.items) > before:
        return None
    return Point(table, address, vtype, bit, invert, scale, word_order, valid, rate)


def parse_profile(raw: Mapping[str, Any], source: str) -> Profile:
    """Validate parsed TOML as a profile; `ProfileError` lists every problem by key."""
    p = _Problems()
    top = p.table(dict(raw), "", {"profile", "signals", "expect", "identity", "faults"})
    head = _Head(**p.section(_Head, top.get("profile", {}), "profile"))
    name, description, vendor = head.name, head.description, head.vendor
    if not name:
        p.add("profile.name", "is required")
    defaults = _Defaults(
        p.enum({"table": head.table}, "profile", "table", Table, Table.HOLDING), head.word_order
    )
    if defaults.word_order not in ("big", "little"):
        p.add("profile.word_order", f"must be 'big' or 'little', got {defaults.word_order!r}")

    signals: list[Signal] = []
    raw_signals = p.table(top.get("signals", {}), "signals", set(CAR_STATE_FIELDS))
    for field_name in sorted(set(raw_signals) & CAR_STATE_FIELDS):
        key = f"signals.{field_name}"
        body = raw_signals[field_name]
        rate = Rate.SLOW if field_name in SLOW_BY_DEFAULT else Rate.FAST
        signal = _signal(p, field_name, body, key, defaults, rate)
        if signal is not None:
            signals.append(signal)
    if not raw_signals:
        p.add("signals", "no signals: a profile must provide at least one CarState field")

    expects: list[Expect] = []
    raw_expects = top.get("expect", [])
    if not isinstance(raw_expects, list):
        p.add("expect", "must be an array of tables: [[expect]]")
        raw_expects = []
    for i, raw_expect in enumerate(raw_expects):
        key = f"expect[{i}]"
        e = raw_expect if isinstance(raw_expect, dict) else {}
        own = p.section(_ExpectKeys, {k: v for k, v in e.items() if k not in _POINT_KEYS}, key)
        value = own.get("value")
        what = own.get("what") or f"register {e.get('address')}"
        point = _point(
            p,
            {k: v for k, v in e.items() if k in _POINT_KEYS} if e else raw_expect,
            key,
            defaults,
            boolean=False,
            rate=Rate.FAST,
        )
        if point is not None and value is not None:
            expects.append(Expect(point, value, what))

    identity: list[IdentityString] = []
    raw_identity = p.table(top.get("identity", {}), "identity", set(_IDENTITY_FIELDS))
    for field_name in _IDENTITY_FIELDS:
        if field_name not in raw_identity:
            continue
        key = f"identity.{field_name}"
        t = p.section(_IdentityKeys, raw_identity[field_name], key)
        table = p.enum(t, key, "table", Table, defaults.table)
        address = t.get("address")
        count = t.get("count")
        block = raw_identity[field_name]
        if isinstance(block, dict) and "count" not in block:
            p.add(f"{key}.count", "is required (registers, two ASCII characters each)")
        if table.is_bits:
            p.add(f"{key}.table", "identity strings live in holding or input registers")
        if address is not None and count is not None:
            if not 1 <= count <= 125 or not 0 <= address <= 0xFFFF - count + 1:
                p.add(key, f"address {address} count {count} is not one readable block")
            else:
                identity.append(IdentityString(field_name, table, address, count))

    faults: list[tuple[int, str]] = []
    raw_faults = p.table(top.get("faults", {}), "faults", set(top.get("faults", {}) or ()))
    taxonomy = {t.name for t in EventType}
    for code_text, event in raw_faults.items():
        key = f"faults.{code_text}"
        if not code_text.isdigit() or not 0 < int(code_text) <= 0xFFFF:
            p.add(key, f"a fault code must be a number 1..65535, got {code_text!r}")
            continue
        if not isinstance(event, str) or event not in taxonomy:
            p.add(key, f"{event!r} is not an event of the taxonomy (agent/detect/events.py)")
            continue
        if EventType[event] in UNMAPPABLE:
            p.add(
                key,
                f"{event} cannot come from a fault code (the service mode and the link "
                "are judged from their own signals)",
            )
            continue
        faults.append((int(code_text), event))

    profile = Profile(
        name=name,
        source=source,
        description=description,
        vendor=vendor,
        signals=tuple(signals),
        expects=tuple(expects),
        identity=tuple(identity),
        fault_events=tuple(sorted(faults)),
    )
    if not p.items:
        try:
            profile.spans()
            plan_polls(profile.spans())
        except PlanError as exc:
            p.add("(plan)", str(exc))
    if p.items:
        raise ProfileError(source, p.items)
    return profile


def _signal(
    p: _Problems, name: str, body: object, key: str, defaults: _Defaults, rate: Rate
) -> Signal | None:
    if name == "direction":
        t = p.table(body, key, {"up", "down"})
        up = (
            _point(p, t.get("up"), f"{key}.up", defaults, boolean=True, rate=rate)
            if "up" in t
            else None
        )
        down = (
            _point(p, t.get("down"), f"{key}.down", defaults, boolean=True, rate=rate)
            if "down" in t
            else None
        )
        if t and ("up" not in t or "down" not in t):
            p.add(key, "needs both 'up' and 'down'")
        return DirectionSignal(up, down) if up and down else None
    if name == "door":
        t = p.table(body, key, set(_DOOR_PARTS))
        parts = []
        for part in _DOOR_PARTS:
            if part in t:
                point = _point(p, t[part], f"{key}.{part}", defaults, boolean=True, rate=rate)
                if point is not None:
                    parts.append((part, point))
        if t and not ({"open", "closed"} & set(t)):
            p.add(key, "needs at least 'open' or 'closed' (a limit switch)")
        return DoorSignal(tuple(parts)) if parts and len(parts) == len(t) else None
    if name == "mode":
        if not isinstance(body, dict):
            p.add(key, "must be a table")
            return None
        point_raw = {k: v for k, v in body.items() if k != "values"}
        point = _point(p, point_raw, key, defaults, boolean=False, rate=rate)
        v = p.table(body.get("values", {}), f"{key}.values", set(body.get("values", {}) or ()))
        mapping: list[tuple[int, ServiceMode]] = []
        modes = {m.name.lower(): m for m in ServiceMode}
        for raw_value, mode_name in v.items():
            if not raw_value.isdigit():
                p.add(f"{key}.values.{raw_value}", "keys are register values (numbers)")
            elif not isinstance(mode_name, str) or mode_name.lower() not in modes:
                p.add(
                    f"{key}.values.{raw_value}",
                    f"{mode_name!r} is not a service mode ({', '.join(modes)})",
                )
            else:
                mapping.append((int(raw_value), modes[mode_name.lower()]))
        if "values" not in body:
            p.add(f"{key}.values", "is required: register value -> service mode")
        return ModeSignal(point, tuple(sorted(mapping, key=lambda m: m[0]))) if point else None
    boolean = name in _BOOL_FIELDS
    point = _point(p, body, key, defaults, boolean=boolean, rate=rate)
    return ValueSignal(name, point) if point else None
