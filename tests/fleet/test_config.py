from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

import fleet.config as fleet_config
from fleet.config import ConfigError, FleetConfig, default_config, load_config, parse_config
from tests.support import documented_defaults


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_empty_file_gives_documented_defaults_with_paths_relative_to_the_file(
    tmp_path: Path,
) -> None:
    config = load_config(_write(tmp_path, ""))
    assert config.server.listen == "127.0.0.1:50051"
    assert config.store.path == str(tmp_path / "fleet.db")
    assert config.coverage.stale_after_s == 30
    assert config.coverage.offline_after_s == 300
    assert config.registry.csv is None
    assert (config.ingest.max_batch_records, config.ingest.max_batch_bytes) == (500, 1_048_576)
    assert config.ingest.heartbeat_interval_s == 10
    assert default_config(tmp_path) == config


def test_values_are_read_and_memory_store_is_kept_verbatim(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[server]\nlisten = "127.0.0.1:0"\n[store]\npath = ":memory:"\n'
            "[coverage]\nstale_after_s = 5.5\noffline_after_s = 60\n"
            '[registry]\ncsv = "data/units.csv"\n[ingest]\nmax_batch_records = 50\n',
        )
    )
    assert config.server.listen == "127.0.0.1:0"
    assert config.store.path == ":memory:"
    assert config.coverage.stale_after_s == 5.5
    assert config.registry.csv == tmp_path / "data" / "units.csv"
    assert config.ingest.max_batch_records == 50
    assert isinstance(config, FleetConfig)


def test_every_problem_is_reported_at_once_by_dotted_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "alerts = 1\n"
        "[server]\nlisten = 50051\nport = 1\n"
        '[coverage]\nstale_after_s = "30"\n'
        "[ingest]\nmax_batch_records = true\nheartbeat_interval_s = 0\n"
        "[store]\npath = 3\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    for key in (
        "alerts: unknown key",
        "server.listen: expected a string, got an integer",
        "server.port: unknown key",
        "coverage.stale_after_s: expected an integer or a float, got a string",
        "ingest.max_batch_records: expected an integer, got a boolean",
        "ingest.heartbeat_interval_s: must be between 1 and 3600",
        "store.path: expected a string",
    ):
        assert key in problems
    assert len(caught.value.problems) == 7
    assert str(path) in str(caught.value)


def test_a_section_that_is_not_a_table_and_inconsistent_thresholds(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'server = "x"\n[coverage]\nstale_after_s = 60\noffline_after_s = 60\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        "server: expected a table, got a string",
        "coverage.offline_after_s: must be greater than coverage.stale_after_s",
    ]


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:http", "127.0.0.1:70000", ":80"])
def test_bad_listen_addresses(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.listen"):
        load_config(_write(tmp_path, f'[server]\nlisten = "{listen}"\n'))


def test_missing_and_unparsable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[server\n"))


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "fleet" / "fleet.example.toml"
    config = load_config(example)
    assert config.http.listen == "0.0.0.0:8443"
    assert config.http.cert == example.parent / "https" / "fleet.pem"
    assert config.query.listen == "0.0.0.0:50052" and config.query.auth
    assert config.tls.enabled and not config.tls.plaintext
    assert config.firmware.policy == example.parent / "firmware-policy.toml"
    assert config.firmware.policy.is_file()


def test_new_keys_are_read_and_checked(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[store]\nurl = "postgresql://u@h/db"\n[http]\nlisten = ""\n'
            "[server]\nmax_connection_age_s = 0\n[coverage]\nsweep_interval_s = 2\n"
            '[firmware]\npolicy = "p.toml"\n[ingest]\nmax_group_records = 100\n',
        )
    )
    assert (config.store.target, config.http.listen) == ("postgresql://u@h/db", "")
    assert (config.server.max_connection_age_s, config.coverage.sweep_interval_s) == (0, 2)
    assert (config.firmware.policy, config.ingest.max_group_records) == (tmp_path / "p.toml", 100)
    assert load_config(_write(tmp_path, "")).http.listen == "127.0.0.1:8080"
    # A throwaway fleet (gRPC on port 0) without an [http] listen never takes port 8080.
    ephemeral = load_config(_write(tmp_path, '[server]\nlisten = "127.0.0.1:0"\n'))
    assert ephemeral.http.listen == "127.0.0.1:0"
    with pytest.raises(ConfigError) as caught:
        load_config(
            _write(
                tmp_path,
                '[store]\nurl = "/var/db"\n[http]\nlisten = "nowhere"\n'
                "[coverage]\nsweep_interval_s = 0\n[server]\nkeepalive_time_s = 0\n",
            )
        )
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "server.keepalive_time_s",
        "http.listen",
        "store.url",
        "coverage.sweep_interval_s",
    ]


