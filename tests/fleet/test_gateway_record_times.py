"""Record times outside the fleet's window are refused as MALFORMED, naming the record."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fleet.config import IngestConfig, parse_config
from fleet.ingest.gateway import check_batch
from protos.liftwatch.v1 import gateway_pb2
from tests.fleet.factories import T0, batch, record

LIMITS = IngestConfig(max_clock_skew_s=300, max_record_age_s=86_400)
NOW = T0.timestamp()


def reject(*offsets_s: float) -> gateway_pb2.Reject | None:
    records = [
        record(seq, time=T0 + dt.timedelta(seconds=offset))
        for seq, offset in enumerate(offsets_s, start=1)
    ]
    return check_batch(batch(*records).batch, frozenset({"U1"}), LIMITS, now_s=NOW)


@pytest.mark.parametrize("offset_s", [0.0, 299.0, -86_399.0])
def test_times_within_the_window_pass(offset_s: float) -> None:
    assert reject(0.0, offset_s) is None


@pytest.mark.parametrize(
    ("offset_s", "words"),
    [(301.0, "ahead of the fleet's clock"), (-86_401.0, "behind the fleet's clock")],
)
def test_times_outside_the_window_are_malformed_naming_the_record(
    offset_s: float, words: str
) -> None:
    problem = reject(0.0, offset_s, 0.0)
    assert problem is not None
    assert problem.code == gateway_pb2.REJECT_CODE_MALFORMED
    assert problem.reason.startswith("record seq 2 time ")
    assert words in problem.reason


def test_nanos_out_of_range_are_malformed() -> None:
    bad = record(1)
    bad.time.nanos = 1_000_000_000
    problem = check_batch(batch(bad).batch, frozenset({"U1"}), LIMITS, now_s=NOW)
    assert problem is not None and problem.reason.startswith("record seq 1 time has nanos")


def test_without_a_clock_times_are_not_judged() -> None:
    far = record(1, time=T0 + dt.timedelta(days=3650))
    assert check_batch(batch(far).batch, frozenset({"U1"}), LIMITS) is None


def test_the_window_is_configurable_and_checked(tmp_path: Path) -> None:
    config = parse_config(
        {"ingest": {"max_clock_skew_s": 60, "max_record_age_s": 7 * 86_400}},
        tmp_path,
        source="fleet.toml",
    )
    assert (config.ingest.max_clock_skew_s, config.ingest.max_record_age_s) == (60, 604_800)
    assert IngestConfig().max_clock_skew_s == 300
    with pytest.raises(Exception, match="max_clock_skew_s"):
        parse_config({"ingest": {"max_clock_skew_s": 0}}, tmp_path, source="fleet.toml")
