"""`deploy_tls_on`: every file shipped in deploy/ turns TLS on and locks the container
down. The Kubernetes manifest is read line by line for the facts checked (the project
carries no YAML library); its embedded fleet.toml is parsed by the fleet's own loader."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fleet.config import FleetConfig, load_config, parse_config
from fleet.ingest.access import plaintext_problems

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# What each shipped file is; a new file must be classified here (and so checked).
KINDS = {
    "agent/99-liftwatch-serial.rules": "udev",
    "agent/agent.example.toml": "agent config",
    "agent/agent.rtu.example.toml": "agent config",
    "agent/install.sh": "installer",
    "agent/liftwatch-agent.service": "systemd unit",
    "agent/liftwatch-updater.service": "systemd unit",
    "fleet/Containerfile": "image",
    "fleet/firmware-policy.toml": "firmware policy",
    "fleet/fleet.example.toml": "fleet config",
    "fleet/kubernetes.yaml": "manifests",
    "grafana/liftwatch-fleet.json": "dashboard",
    "prometheus/liftwatch-rules.test.yml": "alert rules",
    "prometheus/liftwatch-rules.yml": "alert rules",
}


def _shipped() -> dict[str, Path]:
    return {str(p.relative_to(DEPLOY)): p for p in sorted(DEPLOY.rglob("*")) if p.is_file()}


def test_every_deploy_file_is_classified() -> None:
    assert set(_shipped()) == set(KINDS)


def _fleet_config_is_secure(config: FleetConfig, where: str) -> None:
    assert config.tls.enabled, f"{where}: [tls] (mutual TLS for agents) is off"
    assert config.tls.client_ca is not None, where
    assert not config.tls.plaintext, f"{where}: tls.plaintext is on"
    assert config.http.listen == "" or config.http.tls, f"{where}: HTTP without [http] cert"
    assert config.query.auth, f"{where}: FleetQuery without tokens"
    assert plaintext_problems(config) == [], where
    assert config.http.auth, f"{where}: the dashboard without logins"


def test_deploy_tls_on_fleet_configs() -> None:
    _fleet_config_is_secure(load_config(DEPLOY / "fleet" / "fleet.example.toml"), "example")
    for name, text in _embedded_tomls(DEPLOY / "fleet" / "kubernetes.yaml").items():
        if "[server]" in text:
            config = parse_config(tomllib.loads(text), Path("/etc/liftwatch"), source=name)
            _fleet_config_is_secure(config, f"kubernetes.yaml {name}")


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k == "agent config"])
def test_deploy_tls_on_agent_configs(name: str) -> None:
    fleet = tomllib.loads((DEPLOY / name).read_text(encoding="utf-8"))["fleet"]
    assert fleet.get("insecure", False) is False, f"{name}: [fleet] insecure"
    assert all(fleet.get(key) for key in ("ca", "cert", "key")), f"{name}: no mutual TLS"


def _documents(path: Path) -> list[str]:
    return [d for d in re.split(r"(?m)^---\s*$", path.read_text(encoding="utf-8")) if d.strip()]


def _kind(document: str) -> str:
    found = re.search(r"(?m)^kind:\s*(\S+)", document)
    assert found, document[:200]
    return found.group(1)


def _embedded_tomls(path: Path) -> dict[str, str]:
    """The ``NAME.toml: |`` blocks of the ConfigMaps, dedented."""
    blocks: dict[str, str] = {}
    for document in _documents(path):
        if _kind(document) != "ConfigMap":
            continue
        lines = document.splitlines()
        for index, line in enumerate(lines):
            head = re.match(r"^(\s*)(\S+\.toml):\s*\|\s*$", line)
            if not head:
                continue
            indent = len(head.group(1))
            body: list[str] = []
            for following in lines[index + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            width = min(len(b) - len(b.lstrip()) for b in body if b.strip())
            blocks[head.group(2)] = "\n".join(b[width:] for b in body) + "\n"
    return blocks


def test_deploy_manifests_lock_the_container_down() -> None:
    documents = _documents(DEPLOY / "fleet" / "kubernetes.yaml")
    kinds = [_kind(d) for d in documents]
    assert "NetworkPolicy" in kinds
    policy = documents[kinds.index("NetworkPolicy")]
    assert re.search(r"policyTypes:\s*\[Ingress, Egress\]", policy)
    deployments = [d for d in documents if _kind(d) == "Deployment"]
    assert deployments
    for deployment in deployments:
        for setting in (
            r"runAsNonRoot:\s*true",
            r"readOnlyRootFilesystem:\s*true",
            r"allowPrivilegeEscalation:\s*false",
            r"drop:\s*\[\"ALL\"\]",
            r"seccompProfile:\s*\{type:\s*RuntimeDefault\}",
        ):
            assert re.search(setting, deployment), setting
        images = re.findall(r"(?m)^\s*image:\s*(\S+)", deployment)
        assert images
        for image in images:
            pinned = "@sha256:" in image or re.search(r":\d+\.\d+\.\d+$", image)
            assert pinned, f"image {image} is not pinned to a digest or an exact version"
        # No plaintext port or probe: the kubelet's gRPC probe cannot speak TLS.
        assert not re.search(r"(?m)^\s*grpc:\s*\{port", deployment)
        assert "scheme: HTTPS" in deployment


def test_deploy_image_ships_no_test_code_and_runs_as_non_root() -> None:
    text = (DEPLOY / "fleet" / "Containerfile").read_text(encoding="utf-8")
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    copies = [line for line in instructions if line.startswith("COPY")]
    for forbidden in ("hil_tests", "tests", "agent ", "bench"):
        assert not any(f" {forbidden}" in line for line in copies), forbidden
    assert "sys.exit(any(u.find_spec(m) for m in ('hil_tests', 'tests', 'agent')))" in text
    users = [line.split()[1] for line in instructions if line.startswith("USER")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for line in instructions:
        if line.startswith("FROM"):
            image = line.split()[1]
            assert re.search(r":\d+\.\d+\.\d+[-\w]*$", image) or "@sha256:" in image, line
