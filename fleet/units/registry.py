"""Reading the district unit register (CSV) into `RegisterEntry` values.

The file must have a header naming at least the columns in `COLUMNS` (extra columns are
ignored). A bad row is reported with its line number and skipped; the rest still load.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fleet.store.base import RegisterEntry

COLUMNS = (
    "registration_code",
    "building",
    "address",
    "street",
    "use_unit",
    "maintenance_contractor",
    "install_date",
    "rated_speed_m_s",
    "rated_load_kg",
    "landings",
    "controller_model",
    "car_in_group",
)

T = TypeVar("T")


class RegistryError(Exception):
    """The register file as a whole is unusable (missing, unreadable, wrong header)."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why the row at ``line`` (1 = header) was skipped."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class RegisterFile:
    """What a register file held: the good entries and the skipped rows."""

    entries: tuple[RegisterEntry, ...]
    problems: tuple[RowProblem, ...]


def read_register(path: Path) -> RegisterFile:
    """Parse the register CSV at ``path``; bad rows become `RowProblem`s, not errors.

    Raises `RegistryError` when the file cannot be read or lacks a required column.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return parse_register(f, str(path))
    except FileNotFoundError:
        raise RegistryError(f"register {path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RegistryError(f"register {path}: cannot read: {exc}") from None


def parse_register(lines: Iterable[str], source: str) -> RegisterFile:
    """Parse register CSV text; see `read_register`. ``source`` names it in errors."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise RegistryError(f"register {source}: empty file")
    names = [name.strip() for name in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise RegistryError(f"register {source}: missing column(s) {', '.join(missing)}")
    index = {name: names.index(name) for name in COLUMNS}
    entries: dict[str, RegisterEntry] = {}
    first_line: dict[str, int] = {}
    problems: list[RowProblem] = []
    line = reader.line_num
    for row in reader:
        # line_num counts physical lines, so a quoted newline inside a field stays honest.
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            problems.append(RowProblem(start, f"expected {len(names)} fields, found {len(row)}"))
            continue
        fields = {name: row[i].strip() for name, i in index.items()}
        try:
            entry = _entry(fields)
        except ValueError as exc:
            problems.append(RowProblem(start, str(exc)))
            continue
        if entry.unit_id in first_line:
            problems.append(
                RowProblem(
                    start,
                    f"registration_code {entry.unit_id} repeats line {first_line[entry.unit_id]}",
                )
            )
            continue
        first_line[entry.unit_id] = start
        entries[entry.unit_id] = entry
    return RegisterFile(entries=tuple(entries.values()), problems=tuple(problems))


def _entry(fields: dict[str, str]) -> RegisterEntry:
    code = fields["registration_code"]
    if not code:
        raise ValueError("registration_code is empty")
    if any(ch.isspace() for ch in code):
        raise ValueError(f"registration_code {code!r} contains whitespace")
    return RegisterEntry(
        unit_id=code,
        building=fields["building"],
        address=fields["address"],
        street=fields["street"],
        use_unit=fields["use_unit"],
        contractor=fields["maintenance_contractor"],
        install_date=_optional(fields, "install_date", dt.date.fromisoformat),
        rated_speed_m_s=_optional(fields, "rated_speed_m_s", _positive_float),
        rated_load_kg=_optional(fields, "rated_load_kg", _positive_int),
        landings=_optional(fields, "landings", _positive_int),
        controller_model=fields["controller_model"],
        car_in_group=_optional(fields, "car_in_group", _positive_int),
    )


def _optional(fields: dict[str, str], column: str, parse: Callable[[str], T]) -> T | None:
    text = fields[column]
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{column}: cannot read {text!r}") from None


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects NaN
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value
