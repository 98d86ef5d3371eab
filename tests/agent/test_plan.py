"""The poll planner: coalescing, gap bridging by the cost model, Modbus limits, rates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bus.plan import (
    MAX_BITS,
    MAX_REGISTERS,
    RTU_COST,
    TCP_COST,
    PlanError,
    Rate,
    Read,
    Span,
    Table,
    coalesce,
    plan_polls,
)
from agent.decode.parser import load_profile

H = Table.HOLDING


def test_adjacent_and_overlapping_spans_become_one_read() -> None:
    spans = [Span(H, 0, 2), Span(H, 2, 3), Span(H, 1, 1)]
    assert coalesce(spans) == (Read(H, 0, 5),)


def test_small_gaps_are_bridged_and_large_ones_are_not() -> None:
    # 20 bytes of overhead per read = 10 registers of gap.
    assert coalesce([Span(H, 0, 1), Span(H, 11, 1)]) == (Read(H, 0, 12),)
    assert coalesce([Span(H, 0, 1), Span(H, 12, 1)]) == (Read(H, 0, 1), Read(H, 12, 1))
    # A TCP round trip is worth far more than the bytes: bridge wide gaps there.
    assert coalesce([Span(H, 0, 1), Span(H, 60, 1)], TCP_COST) == (Read(H, 0, 61),)


def test_bits_bridge_by_bytes() -> None:
    d = Table.DISCRETE_INPUT
    assert coalesce([Span(d, 0, 1), Span(d, 100, 1)]) == (Read(d, 0, 101),)


def test_limits_split_reads() -> None:
    assert coalesce([Span(H, 0, 100), Span(H, 100, 100)]) == (Read(H, 0, 100), Read(H, 100, 100))
    d = Table.COIL
    assert coalesce([Span(d, 0, 1500), Span(d, 1500, 1000)]) == (
        Read(d, 0, 1500),
        Read(d, 1500, 1000),
    )


def test_tables_never_mix() -> None:
    reads = coalesce([Span(H, 0, 1), Span(Table.INPUT, 1, 1)])
    assert {r.table for r in reads} == {H, Table.INPUT}


def test_unreadable_spans_are_refused() -> None:
    with pytest.raises(PlanError):
        coalesce([Span(H, 65535, 2)])
    with pytest.raises(PlanError):
        coalesce([Span(H, 0, 126)])


def test_reference_plan_is_one_read_per_cycle_kind() -> None:
    plan = load_profile("reference").plan(RTU_COST)
    assert plan.fast == (Read(H, 0, 10),)
    assert plan.slow_cycle == (Read(H, 0, 16),)  # counters ride along on slow cycles
    assert plan.identity == (Read(H, 20, 24),)


def test_rates_are_planned_apart() -> None:
    plan = plan_polls([Span(H, 0, 2), Span(H, 40, 2, Rate.SLOW), Span(H, 100, 8, Rate.IDENTITY)])
    assert plan.fast == (Read(H, 0, 2),)
    assert plan.slow_cycle == (Read(H, 0, 2), Read(H, 40, 2))
    assert plan.identity == (Read(H, 100, 8),)


spans_strategy = st.lists(
    st.builds(
        Span,
        st.sampled_from(list(Table)),
        st.integers(0, 3000),
        st.integers(1, 40),
    ),
    min_size=1,
    max_size=30,
)


@given(spans_strategy)
def test_every_span_is_covered_within_limits(spans: list[Span]) -> None:
    reads = coalesce(spans)
    for read in reads:
        assert read.count <= (MAX_BITS if read.table.is_bits else MAX_REGISTERS)
    for span in spans:
        for address in range(span.address, span.end):
            assert any(r.table is span.table and r.address <= address < r.end for r in reads)
    # Never worse than one read per span.
    assert sum(RTU_COST.cost(r.table, r.count) for r in reads) <= sum(
        RTU_COST.cost(s.table, s.count) for s in spans
    )
