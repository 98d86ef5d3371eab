"""The one config validator: a TOML table checked against its section's frozen dataclass.

Each section of a config (the fleet's `fleet.config`, with the sections its features own:
`fleet.units.coverage.CoverageConfig`, `fleet.alarms.config`; the agent's ``[mqtt]`` and
``[fleet]`` in `agent.config`) is a frozen dataclass whose fields are its keys: the
field's type says which TOML values it takes, the field's default is THE default (written
once; the docs blocks of `fleet.config` and `agent.config` quote it and tests check the
quotes), and a key with a range declares it with `bounded`. `read_section` reports unknown
keys and wrong types, each as a `Problem` (``"section.key: message"``), and returns the
valid values converted to the field's type (paths relative to the config's directory);
`out_of_range` reports the values outside their field's range. Checks that relate keys to
each other stay with the section's loader.

Every problem is a `Problem`: the dotted key and what is wrong with it.

A small validator of our own rather than pydantic or msgspec: the problems must keep
their wording (operators and tests read them), all problems are listed at once,
``true`` is never a number, and a path is relative to the config file; each of those is a
custom hook in either library, and the whole rule set fits here.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any


class Problem(str):
    """One thing wrong with a config: ``"key: message"``, with ``key`` (dotted, e.g.
    ``bus[0].poll_hz``) and ``message`` apart. A str, so a list of them reads as text."""

    key: str
    message: str

    def __new__(cls, key: str, message: str) -> Problem:
        """The problem ``message`` with the key ``key``."""
        problem = super().__new__(cls, f"{key}: {message}")
        problem.key, problem.message = key, message
        return problem


_TOML_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
}


@dataclass(frozen=True, slots=True)
class Range:
    """The values a numeric key allows: ``low`` (excluded when ``low_open``) to ``high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of this range, or None when it is in."""
        low, high = self.low, self.high
        too_low = low is not None and (value < low or (self.low_open and value == low))
        if not too_low and (high is None or value <= high):
            return None
        got = f"got {_number(value)}"
        if low is None:
            return f"must be at most {_number(high or 0)}, {got}"
        if self.low_open:
            upper = f" and <= {_number(high)}" if high is not None else ""
            return f"must be > {_number(low)}{upper}, {got}"
        if high is None:
            return f"must be at least {_number(low)}, {got}"
        return f"must be between {_number(low)} and {_number(high)}, {got}"


def bounded(
    default: float | None,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> Any:
    """A dataclass field with ``default`` whose key must lie in ``low``..``high``."""
    return field(default=default, metadata={"range": Range(low, high, low_open)})


def read_section(
    cls: type, name: str, table: Mapping[str, object], base_dir: Path
) -> tuple[dict[str, Any], list[Problem]]:
    """The keys of ``table`` that fit ``cls``'s fields, converted (a float field takes an
    integer, a ``Path | None`` field a string relative to ``base_dir``, "" being None, a
    ``tuple[str, ...]`` or ``frozenset[str]`` field an array of strings). A field with
    ``metadata={"key": False}`` is no key (the loader fills it).

    With them, every unknown key and wrong type (a boolean is never a number), in the
    table's order; `out_of_range` checks the values' ranges, `missing` the keys without a
    default. An empty ``name`` is a file's top level: its keys are named bare.
    """
    spec = _fields(cls)
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in table.items():
        dotted = _dotted(name, key)
        if key not in spec:
            problems.append(Problem(dotted, "unknown key"))
            continue
        accepted, convert, _ = spec[key]
        if accepted == (list,):  # tuple[str, ...]
            if not isinstance(value, list):
                problems.append(
                    Problem(dotted, f"expected an array of strings, got {type_name(value)}")
                )
                continue
            wrong = [(i, v) for i, v in enumerate(value) if not isinstance(v, str)]
            for i, item in wrong:
                problems.append(
                    Problem(f"{dotted}[{i}]", f"expected a string, got {type_name(item)}")
                )
            if wrong:
                continue
        elif (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
            wanted = " or ".join(_TOML_NAMES[t] for t in accepted)
            problems.append(Problem(dotted, f"expected {wanted}, got {type_name(value)}"))
            continue
        values[key] = convert(value, base_dir)
    return values, problems


def out_of_range(cls: type, name: str, values: Mapping[str, object]) -> list[Problem]:
    """Every value of ``values`` (as `read_section` returned them) outside its field's
    `Range`, as ``"section.key: message"`` in field order. Separate from `read_section`
    so that a loader reports a section's problems in the order its keys are documented."""
    found: list[Problem] = []
    for key, (_, _, bounds) in _fields(cls).items():
        value = values.get(key)
        problem = bounds.problem(value) if bounds and isinstance(value, int | float) else None
        if problem is not None:
            found.append(Problem(_dotted(name, key), problem))
    return found


def missing(cls: type, name: str, table: Mapping[str, object]) -> list[Problem]:
    """Every key of ``cls`` that has no default and is not in ``table``, as
    ``"section.key: is required"`` in field order."""
    return [
        Problem(_dotted(name, item.name), "is required")
        for item in fields(cls)
        if item.default is MISSING
        and item.default_factory is MISSING
        and item.metadata.get("key", True)
        and item.name not in table
    ]


def _dotted(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def type_name(value: object) -> str:
    """How a problem names the TOML type of ``value``."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _TOML_NAMES.get(type(value), type(value).__name__)


_Convert = typing.Callable[[Any, Path], Any]


@functools.cache
def _fields(cls: type) -> dict[str, tuple[tuple[type, ...], _Convert, Range | None]]:
    hints = typing.get_type_hints(cls)
    spec: dict[str, tuple[tuple[type, ...], _Convert, Range | None]] = {}
    for item in fields(cls):
        if not item.metadata.get("key", True):
            continue
        accepted, convert = _toml_types(hints[item.name])
        spec[item.name] = (accepted, convert, _range(item))
    return spec


def _range(item: Field[Any]) -> Range | None:
    bounds = item.metadata.get("range")
    return bounds if isinstance(bounds, Range) else None


def _toml_types(hint: Any) -> tuple[tuple[type, ...], _Convert]:
    """The TOML value types a field of type ``hint`` takes, and how one becomes the field."""
    args = set(typing.get_args(hint))
    if hint is float:
        return (int, float), lambda value, _: float(value)
    if hint in (str, int, bool):
        return (hint,), lambda value, _: value
    if hint == tuple[str, ...] or (
        isinstance(hint, types.UnionType) and args == {tuple[str, ...], type(None)}
    ):
        return (list,), lambda value, _: tuple(value)
    if hint == frozenset[str]:
        return (list,), lambda value, _: frozenset(value)
    if isinstance(hint, types.UnionType) and args == {Path, type(None)}:
        return (str,), lambda value, base: base / value if value else None
    if isinstance(hint, types.UnionType) and args == {float, type(None)}:
        return (int, float), lambda value, _: float(value)
    if isinstance(hint, types.UnionType) and args == {int, type(None)}:
        return (int,), lambda value, _: value
    if isinstance(hint, types.UnionType) and args == {bool, type(None)}:
        # None is spelt "auto"; the section's loader checks the string.
        return (bool, str), lambda value, _: value
    raise TypeError(f"no TOML form for a config field of type {hint!r}")


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
