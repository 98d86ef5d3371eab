"""Numbers in query parameters and paths: one parser for every route, so that a bad
number is a 400 naming the parameter and never a 500.

Only ASCII digits count: Python's ``str.isdigit`` accepts ``²`` and ``٣`` (which ``int``
then refuses or reads), and ``float`` accepts ``inf``, ``nan`` and ``1e999``. A number
beyond the parameter's ``maximum`` is refused rather than passed on, where a store would
overflow on it (SQLite's integers are 64-bit).
"""

from __future__ import annotations

import math
import re

from fleet.read.selection import BadRequestError

# Anything a store can hold; a parameter's own maximum is usually far lower.
MAX_INTEGER = 2**63 - 1
_INTEGER = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")


def integer_param(
    name: str, text: str, default: int, *, minimum: int = 0, maximum: int = MAX_INTEGER
) -> int:
    """``text`` as a whole number in ``minimum``..``maximum`` (``default`` when empty).
    Raises `BadRequestError` naming ``name`` for anything else: signs, spaces, non-ASCII
    digits, or a value out of range."""
    if text == "":
        return default
    if _INTEGER.fullmatch(text) is None:
        raise BadRequestError(
            f"{name}: expected a whole number {minimum}..{maximum} in ASCII digits, got {text!r}"
        )
    value = int(text)
    if not minimum <= value <= maximum:
        raise BadRequestError(f"{name}: {value} is outside {minimum}..{maximum}")
    return value


def positive_param(name: str, text: str, default: float, *, maximum: float) -> float:
    """``text`` as a positive decimal (``12`` or ``1.5``) at most ``maximum``
    (``default`` when empty). Raises `BadRequestError` naming ``name`` otherwise (no
    exponent, ``inf`` or ``nan``)."""
    if text == "":
        return default
    if _DECIMAL.fullmatch(text) is None:
        raise BadRequestError(f"{name}: expected a positive decimal number, got {text!r}")
    value = float(text)
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise BadRequestError(f"{name}: {text} is outside (0, {maximum:g}]")
    return value
