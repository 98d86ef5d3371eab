"""Regenerate the Python modules of the wire contract, or check that they are fresh.

    python scripts/gen_protos.py            # rewrite protos/liftwatch/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --check    # exit 1 if the checked-in modules are stale

The .proto files import each other as ``liftwatch/v1/x.proto`` so that any language can
compile them with ``-I protos``. protoc then emits ``from liftwatch.v1 import x_pb2``;
inside this distribution the package is ``protos.liftwatch.v1``, so those imports are
rewritten. The protoc that emits the modules is the one in the pinned grpcio-tools.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = PROTO_ROOT / "liftwatch" / "v1"
_IMPORT = re.compile(r"^from liftwatch\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under protos/liftwatch/v1 into out_dir; return the files made."""
    from grpc_tools import protoc  # dev dependency; imported here so --help works without it

    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: see the messages above")
    made = sorted((out_dir / "liftwatch" / "v1").glob("*_pb2*.py*"))
    for path in made:
        text = _IMPORT.sub("from protos.liftwatch.v1 import ", path.read_text())
        path.write_text(text)
    return made


def main(argv: list[str] | None = None) -> int:
    """Regenerate (default) or check (--check) the generated modules."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when anything is stale"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        made = generate(Path(tmp))
        stale: list[str] = []
        wanted = {p.name for p in made}
        for path in made:
            target = PACKAGE_DIR / path.name
            new = path.read_text()
            old = target.read_text() if target.exists() else ""
            if new == old:
                continue
            if args.check:
                stale.append(path.name)
                sys.stdout.writelines(
                    difflib.unified_diff(
                        old.splitlines(True), new.splitlines(True), str(target), "generated", n=1
                    )
                )
            else:
                target.write_text(new)
        for extra in PACKAGE_DIR.glob("*_pb2*.py*"):
            if extra.name not in wanted:
                stale.append(extra.name) if args.check else extra.unlink()
    if stale:
        print(
            f"stale generated modules: {', '.join(sorted(stale))}; "
            "run `python scripts/gen_protos.py`",
            file=sys.stderr,
        )
        return 1
    if not args.check:
        print(f"generated {len(made)} modules in {PACKAGE_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
