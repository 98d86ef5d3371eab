"""The security probes of issue 14: does each hole an attacker found stay closed?

Each probe attacks real processes on loopback. Most are the pytest files (or nodes) of
``tests/security/`` and ``tests/fleet/`` that start a real fleet (gRPC and HTTP on
loopback ports, a real SQLite store, the real CLI in another process), run here in a
pytest subprocess each: the probe held when every test of it passed. ``live_stream_flood``
also runs ``bench/live_flood.py`` and holds only when the ENTRAPMENT ack p99 during the
flood stays under 250 ms. A probe whose test file does not exist yet is reported
``held: false`` with the detail ``not implemented``.

Prints ``{"probes": [{"name", "held", "detail"}]}`` with ``--json`` (a table without),
and exits 1 when any probe did not hold.

    .venv/bin/python bench/security_probe.py --json [--only NAME ...] [--flood-streams N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECURITY = "tests/security"
# The bound on the ENTRAPMENT ack time while /api/live is flooded.
FLOOD_ACK_P99_MS = 250.0


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe: the pytest targets that attack it (files or nodes, from the repository
    root), and an optional ``-k`` expression selecting among them."""

    name: str
    targets: tuple[str, ...]
    select: str = ""


PROBES = (
    Probe("agent_cert_cannot_query", (f"{SECURITY}/test_fleet_access.py",),
          "agent_cert_cannot_query or reflection"),
    Probe("removed_agent_refused", (f"{SECURITY}/test_fleet_access.py",),
          "removed_agent_refused or partial_removal or revoked_certificate"),
    Probe("deploy_tls_on", (f"{SECURITY}/test_deploy.py", f"{SECURITY}/test_transport.py")),
    Probe("disk_full_keeps_events", (f"{SECURITY}/test_disk_full.py",)),
    Probe("live_stream_flood", (f"{SECURITY}/test_live_flood.py",)),
    Probe("upload_size_first", (f"{SECURITY}/test_uploads.py",)),
    Probe("login_throttled", (f"{SECURITY}/test_login_throttle.py",)),
    Probe("csv_formulas_neutralised", (f"{SECURITY}/test_csv_formulas.py",)),
    Probe("record_time_range", ("tests/fleet/test_gateway_record_times.py",
                                "tests/agent/test_uplink_quarantine.py")),
    Probe("string_limits", (f"{SECURITY}/test_string_limits.py",)),
    Probe("reassignment_immediate", (f"{SECURITY}/test_reassignment.py",)),
    Probe("bad_numbers_400", (f"{SECURITY}/test_bad_numbers.py",)),
    Probe("history_truncation_found", ("tests/fleet/test_history_checks.py",),
          "head_rewound or whole_chain_deleted or tail_rewritten or deleted_event_row"),
    Probe("malformed_frames_rejected", (f"{SECURITY}/test_malformed_frames.py",)),
    Probe("agent_stream_limit_and_seq_gaps", (f"{SECURITY}/test_abuse_limits.py",)),
    Probe("security_headers_and_cookies", (f"{SECURITY}/test_headers.py",)),
    Probe("files_and_keys_0600", (f"{SECURITY}/test_file_modes.py",)),
    Probe("contractor_scope_every_route", (f"{SECURITY}/test_scope_routes.py",)),
    # The surfaces of issues 16, 17, 20 and 21 (the flight recorder, maintenance truth and
    # the published lists, remote configuration and releases, northbound forwarding).
    Probe("evidence_only_for_own_units", (f"{SECURITY}/test_evidence_abuse.py",),
          "not flood"),
    Probe("evidence_requests_one_per_car", (f"{SECURITY}/test_evidence_abuse.py",), "flood"),
    Probe("config_reports_own_units_only", (f"{SECURITY}/test_config_report_abuse.py",)),
    Probe("releases_only_to_offered_agents", ("tests/fleet/test_release_gateway.py",)),
    Probe("updater_faults_recovered", (f"{SECURITY}/test_updater_faults.py",)),
    Probe("northbound_hostile_platform", (f"{SECURITY}/test_northbound_abuse.py",)),
    Probe("public_lists_flood", (f"{SECURITY}/test_public_flood.py",)),
    Probe("public_lists_no_drafts_no_personal_data", ("tests/fleet/test_publication_web.py",)),
    Probe("records_upload_yields", (f"{SECURITY}/test_upload_flood.py",)),
    Probe("update_reports_bounded", (f"{SECURITY}/test_update_report_abuse.py",)),
    Probe("fleet_disk_full_loses_nothing", (f"{SECURITY}/test_fleet_disk_full.py",)),
)  # fmt: skip


def run_pytest(probe: Probe) -> tuple[bool, str]:
    """Run ``probe``'s tests in a pytest subprocess: (all passed, pytest's summary)."""
    missing = [t for t in probe.targets if not (ROOT / t.split("::")[0]).exists()]
    if missing:
        return False, "not implemented (" + ", ".join(missing) + " absent)"
    command = [sys.executable, "-m", "pytest", *probe.targets, "-q", "-p", "no:cacheprovider"]
    if probe.select:
        command += ["-k", probe.select]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else done.stderr.strip()[-300:]
    if done.returncode == 0:
        return True, summary
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return False, "; ".join([*failed[:5], summary])


def run_flood(streams: int) -> tuple[bool, str]:
    """``bench/live_flood.py``: the ENTRAPMENT ack p99 while ``streams`` live streams are
    held open, against `FLOOD_ACK_P99_MS`."""
    script = ROOT / "bench" / "live_flood.py"
    if not script.exists():
        return False, "not implemented (bench/live_flood.py absent)"
    command = [sys.executable, str(script), "--json", "--streams", str(streams)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    try:
        result = json.loads(done.stdout)
        p99 = float(result["ack_ms"]["p99"])
    except (ValueError, KeyError, TypeError):
        return False, f"bench/live_flood.py gave no result: {done.stderr.strip()[-300:]}"
    held = p99 < FLOOD_ACK_P99_MS
    return held, (
        f"{streams} streams: ENTRAPMENT ack p99 {p99:.0f} ms during the flood "
        f"({'under' if held else 'NOT under'} {FLOOD_ACK_P99_MS:.0f} ms)"
    )


def run_probe(probe: Probe, flood_streams: int) -> dict[str, object]:
    """One probe's row: name, held, detail (with how long it took)."""
    started = time.monotonic()
    held, detail = run_pytest(probe)
    if probe.name == "live_stream_flood" and flood_streams > 0 and not detail.startswith("not"):
        flood_held, flood_detail = run_flood(flood_streams)
        held, detail = held and flood_held, f"{detail}; {flood_detail}"
    return {
        "name": probe.name,
        "held": held,
        "detail": f"{detail} [{time.monotonic() - started:.1f} s]",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the probes; print them; 1 when any did not hold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--only", action="append", choices=[p.name for p in PROBES], help="run this probe only"
    )
    parser.add_argument(
        "--flood-streams",
        type=int,
        default=1500,
        help="live streams bench/live_flood.py holds open (0: skip the bench)",
    )
    args = parser.parse_args(argv)
    chosen = [p for p in PROBES if not args.only or p.name in args.only]
    rows = [run_probe(p, args.flood_streams) for p in chosen]
    if args.json:
        print(json.dumps({"probes": rows}, ensure_ascii=False))
    else:
        for row in rows:
            print(f"{'held' if row['held'] else 'OPEN':5} {row['name']:34} {row['detail']}")
    return 0 if all(row["held"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
