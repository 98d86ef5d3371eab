"""A small PKI for mutual TLS between agents and fleet managers.

`liftwatch-fleet pki init DIR` creates a CA (ECDSA P-256, 10 years); `pki server DIR
--host NAME...` issues the fleet's server certificate; `pki agent DIR AGENT_ID` issues an
agent's client certificate, whose Common Name is the agent id: under mutual TLS the fleet
reads the agent's identity from the verified certificate, never from what Hello claims.

Files (PEM, keys readable by their owner only)::

    DIR/ca.pem  DIR/ca.key                      the CA; keep ca.key offline in production
    DIR/server.pem  DIR/server.key              the fleet manager
    DIR/agents/AGENT_ID.pem  AGENT_ID.key       one pair per edge box
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 10
LEAF_DAYS = 825  # the longest validity common TLS clients still accept
AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PkiError(Exception):
    """A PKI operation that cannot be done (the message says why and where)."""


@dataclass(frozen=True, slots=True)
class IssuedPair:
    certificate: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # A key written over an older file keeps no wider mode that file had.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LiftWatch"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def init_ca(
    directory: Path, name: str = "LiftWatch CA", *, now: dt.datetime | None = None
) -> IssuedPair:
    """Create a CA in ``directory``; refuses to overwrite an existing one."""
    pair = IssuedPair(directory / "ca.pem", directory / "ca.key")
    if pair.certificate.exists() or pair.key.exists():
        raise PkiError(f"{directory}: a CA already exists (ca.pem/ca.key); not overwriting it")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(pair.key, key)
    _write_cert(pair.certificate, cert)
    return pair


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise PkiError(f"{directory}: no CA here ({exc.filename}); run `pki init` first") from exc
    except ValueError as exc:
        raise PkiError(f"{directory}: unreadable CA: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{directory}/ca.key: not an EC key")
    return cert, key


def _issue(
    directory: Path,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
    pair: IssuedPair,
    now: dt.datetime | None,
) -> IssuedPair:
    ca_cert, ca_key = _load_ca(directory)
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write_key(pair.key, key)
    _write_cert(pair.certificate, builder.sign(ca_key, hashes.SHA256()))
    return pair


def issue_server(
    directory: Path, hosts: list[str], *, now: dt.datetime | None = None
) -> IssuedPair:
    """Issue the fleet's server certificate for ``hosts`` (DNS names or IP addresses)."""
    if not hosts:
        raise PkiError("a server certificate needs at least one --host")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    pair = IssuedPair(directory / "server.pem", directory / "server.key")
    return _issue(directory, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names, pair, now)


def issue_agent(directory: Path, agent_id: str, *, now: dt.datetime | None = None) -> IssuedPair:
    """Issue agent ``agent_id``'s client certificate (its Common Name is the agent id)."""
    if not AGENT_ID.match(agent_id):
        raise PkiError(
            f"agent id {agent_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    pair = IssuedPair(
        directory / "agents" / f"{agent_id}.pem", directory / "agents" / f"{agent_id}.key"
    )
    return _issue(directory, agent_id, ExtendedKeyUsageOID.CLIENT_AUTH, [], pair, now)


def common_name(certificate_pem: bytes) -> str:
    """The Common Name of a PEM certificate (the agent id of an agent certificate)."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""
