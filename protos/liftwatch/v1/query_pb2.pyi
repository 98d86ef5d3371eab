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

class UnitStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNIT_STATUS_UNSPECIFIED: _ClassVar[UnitStatus]
    UNIT_STATUS_ONLINE: _ClassVar[UnitStatus]
    UNIT_STATUS_STALE: _ClassVar[UnitStatus]
    UNIT_STATUS_OFFLINE: _ClassVar[UnitStatus]
    UNIT_STATUS_BLIND: _ClassVar[UnitStatus]
    UNIT_STATUS_NEVER_SEEN: _ClassVar[UnitStatus]
UNIT_STATUS_UNSPECIFIED: UnitStatus
UNIT_STATUS_ONLINE: UnitStatus
UNIT_STATUS_STALE: UnitStatus
UNIT_STATUS_OFFLINE: UnitStatus
UNIT_STATUS_BLIND: UnitStatus
UNIT_STATUS_NEVER_SEEN: UnitStatus

class Unit(_message.Message):
    __slots__ = ("unit_id", "status", "registered", "agent_id", "agent_version", "controller", "last_seen", "building", "street", "contractor")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    STREET_FIELD_NUMBER: _ClassVar[int]
    CONTRACTOR_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    status: UnitStatus
    registered: bool
    agent_id: str
    agent_version: str
    controller: _records_pb2.ControllerInfo
    last_seen: _timestamp_pb2.Timestamp
    building: str
    street: str
    contractor: str
    def __init__(self, unit_id: _Optional[str] = ..., status: _Optional[_Union[UnitStatus, str]] = ..., registered: _Optional[bool] = ..., agent_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., controller: _Optional[_Union[_records_pb2.ControllerInfo, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., building: _Optional[str] = ..., street: _Optional[str] = ..., contractor: _Optional[str] = ...) -> None: ...

class ListUnitsRequest(_message.Message):
    __slots__ = ("street", "building", "contractor", "status", "firmware", "model", "page_size", "page_token", "monitored")
    STREET_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    CONTRACTOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MONITORED_FIELD_NUMBER: _ClassVar[int]
    street: str
    building: str
    contractor: str
    status: UnitStatus
    firmware: str
    model: str
    page_size: int
    page_token: str
    monitored: bool
    def __init__(self, street: _Optional[str] = ..., building: _Optional[str] = ..., contractor: _Optional[str] = ..., status: _Optional[_Union[UnitStatus, str]] = ..., firmware: _Optional[str] = ..., model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., monitored: _Optional[bool] = ...) -> None: ...

class ListUnitsResponse(_message.Message):
    __slots__ = ("units", "next_page_token", "total")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    units: _containers.RepeatedCompositeFieldContainer[Unit]
    next_page_token: str
    total: int
    def __init__(self, units: _Optional[_Iterable[_Union[Unit, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class GetUnitRequest(_message.Message):
    __slots__ = ("unit_id",)
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    def __init__(self, unit_id: _Optional[str] = ...) -> None: ...

class CoverageRequest(_message.Message):
    __slots__ = ("by",)
    BY_FIELD_NUMBER: _ClassVar[int]
    by: str
    def __init__(self, by: _Optional[str] = ...) -> None: ...

class CoverageGroup(_message.Message):
    __slots__ = ("name", "registered", "monitored", "online", "stale", "offline", "blind", "never_seen", "unregistered_reporting")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    MONITORED_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    BLIND_FIELD_NUMBER: _ClassVar[int]
    NEVER_SEEN_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_REPORTING_FIELD_NUMBER: _ClassVar[int]
    name: str
    registered: int
    monitored: int
    online: int
    stale: int
    offline: int
    blind: int
    never_seen: int
    unregistered_reporting: int
    def __init__(self, name: _Optional[str] = ..., registered: _Optional[int] = ..., monitored: _Optional[int] = ..., online: _Optional[int] = ..., stale: _Optional[int] = ..., offline: _Optional[int] = ..., blind: _Optional[int] = ..., never_seen: _Optional[int] = ..., unregistered_reporting: _Optional[int] = ...) -> None: ...

class CoverageResponse(_message.Message):
    __slots__ = ("registered", "monitored", "online", "stale", "offline", "blind", "never_seen", "unregistered_reporting", "groups")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    MONITORED_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    BLIND_FIELD_NUMBER: _ClassVar[int]
    NEVER_SEEN_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_REPORTING_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    registered: int
    monitored: int
    online: int
    stale: int
    offline: int
    blind: int
    never_seen: int
    unregistered_reporting: int
    groups: _containers.RepeatedCompositeFieldContainer[CoverageGroup]
    def __init__(self, registered: _Optional[int] = ..., monitored: _Optional[int] = ..., online: _Optional[int] = ..., stale: _Optional[int] = ..., offline: _Optional[int] = ..., blind: _Optional[int] = ..., never_seen: _Optional[int] = ..., unregistered_reporting: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[CoverageGroup, _Mapping]]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("unit_id", "type", "limit")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    type: _records_pb2.EventType
    limit: int
    def __init__(self, unit_id: _Optional[str] = ..., type: _Optional[_Union[_records_pb2.EventType, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class StoredEvent(_message.Message):
    __slots__ = ("agent_id", "seq", "unit_id", "time", "event", "committed", "event_class", "platform_codes")
    class PlatformCodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    EVENT_CLASS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_CODES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    unit_id: str
    time: _timestamp_pb2.Timestamp
    event: _records_pb2.Event
    committed: _timestamp_pb2.Timestamp
    event_class: str
    platform_codes: _containers.ScalarMap[str, int]
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., unit_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[_records_pb2.Event, _Mapping]] = ..., committed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_class: _Optional[str] = ..., platform_codes: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StoredEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[StoredEvent, _Mapping]]] = ...) -> None: ...

class FirmwareInventoryRequest(_message.Message):
    __slots__ = ("model", "history_unit_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HISTORY_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    history_unit_id: str
    def __init__(self, model: _Optional[str] = ..., history_unit_id: _Optional[str] = ...) -> None: ...

class VersionCount(_message.Message):
    __slots__ = ("model", "version", "units")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    units: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., units: _Optional[int] = ...) -> None: ...

class FirmwareViolation(_message.Message):
    __slots__ = ("unit_id", "model", "firmware", "rule", "reason")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    model: str
    firmware: str
    rule: str
    reason: str
    def __init__(self, unit_id: _Optional[str] = ..., model: _Optional[str] = ..., firmware: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FirmwareChange(_message.Message):
    __slots__ = ("unit_id", "at", "agent_id", "model", "old_firmware", "new_firmware", "old_agent_version", "new_agent_version")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OLD_FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    NEW_FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    OLD_AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEW_AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    at: _timestamp_pb2.Timestamp
    agent_id: str
    model: str
    old_firmware: str
    new_firmware: str
    old_agent_version: str
    new_agent_version: str
    def __init__(self, unit_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_id: _Optional[str] = ..., model: _Optional[str] = ..., old_firmware: _Optional[str] = ..., new_firmware: _Optional[str] = ..., old_agent_version: _Optional[str] = ..., new_agent_version: _Optional[str] = ...) -> None: ...

class FirmwareInventoryResponse(_message.Message):
    __slots__ = ("firmware", "agent_versions", "violations", "history")
    FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    firmware: _containers.RepeatedCompositeFieldContainer[VersionCount]
    agent_versions: _containers.RepeatedCompositeFieldContainer[VersionCount]
    violations: _containers.RepeatedCompositeFieldContainer[FirmwareViolation]
    history: _containers.RepeatedCompositeFieldContainer[FirmwareChange]
    def __init__(self, firmware: _Optional[_Iterable[_Union[VersionCount, _Mapping]]] = ..., agent_versions: _Optional[_Iterable[_Union[VersionCount, _Mapping]]] = ..., violations: _Optional[_Iterable[_Union[FirmwareViolation, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[FirmwareChange, _Mapping]]] = ...) -> None: ...

class GetEvidenceRequest(_message.Message):
    __slots__ = ("event_id", "request_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StoredEvidence(_message.Message):
    __slots__ = ("agent_id", "seq", "unit_id", "evidence", "sha256", "committed", "event_type")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    unit_id: str
    evidence: _records_pb2.Evidence
    sha256: str
    committed: _timestamp_pb2.Timestamp
    event_type: _records_pb2.EventType
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., unit_id: _Optional[str] = ..., evidence: _Optional[_Union[_records_pb2.Evidence, _Mapping]] = ..., sha256: _Optional[str] = ..., committed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[_Union[_records_pb2.EventType, str]] = ...) -> None: ...
