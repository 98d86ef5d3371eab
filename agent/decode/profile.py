"""Profiles: register maps as TOML data, loaded, validated and used to decode samples.

A profile names, per signal (a `CarState` field name), where its value lives: a holding or
input register (optionally one bit of it), a coil or a discrete input, with its type,
scale, word order, declared valid range and polling rate. The full format is documented
in agent/profiles/template.toml, which is itself a valid profile.

Every problem in a profile is reported with the file and the dotted key that has it
(`ProfileError`), when the config is loaded: a wrong profile stops the agent at start-up
and fails check-config, never the first read.

Decoding policy for bad values (decided here, documented in the template):

- a signal whose value lies outside its declared ``range`` (or a ``mode`` value the
  profile does not map) is set to ``None`` for that sample and counted as implausible;
  the other signals of the sample still reach the detectors, which treat ``None`` as
  "not known" and degrade as documented in agent/detect;
- an ``[[expect]]`` register (such as a map version) with another value means the whole
  block is not what the profile describes: the whole sample is refused (`SampleRejectedError`)
  and counted, and nothing of it reaches the detectors.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from agent.bus.plan import CostModel, PlanError, PollPlan, Rate, Span, Table, plan_polls
from agent.detect.controller import UNMAPPABLE
from agent.detect.events import EventType
from agent.state import CarState, ControllerIdentity, Direction, DoorState, ServiceMode

#: Raw values read from one slave, keyed by (table, address); bits are 0 or 1.
Values = Mapping[tuple[Table, int], int]

CAR_STATE_FIELDS = frozenset(f.name for f in fields(CarState)) - {"t"}
# Counters change slowly and are read on slow cycles unless the profile says otherwise.
SLOW_BY_DEFAULT = frozenset({"trips", "door_cycles", "run_hours"})
# Read from CarState's annotations, so a field added there is known here at once.
_BOOL_FIELDS = frozenset(f.name for f in fields(CarState) if f.type == "bool | None")
_INT_FIELDS = CAR_STATE_FIELDS - _BOOL_FIELDS - {"direction", "door", "mode"}
_DOOR_PARTS = ("open", "closed", "opening", "closing")
_IDENTITY_FIELDS = ("firmware", "model", "serial")


class ValueType(enum.Enum):
    """How the raw item(s) become a number."""

    BOOL = "bool"
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"

    @property
    def words(self) -> int:
        """Registers the value spans."""
        return 2 if self in (ValueType.UINT32, ValueType.INT32) else 1


@dataclass(frozen=True, slots=True)
class Point:
    """Where one raw value lives and how to read it."""

    table: Table
    address: int
    type: ValueType = ValueType.UINT16
    bit: int | None = None
    invert: bool = False
    scale: float = 1.0
    word_order: str = "big"
    valid: tuple[float, float] | None = None
    rate: Rate = Rate.FAST

    @property
    def span(self) -> Span:
        """The items a read must cover for this point."""
        return Span(self.table, self.address, self.type.words, self.rate)

    def raw(self, values: Values) -> int | None:
        """The point's integer value, or None when its items were not read this time."""
        first = values.get((self.table, self.address))
        if first is None:
            return None
        if self.table.is_bits:
            return int(bool(first) != self.invert)
        if self.bit is not None:
            return int(bool(first >> self.bit & 1) != self.invert)
        if self.type.words == 1:
            if self.type is ValueType.INT16 and first & 0x8000:
                return first - 0x10000
            return first
        second = values.get((self.table, self.address + 1))
        if second is None:
            return None
        high, low = (first, second) if self.word_order == "big" else (second, first)
        value = high << 16 | low
        if self.type is ValueType.INT32 and value & 0x8000_0000:
            value -= 0x1_0000_0000
        return value


@dataclass(frozen=True, slots=True)
class ValueSignal:
    """A bool or integer CarState field read from one point."""

    name: str
    point: Point


