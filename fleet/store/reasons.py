"""Migration "reason codes" (issue 19): an event's reason as a code with parameters.

An agent since issue 19 sends, beside the English ``reason`` sentence, a stable
``reason_code`` (``door_open_moving``, ...) and its ``reason_params`` (``{"speed":
"0.42"}``), so that the dashboard can render the sentence in the reader's language.
``events.reason_code`` keeps the code ('' from an older agent, and in rows stored before
this migration: the dashboard then shows the English ``reason``), ``events.reason_params``
the parameters as a JSON object of strings ('' for none).

Neither is part of the hash-chained history: the chained ``reason`` sentence says the
same, and rows chained before this migration must verify as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

REASONS_MIGRATION = """
ALTER TABLE events ADD COLUMN reason_code TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN reason_params TEXT NOT NULL DEFAULT '';
"""


def params_text(params: Mapping[str, str]) -> str:
    """The ``reason_params`` column of ``params``: a JSON object with sorted keys, ''
    for none (most events, and every older agent's)."""
    if not params:
        return ""
    return json.dumps(dict(sorted(params.items())), ensure_ascii=False, separators=(",", ":"))


def params_of(text: str | None) -> tuple[tuple[str, str], ...]:
    """The parameters stored as ``text`` (`params_text`), as sorted (name, value) pairs;
    none for '' or NULL. A column that is not a JSON object of strings (written by hand)
    reads as none: the dashboard then falls back to the English sentence."""
    if not text:
        return ()
    try:
        found = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(found, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in found.items()))
