"""Reason codes (issue 19, item 4): every reason a detector can send has a code the
dashboard renders in both languages, with the same parameters.

The codes are read from the detectors themselves (every ``coded(TEXT, "code", ...)`` call
in agent/detect), not from a list kept by hand: a rule given a new code without its
templates in fleet/web/static/i18n.js fails here, and so does a template whose
placeholders are not the call's parameters. The English text stays the agent's own
(older fleets show it); the record carries the code and parameters beside it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from agent.detect.events import Event, EventType, Phase
from agent.detect.reasons import coded
from agent.records import TimeBase, event_record

REPO = Path(__file__).resolve().parents[2]
DETECT = REPO / "agent" / "detect"
I18N = REPO / "fleet" / "web" / "static" / "i18n.js"


def _detector_codes() -> dict[str, set[frozenset[str]]]:
    """Each code the detectors pass to `coded`, with the parameter names of each call."""
    found: dict[str, set[frozenset[str]]] = {}
    for path in sorted(DETECT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "coded"):
                continue
            where = f"{path.name}:{node.lineno}"
            assert len(node.args) == 2, f"{where}: coded(TEXT, CODE, name=value...)"
            code = node.args[1]
            # A literal, so that this test (and a reader) can see every code there is.
            assert isinstance(code, ast.Constant) and isinstance(code.value, str), where
            assert re.fullmatch(r"[a-z][a-z0-9_]*", code.value), where
            names = frozenset(k.arg for k in node.keywords if k.arg is not None)
            found.setdefault(code.value, set()).add(names)
    return found


def _templates() -> dict[str, dict[str, str]]:
    text = I18N.read_text(encoding="utf-8")
    body = text[text.index("window.LW_I18N = ") + len("window.LW_I18N = ") : text.rindex(";")]
    catalogues: dict[str, dict[str, str]] = json.loads(body)
    return {
        lang: {k.removeprefix("reason."): v for k, v in labels.items() if k.startswith("reason.")}
        for lang, labels in catalogues.items()
    }


def test_every_reason_code_of_the_detectors_renders_in_both_languages() -> None:
    codes = _detector_codes()
    assert len(codes) > 40, "the scan no longer finds the detectors' reasons"
    templates = _templates()
    for lang in ("zh", "en"):
        missing = sorted(set(codes) - set(templates[lang]))
        assert missing == [], f"i18n.js ({lang}) has no reason.CODE for {missing}"
        for code, calls in codes.items():
            placeholders = frozenset(re.findall(r"\{(\w+)\}", templates[lang][code]))
            assert calls == {placeholders}, (lang, code, calls, placeholders)
    # No template is left for a code no detector sends any more.
    assert sorted(set(templates["zh"]) - set(codes)) == []


def test_the_record_carries_the_code_and_parameters_beside_the_english_text() -> None:
    why = coded("doors open at a landing for 30 s", "door_held_open", s="30")
    event = Event(
        EventType.DOOR_HELD_OPEN,
        Phase.RAISED,
        1.0,
        31.0,
        2,
        why.text,
        reason_code=why.code,
        reason_params=why.params,
    )
    message = event_record("U1", event, "ev-1", TimeBase(monotonic=0.0, utc=1_780_000_000.0)).event
    assert message.reason == "doors open at a landing for 30 s"
    assert (message.reason_code, dict(message.reason_params)) == ("door_held_open", {"s": "30"})
    # The code is no part of what an event is: the same event without it is equal.
    assert event == Event(EventType.DOOR_HELD_OPEN, Phase.RAISED, 1.0, 31.0, 2, why.text)
