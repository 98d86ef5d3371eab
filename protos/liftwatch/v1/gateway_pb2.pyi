import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.liftwatch.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_CODE_UNSPECIFIED: _ClassVar[RejectCode]
    REJECT_CODE_UNKNOWN_AGENT: _ClassVar[RejectCode]
    REJECT_CODE_UNIT_NOT_PERMITTED: _ClassVar[RejectCode]
    REJECT_CODE_MALFORMED: _ClassVar[RejectCode]
    REJECT_CODE_OUT_OF_ORDER: _ClassVar[RejectCode]
    REJECT_CODE_TOO_LARGE: _ClassVar[RejectCode]
    REJECT_CODE_PROTOCOL: _ClassVar[RejectCode]
REJECT_CODE_UNSPECIFIED: RejectCode
REJECT_CODE_UNKNOWN_AGENT: RejectCode
REJECT_CODE_UNIT_NOT_PERMITTED: RejectCode
REJECT_CODE_MALFORMED: RejectCode
REJECT_CODE_OUT_OF_ORDER: RejectCode
REJECT_CODE_TOO_LARGE: RejectCode
REJECT_CODE_PROTOCOL: RejectCode

class AgentFrame(_message.Message):
    __slots__ = ("hello", "batch", "heartbeat", "config_report", "update_report")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REPORT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_REPORT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: RecordBatch
    heartbeat: Heartbeat
    config_report: ConfigReport
    update_report: UpdateReport
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[RecordBatch, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., config_report: _Optional[_Union[ConfigReport, _Mapping]] = ..., update_report: _Optional[_Union[UpdateReport, _Mapping]] = ...) -> None: ...

class FleetFrame(_message.Message):
    __slots__ = ("welcome", "ack", "reject", "evidence_request", "desired_config", "release_offer")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DESIRED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    RELEASE_OFFER_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: Ack
    reject: Reject
    evidence_request: EvidenceRequest
    desired_config: DesiredConfig
    release_offer: ReleaseOffer
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., evidence_request: _Optional[_Union[EvidenceRequest, _Mapping]] = ..., desired_config: _Optional[_Union[DesiredConfig, _Mapping]] = ..., release_offer: _Optional[_Union[ReleaseOffer, _Mapping]] = ...) -> None: ...

class ReleaseOffer(_message.Message):
    __slots__ = ("release_id", "version", "manifest", "signature")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    version: str
    manifest: bytes
    signature: bytes
    def __init__(self, release_id: _Optional[str] = ..., version: _Optional[str] = ..., manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DesiredConfig(_message.Message):
    __slots__ = ("document_id", "version", "toml", "sha256")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOML_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    version: int
    toml: str
    sha256: str
    def __init__(self, document_id: _Optional[str] = ..., version: _Optional[int] = ..., toml: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ConfigReport(_message.Message):
    __slots__ = ("document_id", "version", "applied", "problems", "units_changed")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    UNITS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    version: int
    applied: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    units_changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, document_id: _Optional[str] = ..., version: _Optional[int] = ..., applied: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., units_changed: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateReport(_message.Message):
    __slots__ = ("release_id", "state", "detail")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    state: str
    detail: str
    def __init__(self, release_id: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class FetchReleaseRequest(_message.Message):
    __slots__ = ("release_id", "file")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    file: str
    def __init__(self, release_id: _Optional[str] = ..., file: _Optional[str] = ...) -> None: ...

class ReleaseChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EvidenceRequest(_message.Message):
    __slots__ = ("request_id", "unit_id", "seconds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    unit_id: str
    seconds: int
    def __init__(self, request_id: _Optional[str] = ..., unit_id: _Optional[str] = ..., seconds: _Optional[int] = ...) -> None: ...

class UnitDescriptor(_message.Message):
    __slots__ = ("unit_id", "controller", "detectable", "undetectable")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    DETECTABLE_FIELD_NUMBER: _ClassVar[int]
    UNDETECTABLE_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    controller: _records_pb2.ControllerInfo
    detectable: _containers.RepeatedScalarFieldContainer[_records_pb2.EventType]
    undetectable: _containers.RepeatedScalarFieldContainer[_records_pb2.EventType]
    def __init__(self, unit_id: _Optional[str] = ..., controller: _Optional[_Union[_records_pb2.ControllerInfo, _Mapping]] = ..., detectable: _Optional[_Iterable[_Union[_records_pb2.EventType, str]]] = ..., undetectable: _Optional[_Iterable[_Union[_records_pb2.EventType, str]]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "agent_version", "units", "records_evidence", "config_version", "accepts_config")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_CONFIG_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_version: str
    units: _containers.RepeatedCompositeFieldContainer[UnitDescriptor]
    records_evidence: bool
    config_version: int
    accepts_config: bool
    def __init__(self, agent_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., units: _Optional[_Iterable[_Union[UnitDescriptor, _Mapping]]] = ..., records_evidence: _Optional[bool] = ..., config_version: _Optional[int] = ..., accepts_config: _Optional[bool] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("committed_seq", "max_batch_records", "max_batch_bytes", "heartbeat_interval_s", "accepts_evidence", "accepts_update_reports")
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_UPDATE_REPORTS_FIELD_NUMBER: _ClassVar[int]
    committed_seq: int
    max_batch_records: int
    max_batch_bytes: int
    heartbeat_interval_s: int
    accepts_evidence: bool
    accepts_update_reports: bool
    def __init__(self, committed_seq: _Optional[int] = ..., max_batch_records: _Optional[int] = ..., max_batch_bytes: _Optional[int] = ..., heartbeat_interval_s: _Optional[int] = ..., accepts_evidence: _Optional[bool] = ..., accepts_update_reports: _Optional[bool] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2.Record]
    def __init__(self, records: _Optional[_Iterable[_Union[_records_pb2.Record, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time", "outbox_depth")
    TIME_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    outbox_depth: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outbox_depth: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("up_to_seq",)
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    up_to_seq: int
    def __init__(self, up_to_seq: _Optional[int] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: RejectCode
    reason: str
    def __init__(self, code: _Optional[_Union[RejectCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...
