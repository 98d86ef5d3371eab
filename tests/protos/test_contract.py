"""The wire contract keeps its own rules: UNSPECIFIED zero values, fresh generated code."""

from __future__ import annotations

from google.protobuf.descriptor import FileDescriptor

from protos.liftwatch.v1 import gateway_pb2, query_pb2, records_pb2
from scripts import gen_protos

FILES: list[FileDescriptor] = [records_pb2.DESCRIPTOR, gateway_pb2.DESCRIPTOR, query_pb2.DESCRIPTOR]


def test_every_enum_starts_with_unspecified_zero() -> None:
    enums = [e for f in FILES for e in f.enum_types_by_name.values()]
    assert enums, "no enums found: the descriptors did not load"
    for enum in enums:
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), f"{enum.name}: 0 is {zero.name}"


def test_contract_is_versioned_by_package() -> None:
    assert {f.package for f in FILES} == {"liftwatch.v1"}


def test_generated_modules_are_fresh() -> None:
    assert gen_protos.main(["--check"]) == 0, "run `python scripts/gen_protos.py`"


def test_record_round_trips_every_payload_kind() -> None:
    kinds = [f.name for f in records_pb2.Record.DESCRIPTOR.oneofs_by_name["payload"].fields]
    assert kinds == [
        "car_state",
        "event",
        "counters",
        "link_status",
        "controller_info",
        "evidence",
    ]
    for kind in kinds:
        record = records_pb2.Record(seq=7, unit_id="u1")
        getattr(record, kind).SetInParent()
        again = records_pb2.Record.FromString(record.SerializeToString())
        assert again.WhichOneof("payload") == kind
        assert again.seq == 7
