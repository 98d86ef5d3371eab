"""CSV that a spreadsheet opens as data, never as formulas.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
Excel and LibreOffice as a formula (CSV injection: a building named ``=HYPERLINK(...)``
in the register would run when a regulator opens the report). Such a cell is written with
a leading apostrophe, which the spreadsheet shows as text and does not display.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """``value`` as CSV cell text: None is empty, text with a formula-like start gets a
    ``'``. A number (int or float, never text) is written as it is: a basement's floor
    -1 stays the number -1, which no spreadsheet runs."""
    if value is None:
        return ""
    text = str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(
    header: Sequence[str], rows: Iterable[Sequence[object]], comments: Sequence[str] = ()
) -> str:
    """CSV of ``header`` and ``rows``, every cell made safe; ``comments`` come first, each
    a line starting with ``#`` (readers such as pandas skip them with ``comment="#"``)."""
    out = io.StringIO()
    for comment in comments:
        # One physical line, no quoting: a comment is never split or quoted into a cell.
        line = " ".join(comment.replace(",", ";").replace('"', "'").split())
        out.write(f"# {line}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return out.getvalue()
