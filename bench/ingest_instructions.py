"""Instructions the fleet executes to ingest a small fixed load, counted by valgrind's
callgrind: a figure the other work on a shared machine does not move, unlike wall-clock or
CPU seconds. Prints one JSON object.

    python bench/ingest_instructions.py --agents 50 --seconds 60
    python bench/ingest_instructions.py --tree ../old --agents 50 --seconds 60

One ``python -m fleet serve`` process (no --workers) on a fresh SQLite file runs under
``valgrind --tool=callgrind --instr-atstart=no``; counting starts once it printed its ready
line (imports and migrations, which differ between versions and are paid once, are not
counted) and stops when the load ends. The load is ``bench/fleet_ingest.py --worker``
(``--agents`` agents on their own connections, a batch of 4 CarStates each every 5 s,
events now and then, heartbeats) for ``--seconds``. Reported: instructions, records stored,
instructions per record, and the same per shared object (the interpreter, SQLite, libc,
gRPC's core, protobuf's C extension): where a difference between two versions lies.

``--tree DIR`` measures another version: a ``git archive`` export of it, whose fleet and
load generator then run (working directory and PYTHONPATH set to DIR). Under callgrind the
fleet runs about 50 times slower, so keep the load small (50 agents is 40 records a
second); how the records fall into group commits still varies from run to run, by about
10% per record at 50 agents over 60 s: compare several runs of each version.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 600.0  # start-up runs under valgrind too (uninstrumented, still slower)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print its JSON; exit status 2 when valgrind is missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50, help="simulated agents (default 50)")
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (60)")
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="the version to measure (default: this one)"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("ingest_instructions: valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    print(json.dumps(measure(args.tree.resolve(), args.agents, args.seconds)))
    return 0


def measure(tree: Path, agents: int, seconds: float) -> dict[str, object]:
    """Instructions of ``tree``'s fleet ingesting ``agents`` agents for ``seconds``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    with tempfile.TemporaryDirectory(prefix="ingest-instructions-") as work:
        out = Path(work) / "callgrind.out"
        fleet = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "fleet",
                "serve",
                "--db",
                str(Path(work) / "fleet.db"),
                "--listen",
                "127.0.0.1:0",
                "--http",
                "",
                "--log-level",
                "WARNING",
            ],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert fleet.stdout is not None
            ready = json.loads(fleet.stdout.readline())
            _instrument(fleet.pid, "on")
            load = subprocess.run(
                [
                    sys.executable,
                    str(tree / "bench" / "fleet_ingest.py"),
                    "--worker",
                    "--address",
                    str(ready["grpc"]),
                    "--first",
                    "0",
                    "--count",
                    str(agents),
                    "--seconds",
                    str(seconds),
                    "--ramp-s",
                    "2",
                    "--interval-s",
                    "5",
                    "--client",
                    "wire",
                ],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            _instrument(fleet.pid, "off")
        finally:
            fleet.send_signal(signal.SIGTERM)
            fleet.wait(timeout=READY_TIMEOUT_S)
        acked = sum(a for _, a in json.loads(load.stdout)["agents"].values())
        with sqlite3.connect(Path(work) / "fleet.db") as conn:
            records = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        total, by_object = _annotate(out)
    return {
        "tree": str(tree),
        "agents": agents,
        "seconds": seconds,
        "records": records,
        "acked": acked,
        "instructions": total,
        "per_record": round(total / records) if records else None,
        "by_object": dict(by_object.most_common(6)),
        "loadavg": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
    }


def _instrument(pid: int, state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True)


def _annotate(out: Path) -> tuple[int, collections.Counter[str]]:
    """The program's instructions, and those of each shared object (file name up to its
    first dot) from callgrind_annotate's per-function listing (which leaves out a few
    percent it cannot place)."""
    listing = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    totals: collections.Counter[str] = collections.Counter()
    program = 0
    for line in listing.splitlines():
        if line.rstrip().endswith("PROGRAM TOTALS"):
            program = int(line.split()[0].replace(",", ""))
        found = re.match(r"\s*([\d,]+) \(.*?\)\s+.*\[(.*?)\]\s*$", line)
        if found:
            totals[Path(found.group(2)).name.split(".")[0]] += int(found.group(1).replace(",", ""))
    return program, totals


if __name__ == "__main__":
    sys.exit(main())