def test_server_workers_default_range_and_memory_store(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")).server.workers == 1
    assert load_config(_write(tmp_path, "[server]\nworkers = 2\n")).server.workers == 2
    for text, problem in (
        ("[server]\nworkers = 0\n", "server.workers: must be between 1 and 64, got 0"),
        ("[server]\nworkers = 1.5\n", "server.workers: expected an integer, got a float"),
        (
            '[server]\nworkers = 2\n[store]\npath = ":memory:"\n',
            "server.workers: several workers cannot share a :memory: store",
        ),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, text))
        assert problem in caught.value.problems


def test_security_keys_are_read_and_checked(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[http]\ncert = "h.pem"\nkey = "h.key"\n[tls]\nplaintext = true\n'
            '[query]\nlisten = "10.0.0.5:7000"\nauth = false\n',
        )
    )
    assert (config.http.cert, config.http.key) == (tmp_path / "h.pem", tmp_path / "h.key")
    assert config.http.tls and config.tls.plaintext
    assert (config.query.listen, config.query.auth) == ("10.0.0.5:7000", False)
    defaults = load_config(_write(tmp_path, ""))
    assert (defaults.query.listen, defaults.query.auth) == ("127.0.0.1:50052", True)
    assert not defaults.tls.plaintext and not defaults.http.tls
    # A throwaway fleet (gRPC on port 0) without a [query] listen never takes port 50052.
    ephemeral = load_config(_write(tmp_path, '[server]\nlisten = "127.0.0.1:0"\n'))
    assert ephemeral.query.listen == "127.0.0.1:0"
    with pytest.raises(ConfigError) as caught:
        load_config(
            _write(
                tmp_path,
                '[http]\ncert = "h.pem"\n[tls]\nplaintext = "yes"\n[query]\nlisten = "x"\n',
            )
        )
    assert caught.value.problems == [
        "tls.plaintext: expected a boolean, got a string",
        "http.key: must be set too (http.cert and http.key go together)",
        "query.listen: expected host:port, got 'x'",
    ]


def test_every_documented_default_is_the_default_applied(tmp_path: Path) -> None:
    """The docs block of fleet/config.py quotes each key's default: writing every quoted
    default out must give the same config as leaving every key out, targets included."""
    docs = documented_defaults(fleet_config.__doc__ or "")
    target = docs.pop("alarms.target.NAME")
    assert set(docs) == {section.name for section in fields(FleetConfig)}  # all documented
    assert parse_config(docs, tmp_path, source="docs") == parse_config({}, tmp_path, source="-")
    documented = {**docs["alarms"], "target": {"t": {**target, "kind": "mqtt"}}}
    bare = {"target": {"t": {"kind": "mqtt"}}}
    assert parse_config({"alarms": documented}, tmp_path, source="docs") == parse_config(
        {"alarms": bare}, tmp_path, source="-"
    )


def test_alarm_problems_are_each_reported_with_their_key(tmp_path: Path) -> None:
    """[alarms] and its target tables are read by the same validator as every section."""
    alarms = {
        "types": ["ENTRAPMENT", "NOPE"],
        "targets": ["rescue", "absent"],
        "repeat_s": "often",
        "timeout_s": 0,
        "bogus": 1,
        "target": {
            "rescue": {"kind": "webhook", "url": "ftp://x", "port": "80"},
            "bus": {"kind": "pager"},
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_config({"alarms": alarms}, tmp_path, source="t")
    assert caught.value.problems == [
        "alarms.repeat_s: expected an integer or a float, got a string",
        "alarms.bogus: unknown key",
        "alarms.timeout_s: must be between 0.001 and 86400, got 0",
        "alarms.types: unknown event type 'NOPE'",
        "alarms.target.rescue.port: expected an integer, got a string",
        "alarms.target.rescue.url: a webhook needs an http:// or https:// URL",
        "alarms.target.bus.kind: expected one of webhook, mqtt",
        "alarms.targets: no [alarms.target.absent] table",
    ]
    good = parse_config(
        {"alarms": {"targets": ["bus"], "target": {"bus": {"kind": "mqtt", "port": 1884}}}},
        tmp_path,
        source="t",
    ).alarms
    assert (good.targets, good.target["bus"].port, good.target["bus"].name) == (
        ("bus",),
        1884,
        "bus",
    )
