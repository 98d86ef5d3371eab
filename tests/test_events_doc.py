"""docs/events.md gives every event one row "at a glance" (issue 13, 7): its class, its
GB/T 24476 and platform codes, its threshold with the source of the default, and the worst
case the phase bench measured. That table is a digest of the sections that say each thing
in full (the rules table, "Classes and codes", "Worst-case latency"); this test rebuilds
it from them and fails when it drifts, and when an event of the taxonomy has no row."""

from __future__ import annotations

import re
from pathlib import Path

from agent.detect.events import EventType

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"
GLANCE = "## Every event at a glance"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def _rows(section: str) -> list[list[str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]


def _split(name: str) -> list[str]:
    """'OVERTRAVEL_TOP / OVERTRAVEL_BOTTOM' and 'OVERTRAVEL_TOP / _BOTTOM' name two events."""
    parts = [p.strip() for p in name.split("/")]
    if len(parts) == 2 and parts[1].startswith("_"):
        parts[1] = parts[0].rsplit("_", 1)[0] + parts[1]
    return parts


def glance_rows(text: str) -> list[list[str]]:
    """The at-a-glance rows as the full sections say them, in the rules table's order."""
    rules: dict[str, list[str]] = {}
    order: list[str] = []
    for cells in _rows(text[: text.index("\n## ")]):
        for name in _split(cells[0]):
            rules[name] = cells
            order.append(name)
    classes = {cells[0]: cells for cells in _rows(_section(text, "## Classes and codes"))}
    worst: dict[str, list[str]] = {}
    for cells in _rows(_section(text, "## Worst-case latency")):
        for name in _split(cells[0]):
            worst[name] = cells
    out = []
    for name in order:
        c, w = classes[name], worst[name]
        out.append([name, c[1], c[3], c[4], rules[name][3], w[2], w[3]])
    return out


def render(rows: list[list[str]]) -> str:
    """The table's Markdown."""
    head = [
        "| event | class | GB/T 24476 | platform codes | threshold (default, and its source) "
        "| bound (fault visible → RAISED) | measured worst |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + ["| " + " | ".join(r) + " |" for r in rows])


def test_every_event_has_one_row_at_a_glance_that_matches_the_full_sections() -> None:
    text = DOC.read_text(encoding="utf-8")
    expected = glance_rows(text)
    assert sorted(r[0] for r in expected) == sorted(t.name for t in EventType)
    table = re.search(r"\| event \| class \|.*?(?=\n\n|\Z)", _section(text, GLANCE), re.S)
    assert table, f"docs/events.md: no table under {GLANCE!r}"
    assert table.group(0).strip() == render(expected), (
        "docs/events.md's at-a-glance table drifted from its sections; regenerate it with "
        "`python -m tests.test_events_doc`"
    )


if __name__ == "__main__":
    print(render(glance_rows(DOC.read_text(encoding="utf-8"))))