@dataclass(frozen=True, slots=True)
class ModeSignal:
    """``mode``: a register whose values map to service modes."""

    point: Point
    values: tuple[tuple[int, ServiceMode], ...]
    name: str = "mode"


@dataclass(frozen=True, slots=True)
class DirectionSignal:
    """``direction``: an up and a down bit."""

    up: Point
    down: Point
    name: str = "direction"


@dataclass(frozen=True, slots=True)
class DoorSignal:
    """``door``: limit switches and operator bits, by precedence open, closed, opening,
    closing; neither limit made and the operator idle is PARTLY_OPEN."""

    parts: tuple[tuple[str, Point], ...]
    name: str = "door"


Signal = ValueSignal | ModeSignal | DirectionSignal | DoorSignal


@dataclass(frozen=True, slots=True)
class Expect:
    """A register that must hold ``value`` for the block to be what the profile says."""

    point: Point
    value: int
    what: str


@dataclass(frozen=True, slots=True)
class IdentityString:
    """An ASCII string (two characters per register, high byte first)."""

    name: str
    table: Table
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class Profile:
    """One register map, validated."""

    name: str
    source: str
    description: str
    vendor: str
    signals: tuple[Signal, ...]
    expects: tuple[Expect, ...] = ()
    identity: tuple[IdentityString, ...] = ()
    fault_events: tuple[tuple[int, str], ...] = ()
    # Compiled once here rather than per sample: see `_Decoder`.
    _decoder: _Decoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decoder", _Decoder(self))

    @property
    def signal_names(self) -> frozenset[str]:
        """The CarState fields this profile provides."""
        return frozenset(s.name for s in self.signals)

    def spans(self) -> list[Span]:
        """Every item a poll of this profile must read, with its rate."""
        spans = [e.point.span for e in self.expects]
        for signal in self.signals:
            spans.extend(p.span for p in _points(signal))
        spans.extend(Span(i.table, i.address, i.count, Rate.IDENTITY) for i in self.identity)
        return spans

    def plan(self, cost: CostModel) -> PollPlan:
        """The coalesced reads of one slave speaking this profile."""
        return plan_polls(self.spans(), cost)

    def fault_event(self, code: int) -> str | None:
        """The taxonomy event name a controller fault code maps to, if the profile says."""
        return dict(self.fault_events).get(code)


def _points(signal: Signal) -> list[Point]:
    if isinstance(signal, ValueSignal | ModeSignal):
        return [signal.point]
    if isinstance(signal, DirectionSignal):
        return [signal.up, signal.down]
    return [p for _, p in signal.parts]


