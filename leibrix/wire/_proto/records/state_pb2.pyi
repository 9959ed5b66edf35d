import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from leibrix.wire._proto.records import common_pb2 as _common_pb2
from leibrix.wire._proto.records import control_plane_pb2 as _control_plane_pb2
from leibrix.wire._proto.records import management_pb2 as _management_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MasterRecord(_message.Message):
    __slots__ = ("id", "grpc_addr", "http_addr", "started_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDR_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    grpc_addr: str
    http_addr: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., grpc_addr: _Optional[str] = ..., http_addr: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TenantRecord(_message.Message):
    __slots__ = ("quota", "updated_at")
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    quota: _management_pb2.TenantQuota
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, quota: _Optional[_Union[_management_pb2.TenantQuota, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DatasetRecord(_message.Message):
    __slots__ = ("request", "replication_factor", "strategy", "admitted_at", "version", "arrow_schema", "schema_fingerprint", "admission", "retained_schemas")
    class RetainedSchemasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARROW_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    RETAINED_SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    request: _management_pb2.AdmitDatasetRequest
    replication_factor: int
    strategy: _common_pb2.PlacementStrategy
    admitted_at: _timestamp_pb2.Timestamp
    version: str
    arrow_schema: bytes
    schema_fingerprint: str
    admission: int
    retained_schemas: _containers.ScalarMap[str, bytes]
    def __init__(self, request: _Optional[_Union[_management_pb2.AdmitDatasetRequest, _Mapping]] = ..., replication_factor: _Optional[int] = ..., strategy: _Optional[_Union[_common_pb2.PlacementStrategy, str]] = ..., admitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., arrow_schema: _Optional[bytes] = ..., schema_fingerprint: _Optional[str] = ..., admission: _Optional[int] = ..., retained_schemas: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class EpochRecord(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "info", "state", "history", "replicas", "estimate", "scan_cost", "expected_rows", "version", "attempts", "replaces_epoch_id", "plan_id", "admission", "read_plan", "rows_exact", "source_bytes", "planned_memory_bytes", "schema_fingerprint")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SCAN_COST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ROWS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REPLACES_EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    READ_PLAN_FIELD_NUMBER: _ClassVar[int]
    ROWS_EXACT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLANNED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    info: _common_pb2.EpochInfo
    state: _management_pb2.EpochState
    history: _containers.RepeatedCompositeFieldContainer[_management_pb2.EpochTransition]
    replicas: _containers.RepeatedCompositeFieldContainer[_management_pb2.ReplicaInfo]
    estimate: _common_pb2.Resources
    scan_cost: float
    expected_rows: int
    version: str
    attempts: int
    replaces_epoch_id: str
    plan_id: str
    admission: int
    read_plan: bytes
    rows_exact: bool
    source_bytes: int
    planned_memory_bytes: int
    schema_fingerprint: str
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., info: _Optional[_Union[_common_pb2.EpochInfo, _Mapping]] = ..., state: _Optional[_Union[_management_pb2.EpochState, str]] = ..., history: _Optional[_Iterable[_Union[_management_pb2.EpochTransition, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[_management_pb2.ReplicaInfo, _Mapping]]] = ..., estimate: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., scan_cost: _Optional[float] = ..., expected_rows: _Optional[int] = ..., version: _Optional[str] = ..., attempts: _Optional[int] = ..., replaces_epoch_id: _Optional[str] = ..., plan_id: _Optional[str] = ..., admission: _Optional[int] = ..., read_plan: _Optional[bytes] = ..., rows_exact: _Optional[bool] = ..., source_bytes: _Optional[int] = ..., planned_memory_bytes: _Optional[int] = ..., schema_fingerprint: _Optional[str] = ...) -> None: ...

class WorkerRecord(_message.Message):
    __slots__ = ("worker", "capacity", "state", "registered_at", "software_version")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker: _control_plane_pb2.Worker
    capacity: _common_pb2.Resources
    state: _management_pb2.WorkerState
    registered_at: _timestamp_pb2.Timestamp
    software_version: str
    def __init__(self, worker: _Optional[_Union[_control_plane_pb2.Worker, _Mapping]] = ..., capacity: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., state: _Optional[_Union[_management_pb2.WorkerState, str]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., software_version: _Optional[str] = ...) -> None: ...

class HeatRecord(_message.Message):
    __slots__ = ("value", "scanned", "at")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    value: float
    scanned: float
    at: _timestamp_pb2.Timestamp
    def __init__(self, value: _Optional[float] = ..., scanned: _Optional[float] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("request_id", "fingerprint", "response", "at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    fingerprint: str
    response: _management_pb2.AdmitDatasetResponse
    at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., response: _Optional[_Union[_management_pb2.AdmitDatasetResponse, _Mapping]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
