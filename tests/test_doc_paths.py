"""Docs, docstrings and comments cite only files that exist (issue 15, item 9).

Every path-like citation (``fleet/store/verdicts.py``, ``docs/events.md``, ``web/api.py``)
in a Markdown file, or in a comment or docstring of a Python file, must name a file of
this repository: from its root, from the citing file's folder, or as the tail of a path
in the tree (``store/verdicts.py`` inside fleet's docs). Moving a module therefore
fails this test until its citations follow it.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS = "py|pyi|md|toml|proto|csv|ya?ml|json|sh|service|rules|html|js|css|txt"
# A relative path of at least two parts ending in a file name with a known extension; not
# part of a longer path, a URL or a dotted name.
CITATION = re.compile(rf"(?<![\w./:-])((?:\.\./)*[\w.-]+(?:/[\w.-]+)*/[\w-]+\.(?:{EXTENSIONS}))\b")
# The design document sits beside the repository (../shared/), not in it.
OUTSIDE_THE_REPOSITORY = {"shared/DESIGN.md", "../shared/DESIGN.md"}
# Stand-ins for any name: agent/profiles/NAME.toml, liftwatch/v1/x.proto.
PLACEHOLDER_STEMS = {"NAME", "x"}


def repository_files() -> list[str]:
    """The tracked and not-ignored files of the working tree, relative to the root."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [f for f in listed.stdout.splitlines() if (ROOT / f).is_file()]


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of what a reader reads in ``path``: a Markdown file's lines, a Python
    file's comments and docstrings."""
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        yield from enumerate(source.splitlines(), 1)
        return
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, docstring


def dangling_citations() -> list[str]:
    """``file:line: cited`` for every citation of a file that does not exist."""
    files = repository_files()
    tails: set[str] = set()
    for f in files:
        parts = f.split("/")
        tails.update("/".join(parts[i:]) for i in range(len(parts)))
    found = []
    for f in files:
        if not f.endswith((".py", ".md")) or f.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        here = (ROOT / f).parent
        for line, text in prose(ROOT / f):
            for match in CITATION.finditer(text):
                cited = match.group(1)
                if (
                    cited in OUTSIDE_THE_REPOSITORY
                    or Path(cited).stem in PLACEHOLDER_STEMS
                    or (ROOT / cited).exists()
                    or (here / cited).exists()
                    or cited in tails
                ):
                    continue
                found.append(f"{f}:{line}: {cited}")
    return found


def test_docs_and_docstrings_cite_only_files_that_exist() -> None:
    assert dangling_citations() == []


def test_the_scanner_reads_citations_in_docstrings(tmp_path: Path) -> None:
    # The scanner itself: a citation of a file that is not there is found, one that is
    # there (from the root, from beside the citer, or as a tail) is not.
    text = '"""See fleet/no_such_module.py, docs/events.md, store/verdicts.py and x/y."""\n'
    cited = [m.group(1) for m in CITATION.finditer(text)]
    assert cited == ["fleet/no_such_module.py", "docs/events.md", "store/verdicts.py"]
    source = tmp_path / "cites.py"
    source.write_text(text, encoding="utf-8")
    assert [t for _, t in prose(source)] == [text[3:-4]]