class ProfileError(ValueError):
    """A profile with problems: each is (dotted key, message), all reported at once."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {key}: {message}" for key, message in problems))


class SampleRejectedError(ValueError):
    """A block that is not what its profile describes (an ``[[expect]]`` failed)."""


# ----------------------------------------------------------------------------- loading


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

    def get(self, table: Mapping[str, Any], key: str, name: str, kind: type, default: Any) -> Any:
        if name not in table:
            return default
        value = table[name]
        if isinstance(value, bool) and kind is not bool:
            self.add(f"{key}.{name}", f"must be {kind.__name__}, got bool")
            return default
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            self.add(f"{key}.{name}", f"must be {kind.__name__}, got {type(value).__name__}")
            return default
        return value

    def enum(
        self, table: Mapping[str, Any], key: str, name: str, kind: type[Any], default: Any
    ) -> Any:
        text = self.get(table, key, name, str, None)
        if text is None:
            return default
        try:
            return kind(text)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            self.add(f"{key}.{name}", f"must be one of {allowed}, got {text!r}")
            return default


_POINT_KEYS = {"table", "address", "type", "bit", "invert", "scale", "word_order", "range", "rate"}


@dataclass(frozen=True, slots=True)
class _Defaults:
    table: Table
    word_order: str


def _point(
    p: _Problems, raw: object, key: str, defaults: _Defaults, *, boolean: bool, rate: Rate
) -> Point | None:
    t = p.table(raw, key, _POINT_KEYS)
    if not t:
        if isinstance(raw, dict):
            p.add(f"{key}.address", "is required")
        return None
    before = len(p.items)
    table = p.enum(t, key, "table", Table, defaults.table)
    address = p.get(t, key, "address", int, None)
    if address is None:
        if "address" not in t:
            p.add(f"{key}.address", "is required")
        address = 0
    elif not 0 <= address <= 0xFFFF:
        p.add(f"{key}.address", f"must be 0..65535, got {address}")
    bit = p.get(t, key, "bit", int, None)
    vtype = p.enum(t, key, "type", ValueType, None)
    if table.is_bits:
        if bit is not None:
            p.add(f"{key}.bit", f"a {table.value} is a single bit already; remove 'bit'")
        vtype = vtype or ValueType.BOOL
    elif bit is not None:
        if not 0 <= bit <= 15:
            p.add(f"{key}.bit", f"must be 0..15, got {bit}")
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
    invert = p.get(t, key, "invert", bool, False)
    scale = p.get(t, key, "scale", float, 1.0)
    if scale == 0:
        p.add(f"{key}.scale", "must not be 0")
    word_order = p.get(t, key, "word_order", str, defaults.word_order)
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
    rate = p.enum(t, key, "rate", Rate, rate)
    if rate is Rate.IDENTITY:
        p.add(f"{key}.rate", "'identity' is for [identity] strings; use 'fast' or 'slow'")
    if len(p.items) > before:
        return None
    return Point(table, address, vtype, bit, invert, scale, word_order, valid, rate)


def parse_profile(raw: Mapping[str, Any], source: str) -> Profile:
    """Validate parsed TOML as a profile; `ProfileError` lists every problem by key."""
    p = _Problems()
    top = p.table(dict(raw), "", {"profile", "signals", "expect", "identity", "faults"})
    head = p.table(
        top.get("profile", {}), "profile", {"name", "description", "vendor", "table", "word_order"}
    )
    name = p.get(head, "profile", "name", str, "")
    if not name:
        p.add("profile.name", "is required")
    description = p.get(head, "profile", "description", str, "")
    vendor = p.get(head, "profile", "vendor", str, "")
    defaults = _Defaults(
        p.enum(head, "profile", "table", Table, Table.HOLDING),
        p.get(head, "profile", "word_order", str, "big"),
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
        e = p.table(raw_expect, key, _POINT_KEYS | {"value", "what"})
        value = p.get(e, key, "value", int, None)
        if value is None:
            p.add(f"{key}.value", "is required")
        what = p.get(e, key, "what", str, f"register {e.get('address')}")
        point = _point(
            p,
            {k: v for k, v in e.items() if k in _POINT_KEYS},
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
        t = p.table(raw_identity[field_name], key, {"table", "address", "count"})
        table = p.enum(t, key, "table", Table, defaults.table)
        address = p.get(t, key, "address", int, None)
        count = p.get(t, key, "count", int, None)
        if address is None:
            p.add(f"{key}.address", "is required")
        if count is None:
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


# ---------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class Decoded:
    """The CarState fields one slave's values gave, and the signals refused as implausible."""

    fields: dict[str, object]
    implausible: tuple[str, ...]


def decode(profile: Profile, values: Values) -> Decoded:
    """Decode what was read from one slave into CarState fields.

    Signals whose items were not read this time (slow signals on a fast cycle) are left
    out. A value outside its declared range is left out too and named in
    ``implausible``. Raises `SampleRejectedError` when an ``[[expect]]`` does not hold.
    """
    return profile._decoder.decode(values)


