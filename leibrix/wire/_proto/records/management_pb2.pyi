import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from leibrix.wire._proto.records import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdmissionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_DEFAULT: _ClassVar[AdmissionPolicy]
    REJECT: _ClassVar[AdmissionPolicy]
    QUEUE: _ClassVar[AdmissionPolicy]
    EVICT_LOWER_BENEFIT: _ClassVar[AdmissionPolicy]

class EpochState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EPOCH_STATE_UNKNOWN: _ClassVar[EpochState]
    PENDING: _ClassVar[EpochState]
    LOADING: _ClassVar[EpochState]
    VALIDATING: _ClassVar[EpochState]
    READY: _ClassVar[EpochState]
    RETIRING: _ClassVar[EpochState]
    RETIRED: _ClassVar[EpochState]
    FAILED: _ClassVar[EpochState]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNKNOWN: _ClassVar[WorkerState]
    ACTIVE: _ClassVar[WorkerState]
    SUSPECT: _ClassVar[WorkerState]
    DEAD: _ClassVar[WorkerState]
    DRAINING: _ClassVar[WorkerState]
    DRAINED: _ClassVar[WorkerState]
POLICY_DEFAULT: AdmissionPolicy
REJECT: AdmissionPolicy
QUEUE: AdmissionPolicy
EVICT_LOWER_BENEFIT: AdmissionPolicy
EPOCH_STATE_UNKNOWN: EpochState
PENDING: EpochState
LOADING: EpochState
VALIDATING: EpochState
READY: EpochState
RETIRING: EpochState
RETIRED: EpochState
FAILED: EpochState
WORKER_STATE_UNKNOWN: WorkerState
ACTIVE: WorkerState
SUSPECT: WorkerState
DEAD: WorkerState
DRAINING: WorkerState
DRAINED: WorkerState

class AdmitDatasetRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "source", "epoch_granularity", "request_id", "replication_factor", "strategy", "retention_epochs", "hints", "refresh_interval")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    RETENTION_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    source: _common_pb2.DataSource
    epoch_granularity: _common_pb2.EpochGranularity
    request_id: str
    replication_factor: int
    strategy: _common_pb2.PlacementStrategy
    retention_epochs: int
    hints: EstimateHints
    refresh_interval: _duration_pb2.Duration
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., source: _Optional[_Union[_common_pb2.DataSource, _Mapping]] = ..., epoch_granularity: _Optional[_Union[_common_pb2.EpochGranularity, _Mapping]] = ..., request_id: _Optional[str] = ..., replication_factor: _Optional[int] = ..., strategy: _Optional[_Union[_common_pb2.PlacementStrategy, str]] = ..., retention_epochs: _Optional[int] = ..., hints: _Optional[_Union[EstimateHints, _Mapping]] = ..., refresh_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EstimateHints(_message.Message):
    __slots__ = ("bytes_per_epoch", "rows_per_epoch", "cpu_cores_per_epoch", "scan_cost")
    BYTES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SCAN_COST_FIELD_NUMBER: _ClassVar[int]
    bytes_per_epoch: int
    rows_per_epoch: int
    cpu_cores_per_epoch: float
    scan_cost: float
    def __init__(self, bytes_per_epoch: _Optional[int] = ..., rows_per_epoch: _Optional[int] = ..., cpu_cores_per_epoch: _Optional[float] = ..., scan_cost: _Optional[float] = ...) -> None: ...

class AdmitDatasetResponse(_message.Message):
    __slots__ = ("status", "epochs", "message", "request_id", "refresh", "pending_epochs")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[AdmitDatasetResponse.Status]
        ACCEPTED: _ClassVar[AdmitDatasetResponse.Status]
        REJECTED: _ClassVar[AdmitDatasetResponse.Status]
    UNKNOWN: AdmitDatasetResponse.Status
    ACCEPTED: AdmitDatasetResponse.Status
    REJECTED: AdmitDatasetResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    PENDING_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    status: AdmitDatasetResponse.Status
    epochs: _common_pb2.EpochInfoList
    message: str
    request_id: str
    refresh: bool
    pending_epochs: int
    def __init__(self, status: _Optional[_Union[AdmitDatasetResponse.Status, str]] = ..., epochs: _Optional[_Union[_common_pb2.EpochInfoList, _Mapping]] = ..., message: _Optional[str] = ..., request_id: _Optional[str] = ..., refresh: _Optional[bool] = ..., pending_epochs: _Optional[int] = ...) -> None: ...

