"""``liftwatch-fleet pki``: a small CA and the certificates for mutual TLS (see fleet.auth.pki)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from fleet.auth.pki import PkiError, init_ca, issue_agent, issue_server
from fleet.cli.common import UsageError, add_group, print_json
from fleet.read.shape import out, to_json
from fleet.store.agents import serial_text


@dataclass(frozen=True, slots=True)
class IssuedView:
    """`pki init/server/agent --json` (fleet.read.shape's definition; not an API answer)."""

    certificate: str = out("the certificate's PEM file")
    key: str = out("its private key's PEM file")
    serial: str = out("hexadecimal, as `agents revoke --serial` takes it")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `pki` command."""
    action = add_group(
        commands,
        "pki",
        "create a CA and issue the fleet's and the agents' certificates",
        "A small PKI for mutual TLS (files in DIR, see fleet/auth/pki.py): `init` "
        "creates the CA, `server` the fleet's certificate, `agent` an agent's (its Common "
        "Name is the agent id). Put DIR/server.pem, server.key and ca.pem in the fleet's "
        "[tls]; give each agent ca.pem and its own pair ([fleet] ca/cert/key).",
        dest="pki_command",
        metavar="STEP",
    )

    def step(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = action(name, help_text, description)
        sub.add_argument("dir", type=Path, metavar="DIR")  # first: pki STEP DIR [...]
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        return sub

    init_cmd = step(
        "init",
        "create the CA (DIR/ca.pem, DIR/ca.key)",
        "Create a CA (ECDSA P-256, 10 years) in DIR; refuses to overwrite one. "
        "Keep ca.key offline in production.",
    )
    init_cmd.add_argument("--name", default="LiftWatch CA", help="the CA's Common Name")
    server_cmd = step(
        "server",
        "issue the fleet's certificate (DIR/server.pem, DIR/server.key)",
        "Issue the fleet manager's server certificate, signed by the CA in DIR, "
        "for every --host the agents use to reach it (DNS names or IP addresses).",
    )
    server_cmd.add_argument(
        "--host", action="append", required=True, help="DNS name or IP address (repeatable)"
    )
    agent_cmd = step(
        "agent",
        "issue an agent's certificate (DIR/agents/AGENT_ID.pem, .key)",
        "Issue agent AGENT_ID's client certificate, signed by the CA in DIR. "
        "The fleet then admits it for the units `agents add AGENT_ID --unit ...` registers.",
    )
    agent_cmd.add_argument("agent_id", metavar="AGENT_ID")
    for sub in (server_cmd, agent_cmd):
        sub.add_argument("--force", action="store_true", help="replace an existing pair")


def run(args: argparse.Namespace) -> int:
    """Create the CA or issue a certificate, printing its serial; returns the exit status."""
    directory: Path = args.dir
    try:
        if args.pki_command == "init":
            pair = init_ca(directory, args.name)
        elif args.pki_command == "server":
            _refuse_overwrite(directory / "server.pem", directory / "server.key", args.force)
            pair = issue_server(directory, list(args.host))
        else:
            agent_dir = directory / "agents"
            _refuse_overwrite(
                agent_dir / f"{args.agent_id}.pem", agent_dir / f"{args.agent_id}.key", args.force
            )
            pair = issue_agent(directory, args.agent_id)
    except PkiError as exc:
        raise UsageError(f"pki {args.pki_command}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"pki {args.pki_command}: {exc.strerror or exc}: {exc.filename}") from None
    # The serial is what `agents revoke --serial` takes when this certificate is lost.
    pem = pair.certificate.read_bytes()
    serial = serial_text(x509.load_pem_x509_certificate(pem).serial_number)
    if args.json:
        print_json(to_json(IssuedView(str(pair.certificate), str(pair.key), serial)))
    else:
        print(f"wrote {pair.certificate} and {pair.key} (serial {serial})")
    return 0


def _refuse_overwrite(cert: Path, key: Path, force: bool) -> None:
    # A reissued key silently locks out whoever runs with the old one: make it deliberate.
    if not force and (cert.exists() or key.exists()):
        raise UsageError(f"{cert} already exists; pass --force to replace it")