@dataclass(frozen=True, slots=True)
class _Raw:
    """A `Point` compiled against its decoder's word list: `Point.raw` without the
    (table, address) lookups, which the decoder does once per item and sample."""

    first: int  # index of the point's (first) item in the word list
    second: int  # index of the low or high word of a 32-bit value, else -1
    mask: int  # a bit of a register, or -1 for a coil or discrete input; 0: a number
    invert: bool
    signed: bool  # int16 or int32
    big: bool  # high word first

    def get(self, words: Sequence[int | None]) -> int | None:
        """The point's integer value, or None when its items were not read this time."""
        first = words[self.first]
        if first is None:
            return None
        if self.mask:
            return int(bool(first & self.mask) != self.invert)
        if self.second < 0:
            if self.signed and first & 0x8000:
                return first - 0x10000
            return first
        second = words[self.second]
        if second is None:
            return None
        high, low = (first, second) if self.big else (second, first)
        value = high << 16 | low
        if self.signed and value & 0x8000_0000:
            value -= 0x1_0000_0000
        return value


# A bool signal read from one bit: (field name, word index, bit mask, invert).
_Flag = tuple[str, int, int, bool]
# A number in one register: (position among the signals, field name, word index, int16,
# scale, declared range); the position keeps implausible messages in signal order.
_Word = tuple[int, str, int, bool, float, tuple[float, float] | None]
# Any other value signal: (position, field name, raw value, bool, scale, declared range).
_Value = tuple[int, str, _Raw, bool, float, tuple[float, float] | None]


class _Decoder:
    """A profile compiled into flat extractors over the distinct items it reads.

    `decode` looks each item up once per sample, then every signal is plain integer work
    on a list: no enum hashing, no properties, no per-point method calls for the bits that
    make up most of a register map. It decides exactly what `Point.raw` and the signal
    rules in the module docstring decide.
    """

    __slots__ = (
        "_direction",
        "_door",
        "_expects",
        "_flags",
        "_keys",
        "_mode",
        "_profile_name",
        "_values",
        "_words",
    )

    def __init__(self, profile: Profile) -> None:
        self._profile_name = profile.name
        index: dict[tuple[Table, int], int] = {}

        def slot(table: Table, address: int) -> int:
            return index.setdefault((table, address), len(index))

        def compiled(p: Point) -> _Raw:
            first = slot(p.table, p.address)
            second = slot(p.table, p.address + 1) if p.type.words == 2 else -1
            if p.table.is_bits:
                mask = -1  # a coil or input is one item: true when non-zero
            elif p.bit is not None:
                mask = 1 << p.bit
            else:
                mask = 0
            signed = p.type in (ValueType.INT16, ValueType.INT32)
            return _Raw(first, second, mask, p.invert, signed, p.word_order == "big")

        self._expects = tuple((e, compiled(e.point)) for e in profile.expects)
        flags: list[_Flag] = []
        words: list[_Word] = []
        values: list[_Value] = []
        self._mode: tuple[int, _Raw, dict[int, ServiceMode]] | None = None
        self._direction: tuple[_Raw, _Raw] | None = None
        self._door: tuple[tuple[DoorState, _Raw], ...] | None = None
        for position, signal in enumerate(profile.signals):
            if isinstance(signal, ValueSignal):
                raw = compiled(signal.point)
                is_bool = signal.point.type is ValueType.BOOL
                point = signal.point
                if is_bool and raw.mask:
                    flags.append((signal.name, raw.first, raw.mask, raw.invert))
                elif not is_bool and not raw.mask and raw.second < 0:
                    words.append(
                        (position, signal.name, raw.first, raw.signed, point.scale, point.valid)
                    )
                else:
                    values.append((position, signal.name, raw, is_bool, point.scale, point.valid))
            elif isinstance(signal, ModeSignal):
                self._mode = (position, compiled(signal.point), dict(signal.values))
            elif isinstance(signal, DirectionSignal):
                self._direction = (compiled(signal.up), compiled(signal.down))
            else:
                self._door = tuple((_DOOR_STATES[part], compiled(p)) for part, p in signal.parts)
        self._flags = tuple(flags)
        self._words = tuple(words)
        self._values = tuple(values)
        self._keys = tuple(index)

    def decode(self, values: Values) -> Decoded:
        """See the module function `decode`."""
        words = list(map(values.get, self._keys))
        for expect, raw in self._expects:
            got = raw.get(words)
            if got is not None and got != expect.value:
                raise SampleRejectedError(
                    f"{self._profile_name}: {expect.what} ({expect.point.table.value} "
                    f"{expect.point.address}) is {got}, expected {expect.value}"
                )
        out: dict[str, object] = {}
        for name, i, mask, invert in self._flags:
            word = words[i]
            if word is not None:
                out[name] = bool(word & mask) != invert
        implausible: list[tuple[int, str]] = []
        for position, name, i, signed, scale, valid in self._words:
            got = words[i]
            if got is None:
                continue
            if signed and got & 0x8000:
                got -= 0x10000
            value = got * scale
            if valid is not None and not valid[0] <= value <= valid[1]:
                implausible.append(
                    (position, f"{name}={value:g} outside {valid[0]:g}..{valid[1]:g}")
                )
                out[name] = None
                continue
            out[name] = round(value)
        for position, name, raw, is_bool, scale, valid in self._values:
            got = raw.get(words)
            if got is None:
                continue
            if is_bool:
                out[name] = bool(got)
                continue
            value = got * scale
            if valid is not None and not valid[0] <= value <= valid[1]:
                implausible.append(
                    (position, f"{name}={value:g} outside {valid[0]:g}..{valid[1]:g}")
                )
                out[name] = None
                continue
            out[name] = round(value)
        if self._mode is not None:
            position, raw, modes = self._mode
            got = raw.get(words)
            if got is not None:
                mode = modes.get(got)
                if mode is None:
                    implausible.append((position, f"mode={got} is not a mapped value"))
                    mode = ServiceMode.UNKNOWN
                out["mode"] = mode
        if self._direction is not None:
            up, down = _flag(self._direction[0], words), _flag(self._direction[1], words)
            if up is not None and down is not None:
                out["direction"] = (
                    Direction.UP if up else Direction.DOWN if down else Direction.NONE
                )
        if self._door is not None:
            door = _door(self._door, words)
            if door is not None:
                out["door"] = door
        if not implausible:
            return Decoded(out, ())
        implausible.sort()
        return Decoded(out, tuple(message for _, message in implausible))


