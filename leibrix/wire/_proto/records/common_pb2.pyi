import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResponseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[ResponseStatus]
    SUCCESS: _ClassVar[ResponseStatus]
    ERROR: _ClassVar[ResponseStatus]

class PlacementStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_DEFAULT: _ClassVar[PlacementStrategy]
    ROUND_ROBIN: _ClassVar[PlacementStrategy]
    HASH: _ClassVar[PlacementStrategy]
    CAPACITY: _ClassVar[PlacementStrategy]
UNKNOWN: ResponseStatus
SUCCESS: ResponseStatus
ERROR: ResponseStatus
STRATEGY_DEFAULT: PlacementStrategy
ROUND_ROBIN: PlacementStrategy
HASH: PlacementStrategy
CAPACITY: PlacementStrategy

class Catalog(_message.Message):
    __slots__ = ("iceberg", "starrocks", "jdbc")
    ICEBERG_FIELD_NUMBER: _ClassVar[int]
    STARROCKS_FIELD_NUMBER: _ClassVar[int]
    JDBC_FIELD_NUMBER: _ClassVar[int]
    iceberg: IcebergCatalog
    starrocks: StarRocksCatalog
    jdbc: JdbcCatalog
    def __init__(self, iceberg: _Optional[_Union[IcebergCatalog, _Mapping]] = ..., starrocks: _Optional[_Union[StarRocksCatalog, _Mapping]] = ..., jdbc: _Optional[_Union[JdbcCatalog, _Mapping]] = ...) -> None: ...

class IcebergCatalog(_message.Message):
    __slots__ = ("uri",)
    URI_FIELD_NUMBER: _ClassVar[int]
    uri: str
    def __init__(self, uri: _Optional[str] = ...) -> None: ...

class StarRocksCatalog(_message.Message):
    __slots__ = ("dsn", "internal_catalog_name")
    DSN_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    dsn: str
    internal_catalog_name: str
    def __init__(self, dsn: _Optional[str] = ..., internal_catalog_name: _Optional[str] = ...) -> None: ...

class JdbcCatalog(_message.Message):
    __slots__ = ("uri", "driver")
    URI_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    uri: str
    driver: str
    def __init__(self, uri: _Optional[str] = ..., driver: _Optional[str] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("time_partition", "dimension_partitions")
    TIME_PARTITION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    time_partition: TimePartition
    dimension_partitions: _containers.RepeatedCompositeFieldContainer[DimensionPartition]
    def __init__(self, time_partition: _Optional[_Union[TimePartition, _Mapping]] = ..., dimension_partitions: _Optional[_Iterable[_Union[DimensionPartition, _Mapping]]] = ...) -> None: ...

class TimePartition(_message.Message):
    __slots__ = ("column", "filter")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    column: PartitionColumn
    filter: TimeRangeFilter
    def __init__(self, column: _Optional[_Union[PartitionColumn, _Mapping]] = ..., filter: _Optional[_Union[TimeRangeFilter, _Mapping]] = ...) -> None: ...

class DimensionPartition(_message.Message):
    __slots__ = ("column", "values")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    column: PartitionColumn
    values: PartitionValues
    def __init__(self, column: _Optional[_Union[PartitionColumn, _Mapping]] = ..., values: _Optional[_Union[PartitionValues, _Mapping]] = ...) -> None: ...

class PartitionColumn(_message.Message):
    __slots__ = ("name", "type", "source_granularity")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[PartitionColumn.Type]
        TIMESTAMP: _ClassVar[PartitionColumn.Type]
        DATE: _ClassVar[PartitionColumn.Type]
        STRING: _ClassVar[PartitionColumn.Type]
        INT64: _ClassVar[PartitionColumn.Type]
    UNKNOWN: PartitionColumn.Type
    TIMESTAMP: PartitionColumn.Type
    DATE: PartitionColumn.Type
    STRING: PartitionColumn.Type
    INT64: PartitionColumn.Type
    class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        GRANULARITY_UNSPECIFIED: _ClassVar[PartitionColumn.Granularity]
        GRANULARITY_HOUR: _ClassVar[PartitionColumn.Granularity]
        GRANULARITY_DAY: _ClassVar[PartitionColumn.Granularity]
        GRANULARITY_WEEK: _ClassVar[PartitionColumn.Granularity]
        GRANULARITY_MONTH: _ClassVar[PartitionColumn.Granularity]
    GRANULARITY_UNSPECIFIED: PartitionColumn.Granularity
    GRANULARITY_HOUR: PartitionColumn.Granularity
    GRANULARITY_DAY: PartitionColumn.Granularity
    GRANULARITY_WEEK: PartitionColumn.Granularity
    GRANULARITY_MONTH: PartitionColumn.Granularity
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: PartitionColumn.Type
    source_granularity: PartitionColumn.Granularity
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[PartitionColumn.Type, str]] = ..., source_granularity: _Optional[_Union[PartitionColumn.Granularity, str]] = ...) -> None: ...

class TimeRangeFilter(_message.Message):
    __slots__ = ("start_inclusive", "end_exclusive")
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    END_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    start_inclusive: _timestamp_pb2.Timestamp
    end_exclusive: _timestamp_pb2.Timestamp
    def __init__(self, start_inclusive: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_exclusive: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PartitionValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("catalog", "database", "table", "partition", "version")
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    catalog: Catalog
    database: str
    table: str
    partition: Partition
    version: str
    def __init__(self, catalog: _Optional[_Union[Catalog, _Mapping]] = ..., database: _Optional[str] = ..., table: _Optional[str] = ..., partition: _Optional[_Union[Partition, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start_inclusive", "end_exclusive")
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    END_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    start_inclusive: _timestamp_pb2.Timestamp
    end_exclusive: _timestamp_pb2.Timestamp
    def __init__(self, start_inclusive: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_exclusive: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EpochInfo(_message.Message):
    __slots__ = ("epoch_id", "time_range", "dimension_values")
    class DimensionValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_VALUES_FIELD_NUMBER: _ClassVar[int]
    epoch_id: str
    time_range: TimeRange
    dimension_values: _containers.ScalarMap[str, str]
    def __init__(self, epoch_id: _Optional[str] = ..., time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., dimension_values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EpochInfoList(_message.Message):
    __slots__ = ("epochs",)
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    epochs: _containers.RepeatedCompositeFieldContainer[EpochInfo]
    def __init__(self, epochs: _Optional[_Iterable[_Union[EpochInfo, _Mapping]]] = ...) -> None: ...

class EpochGranularity(_message.Message):
    __slots__ = ("value", "unit")
    class TimeUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        HOUR: _ClassVar[EpochGranularity.TimeUnit]
        DAY: _ClassVar[EpochGranularity.TimeUnit]
        WEEK: _ClassVar[EpochGranularity.TimeUnit]
        MONTH: _ClassVar[EpochGranularity.TimeUnit]
    HOUR: EpochGranularity.TimeUnit
    DAY: EpochGranularity.TimeUnit
    WEEK: EpochGranularity.TimeUnit
    MONTH: EpochGranularity.TimeUnit
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    value: int
    unit: EpochGranularity.TimeUnit
    def __init__(self, value: _Optional[int] = ..., unit: _Optional[_Union[EpochGranularity.TimeUnit, str]] = ...) -> None: ...

class CommonResponse(_message.Message):
    __slots__ = ("status", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: ResponseStatus
    message: str
    def __init__(self, status: _Optional[_Union[ResponseStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("memory_bytes", "cpu_cores")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_cores: float
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_cores: _Optional[float] = ...) -> None: ...