class TenantQuota(_message.Message):
    __slots__ = ("tenant_id", "max_datasets", "max_epochs", "max_storage_mb", "max_memory_bytes", "max_cpu_cores", "admission_policy", "worker_pool", "priority", "default_strategy", "default_replication", "guaranteed_memory_bytes")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_DATASETS_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORAGE_MB_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    WORKER_POOL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    GUARANTEED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    max_datasets: int
    max_epochs: int
    max_storage_mb: int
    max_memory_bytes: int
    max_cpu_cores: float
    admission_policy: AdmissionPolicy
    worker_pool: str
    priority: int
    default_strategy: _common_pb2.PlacementStrategy
    default_replication: int
    guaranteed_memory_bytes: int
    def __init__(self, tenant_id: _Optional[str] = ..., max_datasets: _Optional[int] = ..., max_epochs: _Optional[int] = ..., max_storage_mb: _Optional[int] = ..., max_memory_bytes: _Optional[int] = ..., max_cpu_cores: _Optional[float] = ..., admission_policy: _Optional[_Union[AdmissionPolicy, str]] = ..., worker_pool: _Optional[str] = ..., priority: _Optional[int] = ..., default_strategy: _Optional[_Union[_common_pb2.PlacementStrategy, str]] = ..., default_replication: _Optional[int] = ..., guaranteed_memory_bytes: _Optional[int] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("datasets", "epochs", "memory_bytes", "cpu_cores", "pending_epochs")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    PENDING_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    datasets: int
    epochs: int
    memory_bytes: int
    cpu_cores: float
    pending_epochs: int
    def __init__(self, datasets: _Optional[int] = ..., epochs: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., cpu_cores: _Optional[float] = ..., pending_epochs: _Optional[int] = ...) -> None: ...

class TenantInfo(_message.Message):
    __slots__ = ("quota", "usage")
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    quota: TenantQuota
    usage: TenantUsage
    def __init__(self, quota: _Optional[_Union[TenantQuota, _Mapping]] = ..., usage: _Optional[_Union[TenantUsage, _Mapping]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants", "next_page_token")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantInfo]
    next_page_token: str
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("tenant_id", "force")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    force: bool
    def __init__(self, tenant_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class EpochTransition(_message.Message):
    __slots__ = ("from_state", "to_state", "at", "reason")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_state: EpochState
    to_state: EpochState
    at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, from_state: _Optional[_Union[EpochState, str]] = ..., to_state: _Optional[_Union[EpochState, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("worker_id", "addr", "state", "plan_id")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REPLICA_UNKNOWN: _ClassVar[ReplicaInfo.State]
        ASSIGNED: _ClassVar[ReplicaInfo.State]
        LOADED: _ClassVar[ReplicaInfo.State]
        EVICTING: _ClassVar[ReplicaInfo.State]
    REPLICA_UNKNOWN: ReplicaInfo.State
    ASSIGNED: ReplicaInfo.State
    LOADED: ReplicaInfo.State
    EVICTING: ReplicaInfo.State
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    addr: str
    state: ReplicaInfo.State
    plan_id: str
    def __init__(self, worker_id: _Optional[str] = ..., addr: _Optional[str] = ..., state: _Optional[_Union[ReplicaInfo.State, str]] = ..., plan_id: _Optional[str] = ...) -> None: ...

class EpochStatus(_message.Message):
    __slots__ = ("info", "state", "history", "replicas", "estimate", "scan_cost", "heat", "benefit", "version", "attempts")
    INFO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SCAN_COST_FIELD_NUMBER: _ClassVar[int]
    HEAT_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    info: _common_pb2.EpochInfo
    state: EpochState
    history: _containers.RepeatedCompositeFieldContainer[EpochTransition]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaInfo]
    estimate: _common_pb2.Resources
    scan_cost: float
    heat: float
    benefit: float
    version: str
    attempts: int
    def __init__(self, info: _Optional[_Union[_common_pb2.EpochInfo, _Mapping]] = ..., state: _Optional[_Union[EpochState, str]] = ..., history: _Optional[_Iterable[_Union[EpochTransition, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaInfo, _Mapping]]] = ..., estimate: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., scan_cost: _Optional[float] = ..., heat: _Optional[float] = ..., benefit: _Optional[float] = ..., version: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "source", "replication_factor", "strategy", "retention_epochs", "epochs_by_state", "admitted_at", "admitted")
    class EpochsByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    RETENTION_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    source: _common_pb2.DataSource
    replication_factor: int
    strategy: _common_pb2.PlacementStrategy
    retention_epochs: int
    epochs_by_state: _containers.ScalarMap[str, int]
    admitted_at: _timestamp_pb2.Timestamp
    admitted: AdmitDatasetRequest
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., source: _Optional[_Union[_common_pb2.DataSource, _Mapping]] = ..., replication_factor: _Optional[int] = ..., strategy: _Optional[_Union[_common_pb2.PlacementStrategy, str]] = ..., retention_epochs: _Optional[int] = ..., epochs_by_state: _Optional[_Mapping[str, int]] = ..., admitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., admitted: _Optional[_Union[AdmitDatasetRequest, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ...) -> None: ...

class ListEpochsRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEpochsResponse(_message.Message):
    __slots__ = ("epochs", "next_page_token")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    epochs: _containers.RepeatedCompositeFieldContainer[EpochStatus]
    next_page_token: str
    def __init__(self, epochs: _Optional[_Iterable[_Union[EpochStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetireEpochRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "epoch_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    epoch_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., epoch_id: _Optional[str] = ...) -> None: ...

class DropDatasetRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ...) -> None: ...

class ReportAccessRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "epoch_id", "count", "scanned_bytes")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SCANNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    epoch_id: str
    count: int
    scanned_bytes: int
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., epoch_id: _Optional[str] = ..., count: _Optional[int] = ..., scanned_bytes: _Optional[int] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MasterInfo(_message.Message):
    __slots__ = ("id", "grpc_addr", "http_addr", "is_leader")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDR_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    id: str
    grpc_addr: str
    http_addr: str
    is_leader: bool
    def __init__(self, id: _Optional[str] = ..., grpc_addr: _Optional[str] = ..., http_addr: _Optional[str] = ..., is_leader: _Optional[bool] = ...) -> None: ...

class EtcdMember(_message.Message):
    __slots__ = ("id", "name", "peer_urls", "client_urls", "is_leader")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PEER_URLS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_URLS_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    peer_urls: _containers.RepeatedScalarFieldContainer[str]
    client_urls: _containers.RepeatedScalarFieldContainer[str]
    is_leader: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., peer_urls: _Optional[_Iterable[str]] = ..., client_urls: _Optional[_Iterable[str]] = ..., is_leader: _Optional[bool] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("cluster", "self_id", "leader", "term", "masters", "etcd_members", "healthy", "etcd_version")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SELF_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    MASTERS_FIELD_NUMBER: _ClassVar[int]
    ETCD_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ETCD_VERSION_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    self_id: str
    leader: MasterInfo
    term: int
    masters: _containers.RepeatedCompositeFieldContainer[MasterInfo]
    etcd_members: _containers.RepeatedCompositeFieldContainer[EtcdMember]
    healthy: bool
    etcd_version: str
    def __init__(self, cluster: _Optional[str] = ..., self_id: _Optional[str] = ..., leader: _Optional[_Union[MasterInfo, _Mapping]] = ..., term: _Optional[int] = ..., masters: _Optional[_Iterable[_Union[MasterInfo, _Mapping]]] = ..., etcd_members: _Optional[_Iterable[_Union[EtcdMember, _Mapping]]] = ..., healthy: _Optional[bool] = ..., etcd_version: _Optional[str] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "addr", "labels", "state", "capacity", "reserved", "memory_used_bytes", "loads_in_flight", "replicas", "last_seen", "software_version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOADS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    addr: str
    labels: _containers.ScalarMap[str, str]
    state: WorkerState
    capacity: _common_pb2.Resources
    reserved: _common_pb2.Resources
    memory_used_bytes: int
    loads_in_flight: int
    replicas: int
    last_seen: _timestamp_pb2.Timestamp
    software_version: str
    def __init__(self, worker_id: _Optional[str] = ..., addr: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[WorkerState, str]] = ..., capacity: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., reserved: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., memory_used_bytes: _Optional[int] = ..., loads_in_flight: _Optional[int] = ..., replicas: _Optional[int] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., software_version: _Optional[str] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "next_page_token")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    next_page_token: str
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class UndrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class DrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "deadline_s", "max_parallel", "no_wait")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    deadline_s: float
    max_parallel: int
    no_wait: bool
    def __init__(self, worker_id: _Optional[str] = ..., deadline_s: _Optional[float] = ..., max_parallel: _Optional[int] = ..., no_wait: _Optional[bool] = ...) -> None: ...

class DrainWorkerResponse(_message.Message):
    __slots__ = ("worker_id", "state", "moved_make_before_break", "moved_break_before_make", "remaining", "deadline_exceeded", "message")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MOVED_MAKE_BEFORE_BREAK_FIELD_NUMBER: _ClassVar[int]
    MOVED_BREAK_BEFORE_MAKE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    state: WorkerState
    moved_make_before_break: int
    moved_break_before_make: int
    remaining: int
    deadline_exceeded: bool
    message: str
    def __init__(self, worker_id: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ..., moved_make_before_break: _Optional[int] = ..., moved_break_before_make: _Optional[int] = ..., remaining: _Optional[int] = ..., deadline_exceeded: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ResolveRouteRequest(_message.Message):
    __slots__ = ("tenant_id", "dataset_id", "time_range", "dimension_filter")
    class DimensionFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FILTER_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    dataset_id: str
    time_range: _common_pb2.TimeRange
    dimension_filter: _containers.ScalarMap[str, str]
    def __init__(self, tenant_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., time_range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., dimension_filter: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EpochRoute(_message.Message):
    __slots__ = ("dataset_id", "epoch", "table_name", "worker_ids", "worker_addrs", "token")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_IDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    epoch: _common_pb2.EpochInfo
    table_name: str
    worker_ids: _containers.RepeatedScalarFieldContainer[str]
    worker_addrs: _containers.RepeatedScalarFieldContainer[str]
    token: str
    def __init__(self, dataset_id: _Optional[str] = ..., epoch: _Optional[_Union[_common_pb2.EpochInfo, _Mapping]] = ..., table_name: _Optional[str] = ..., worker_ids: _Optional[_Iterable[str]] = ..., worker_addrs: _Optional[_Iterable[str]] = ..., token: _Optional[str] = ...) -> None: ...

class ResolveRouteResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[EpochRoute]
    def __init__(self, routes: _Optional[_Iterable[_Union[EpochRoute, _Mapping]]] = ...) -> None: ...

class WatchRoutesRequest(_message.Message):
    __slots__ = ("tenant_id", "since_revision")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    since_revision: int
    def __init__(self, tenant_id: _Optional[str] = ..., since_revision: _Optional[int] = ...) -> None: ...

class RouteUpdate(_message.Message):
    __slots__ = ("kind", "route", "revision")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNKNOWN: _ClassVar[RouteUpdate.Kind]
        UPSERT: _ClassVar[RouteUpdate.Kind]
        REMOVE: _ClassVar[RouteUpdate.Kind]
        SNAPSHOT_DONE: _ClassVar[RouteUpdate.Kind]
    KIND_UNKNOWN: RouteUpdate.Kind
    UPSERT: RouteUpdate.Kind
    REMOVE: RouteUpdate.Kind
    SNAPSHOT_DONE: RouteUpdate.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    kind: RouteUpdate.Kind
    route: EpochRoute
    revision: int
    def __init__(self, kind: _Optional[_Union[RouteUpdate.Kind, str]] = ..., route: _Optional[_Union[EpochRoute, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("tenant_id", "expires_at", "description", "admin")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    expires_at: _timestamp_pb2.Timestamp
    description: str
    admin: bool
    def __init__(self, tenant_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., description: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "tenant_id", "admin", "expires_at", "description", "created_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    tenant_id: str
    admin: bool
    expires_at: _timestamp_pb2.Timestamp
    description: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, token_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., admin: _Optional[bool] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("info", "token")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    token: str
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class StoredToken(_message.Message):
    __slots__ = ("info", "sha256")
    INFO_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    sha256: bytes
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ..., sha256: _Optional[bytes] = ...) -> None: ...
