import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from leibrix.wire._proto.records import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventStreamMessage(_message.Message):
    __slots__ = ("event_id", "tenant_id", "worker_id", "register_event", "heartbeat_event", "data_pull_status_update", "data_assignment", "common_ack")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTER_EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_EVENT_FIELD_NUMBER: _ClassVar[int]
    DATA_PULL_STATUS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    DATA_ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    COMMON_ACK_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    tenant_id: str
    worker_id: str
    register_event: RegisterEvent
    heartbeat_event: HeartbeatEvent
    data_pull_status_update: DataPullStatusUpdateEvent
    data_assignment: DataAssignmentEvent
    common_ack: CommonAckEvent
    def __init__(self, event_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., register_event: _Optional[_Union[RegisterEvent, _Mapping]] = ..., heartbeat_event: _Optional[_Union[HeartbeatEvent, _Mapping]] = ..., data_pull_status_update: _Optional[_Union[DataPullStatusUpdateEvent, _Mapping]] = ..., data_assignment: _Optional[_Union[DataAssignmentEvent, _Mapping]] = ..., common_ack: _Optional[_Union[CommonAckEvent, _Mapping]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("node_id", "addr", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    addr: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., addr: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterEvent(_message.Message):
    __slots__ = ("worker", "capacity", "software_version", "inventory")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    worker: Worker
    capacity: _common_pb2.Resources
    software_version: str
    inventory: _containers.RepeatedCompositeFieldContainer[InventoryEntry]
    def __init__(self, worker: _Optional[_Union[Worker, _Mapping]] = ..., capacity: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., software_version: _Optional[str] = ..., inventory: _Optional[_Iterable[_Union[InventoryEntry, _Mapping]]] = ...) -> None: ...

class InventoryEntry(_message.Message):
    __slots__ = ("dataset_id", "epoch_id", "plan_id", "rows", "bytes", "tenant_id", "schema_fingerprint")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    epoch_id: str
    plan_id: str
    rows: int
    bytes: int
    tenant_id: str
    schema_fingerprint: str
    def __init__(self, dataset_id: _Optional[str] = ..., epoch_id: _Optional[str] = ..., plan_id: _Optional[str] = ..., rows: _Optional[int] = ..., bytes: _Optional[int] = ..., tenant_id: _Optional[str] = ..., schema_fingerprint: _Optional[str] = ...) -> None: ...

class HeartbeatEvent(_message.Message):
    __slots__ = ("memory_used_bytes", "loads_in_flight")
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOADS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    memory_used_bytes: int
    loads_in_flight: int
    def __init__(self, memory_used_bytes: _Optional[int] = ..., loads_in_flight: _Optional[int] = ...) -> None: ...

class DataPullStatusUpdateEvent(_message.Message):
    __slots__ = ("dataset_id", "epoch_id", "status", "error_message", "plan_id", "rows", "bytes", "schema_fingerprint")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[DataPullStatusUpdateEvent.Status]
        IN_PROGRESS: _ClassVar[DataPullStatusUpdateEvent.Status]
        COMPLETED: _ClassVar[DataPullStatusUpdateEvent.Status]
        FAILED: _ClassVar[DataPullStatusUpdateEvent.Status]
    UNKNOWN: DataPullStatusUpdateEvent.Status
    IN_PROGRESS: DataPullStatusUpdateEvent.Status
    COMPLETED: DataPullStatusUpdateEvent.Status
    FAILED: DataPullStatusUpdateEvent.Status
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    epoch_id: str
    status: DataPullStatusUpdateEvent.Status
    error_message: str
    plan_id: str
    rows: int
    bytes: int
    schema_fingerprint: str
    def __init__(self, dataset_id: _Optional[str] = ..., epoch_id: _Optional[str] = ..., status: _Optional[_Union[DataPullStatusUpdateEvent.Status, str]] = ..., error_message: _Optional[str] = ..., plan_id: _Optional[str] = ..., rows: _Optional[int] = ..., bytes: _Optional[int] = ..., schema_fingerprint: _Optional[str] = ...) -> None: ...

class DataAssignmentEvent(_message.Message):
    __slots__ = ("dataset_id", "epoch_id", "load_plan")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_PLAN_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    epoch_id: str
    load_plan: LoadPlan
    def __init__(self, dataset_id: _Optional[str] = ..., epoch_id: _Optional[str] = ..., load_plan: _Optional[_Union[LoadPlan, _Mapping]] = ...) -> None: ...

class LoadPlan(_message.Message):
    __slots__ = ("plan_id", "source", "destination_table_name", "arrow_schema", "resolved_partition", "expected_rows", "expected_bytes", "tenant_id", "read")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_TABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    ARROW_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_PARTITION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ROWS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    source: _common_pb2.DataSource
    destination_table_name: str
    arrow_schema: bytes
    resolved_partition: ResolvedPartition
    expected_rows: int
    expected_bytes: int
    tenant_id: str
    read: ReadPlan
    def __init__(self, plan_id: _Optional[str] = ..., source: _Optional[_Union[_common_pb2.DataSource, _Mapping]] = ..., destination_table_name: _Optional[str] = ..., arrow_schema: _Optional[bytes] = ..., resolved_partition: _Optional[_Union[ResolvedPartition, _Mapping]] = ..., expected_rows: _Optional[int] = ..., expected_bytes: _Optional[int] = ..., tenant_id: _Optional[str] = ..., read: _Optional[_Union[ReadPlan, _Mapping]] = ...) -> None: ...

class ReadPlan(_message.Message):
    __slots__ = ("iceberg", "sql", "rows_exact")
    ICEBERG_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    ROWS_EXACT_FIELD_NUMBER: _ClassVar[int]
    iceberg: IcebergRead
    sql: SqlRead
    rows_exact: bool
    def __init__(self, iceberg: _Optional[_Union[IcebergRead, _Mapping]] = ..., sql: _Optional[_Union[SqlRead, _Mapping]] = ..., rows_exact: _Optional[bool] = ...) -> None: ...

class IcebergRead(_message.Message):
    __slots__ = ("snapshot_id", "files")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: int
    files: _containers.RepeatedCompositeFieldContainer[IcebergDataFile]
    def __init__(self, snapshot_id: _Optional[int] = ..., files: _Optional[_Iterable[_Union[IcebergDataFile, _Mapping]]] = ...) -> None: ...

class IcebergDataFile(_message.Message):
    __slots__ = ("path", "file_format", "record_count", "file_size_in_bytes", "delete_files")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_IN_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELETE_FILES_FIELD_NUMBER: _ClassVar[int]
    path: str
    file_format: str
    record_count: int
    file_size_in_bytes: int
    delete_files: _containers.RepeatedCompositeFieldContainer[IcebergDeleteFile]
    def __init__(self, path: _Optional[str] = ..., file_format: _Optional[str] = ..., record_count: _Optional[int] = ..., file_size_in_bytes: _Optional[int] = ..., delete_files: _Optional[_Iterable[_Union[IcebergDeleteFile, _Mapping]]] = ...) -> None: ...

class IcebergDeleteFile(_message.Message):
    __slots__ = ("path", "kind", "record_count", "file_size_in_bytes", "equality_ids")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_IN_BYTES_FIELD_NUMBER: _ClassVar[int]
    EQUALITY_IDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: str
    record_count: int
    file_size_in_bytes: int
    equality_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[str] = ..., record_count: _Optional[int] = ..., file_size_in_bytes: _Optional[int] = ..., equality_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SqlRead(_message.Message):
    __slots__ = ("query", "params")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    query: str
    params: _containers.RepeatedCompositeFieldContainer[SqlParam]
    def __init__(self, query: _Optional[str] = ..., params: _Optional[_Iterable[_Union[SqlParam, _Mapping]]] = ...) -> None: ...

class SqlParam(_message.Message):
    __slots__ = ("name", "text", "integer", "real", "timestamp", "date", "boolean")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    REAL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_FIELD_NUMBER: _ClassVar[int]
    name: str
    text: str
    integer: int
    real: float
    timestamp: _timestamp_pb2.Timestamp
    date: str
    boolean: bool
    def __init__(self, name: _Optional[str] = ..., text: _Optional[str] = ..., integer: _Optional[int] = ..., real: _Optional[float] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., date: _Optional[str] = ..., boolean: _Optional[bool] = ...) -> None: ...

class ResolvedPartition(_message.Message):
    __slots__ = ("time_range", "time_column_name", "time_partition_value", "dimension_values")
    class DimensionValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    TIME_COLUMN_NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_PARTITION_VALUE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_VALUES_FIELD_NUMBER: _ClassVar[int]
    time_range: _common_pb2.TimeRange
    time_column_name: str
    time_partition_value: str
    dimension_values: _containers.ScalarMap[str, str]
    def __init__(self, time_range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., time_column_name: _Optional[str] = ..., time_partition_value: _Optional[str] = ..., dimension_values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CommonAckEvent(_message.Message):
    __slots__ = ("server_id", "event_type", "payload")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    event_type: str
    payload: _struct_pb2.Struct
    def __init__(self, server_id: _Optional[str] = ..., event_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
