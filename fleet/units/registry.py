"""Reading the district unit register (CSV) into `RegisterEntry` values.

The file must have a header naming at least the columns in `COLUMNS` (extra columns are
ignored). A bad row is reported with its line number and skipped; the rest still load.

Optional columns (`OPTIONAL_COLUMNS`, issue 17), read into `RegisterDetails` when the
header has them; a column the file lacks is "unknown" for every unit, never "no":

- ``use_unit_contact``: the use unit's (使用单位) contact, free text. Personal data: kept
  for the district's staff, never in public output.
- ``maintenance_fund``: whether the unit has a maintenance fund: ``yes``/``no`` (also
  ``有``/``无``, ``true``/``false``, ``1``/``0``); an empty cell is unknown.
- ``last_inspection_date`` (YYYY-MM-DD) and ``last_inspection_result`` (``pass``/``fail``,
  also ``合格``/``不合格``): the last periodic inspection; empty cells are unknown.
- ``safety_assessments``: the dates (YYYY-MM-DD, separated by ``;``) of the unit's safety
  assessments; an empty cell in a file that has the column means none on record.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fleet.store.base import RegisterEntry
from fleet.store.publication import DETAIL_COLUMNS, Fund, RegisterDetails, Result

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

OPTIONAL_COLUMNS = DETAIL_COLUMNS

T = TypeVar("T")

_FUND: dict[str, Fund] = {
    "yes": "yes", "有": "yes", "true": "yes", "1": "yes",
    "no": "no", "无": "no", "false": "no", "0": "no",
}  # fmt: skip
_RESULT: dict[str, Result] = {"pass": "pass", "合格": "pass", "fail": "fail", "不合格": "fail"}


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
    """What a register file held: the good entries and the skipped rows; ``details``
    the optional columns of the good rows, ``optional`` which of them the file had."""

    entries: tuple[RegisterEntry, ...]
    problems: tuple[RowProblem, ...]
    details: tuple[RegisterDetails, ...] = ()
    optional: frozenset[str] = frozenset()


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
    optional = frozenset(c for c in OPTIONAL_COLUMNS if c in names)
    index = {name: names.index(name) for name in (*COLUMNS, *sorted(optional))}
    entries: dict[str, RegisterEntry] = {}
    details: dict[str, RegisterDetails] = {}
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
            detail = _details(entry.unit_id, fields, optional)
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
        details[entry.unit_id] = detail
    return RegisterFile(
        entries=tuple(entries.values()),
        problems=tuple(problems),
        details=tuple(details.values()),
        optional=optional,
    )


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


def _details(unit_id: str, fields: dict[str, str], optional: frozenset[str]) -> RegisterDetails:
    assessed = None
    if "safety_assessments" in optional:
        text = fields["safety_assessments"]
        try:
            assessed = tuple(
                sorted({dt.date.fromisoformat(d.strip()) for d in text.split(";") if d.strip()})
            )
        except ValueError:
            raise ValueError(
                f"safety_assessments: cannot read {text!r} (dates YYYY-MM-DD separated by ;)"
            ) from None
    return RegisterDetails(
        unit_id=unit_id,
        use_unit_contact=fields.get("use_unit_contact"),
        maintenance_fund=_choice(fields, "maintenance_fund", _FUND),
        last_inspection_date=_optional(fields, "last_inspection_date", dt.date.fromisoformat)
        if "last_inspection_date" in optional
        else None,
        last_inspection_result=_choice(fields, "last_inspection_result", _RESULT),
        safety_assessments=assessed,
    )


def _choice(fields: dict[str, str], column: str, values: dict[str, T]) -> T | None:
    text = fields.get(column, "")
    if not text:
        return None
    try:
        return values[text.lower()]
    except KeyError:
        raise ValueError(f"{column}: cannot read {text!r} (one of {', '.join(values)})") from None


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