_DOOR_STATES = {
    "open": DoorState.OPEN,
    "closed": DoorState.CLOSED,
    "opening": DoorState.OPENING,
    "closing": DoorState.CLOSING,
}


def _flag(raw: _Raw, words: list[int | None]) -> bool | None:
    """Whether ``raw`` reads non-zero, None when it was not read: the bit itself for the
    one-bit points that door and direction signals nearly always are."""
    if raw.mask:
        word = words[raw.first]
        return None if word is None else bool(word & raw.mask) != raw.invert
    got = raw.get(words)
    return None if got is None else bool(got)


def _door(parts: tuple[tuple[DoorState, _Raw], ...], words: list[int | None]) -> DoorState | None:
    seen = False
    for state, raw in parts:
        on = _flag(raw, words)
        if on is None:
            continue
        seen = True
        if on:
            return state
    return DoorState.PARTLY_OPEN if seen else None


def car_state(t: float, decoded_fields: Iterable[Mapping[str, object]]) -> CarState:
    """A CarState at ``t`` from the fields of one or more sources, later ones winning."""
    merged: dict[str, Any] = {}
    for f in decoded_fields:
        merged.update(f)
    return CarState(t=t, **merged)


def decode_identity(profile: Profile, values: Values) -> ControllerIdentity | None:
    """The identity strings of ``profile`` from ``values``; None when it declares none."""
    if not profile.identity:
        return None
    texts = {"firmware": "", "model": "", "serial": ""}
    for item in profile.identity:
        words = [values.get((item.table, item.address + i), 0) for i in range(item.count)]
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        texts[item.name] = raw.decode("ascii", errors="replace").strip("\x00 ")
    return ControllerIdentity(
        firmware=texts["firmware"],
        model=texts["model"],
        serial=texts["serial"],
        vendor=profile.vendor,
    )
