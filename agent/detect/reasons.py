"""Why an event was raised or cleared, for the agent's English text and for any reader.

Every rule says why in an English sentence (`Event.reason`, sent as it has been since the
first fleet, which shows it as it is). Beside it goes a stable code and the parameters
the sentence was made of (`Event.reason_code`, `Event.reason_params`, wire fields
``Event.reason_code``/``reason_params``), so that a newer fleet renders the sentence in
the reader's language: its dashboard has one template per code (i18n.js ``reason.CODE``)
and falls back to the English text for a code it does not know.

A rule builds both at once with `coded`: the English text exactly as before, the code,
and the values as named parameters. Codes are stable once sent (fleets keep them in
their stores): a new sentence gets a new code, never an old one's. Values are sent as
text: a number as the rule shows it in English, an enum by its name (the dashboard puts
``mode``, ``door``, ``direction`` and ``type`` values in words).

tests/agent/test_reason_codes.py reads every ``coded(...)`` call of agent/detect and
fails when the dashboard has no template for a code, or the template's parameters are
not the call's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: A reason's parameters: (name, value as text) pairs, sorted by name.
Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reason:
    """An English reason sentence with its stable code and parameters."""

    text: str
    code: str
    params: Params = ()


def _shown(value: object) -> str:
    """A parameter's value as text: an enum by its name, anything else as ``str`` gives it
    (callers format their numbers as their English sentence does)."""
    if isinstance(value, enum.Enum):
        return value.name
    return str(value)


def coded(text: str, code: str, /, **params: object) -> Reason:
    """The `Reason` whose English sentence is ``text`` (as the rule has always written it),
    with ``code`` and ``params`` for a reader in another language."""
    return Reason(text, code, tuple(sorted((name, _shown(v)) for name, v in params.items())))
