from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Runtime(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_UNSPECIFIED: _ClassVar[Runtime]
    RUNTIME_TORCHSCRIPT: _ClassVar[Runtime]
    RUNTIME_TORCH_EXPORT: _ClassVar[Runtime]
    RUNTIME_ONNXRUNTIME: _ClassVar[Runtime]
    RUNTIME_LITERT: _ClassVar[Runtime]

class PeakMemoryMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEAK_MEMORY_METHOD_UNSPECIFIED: _ClassVar[PeakMemoryMethod]
    PEAK_MEMORY_METHOD_VMHWM_RESET: _ClassVar[PeakMemoryMethod]
    PEAK_MEMORY_METHOD_VMHWM_FRESH_PROCESS: _ClassVar[PeakMemoryMethod]
    PEAK_MEMORY_METHOD_CUDA_MAX_ALLOCATED: _ClassVar[PeakMemoryMethod]
RUNTIME_UNSPECIFIED: Runtime
RUNTIME_TORCHSCRIPT: Runtime
RUNTIME_TORCH_EXPORT: Runtime
RUNTIME_ONNXRUNTIME: Runtime
RUNTIME_LITERT: Runtime
PEAK_MEMORY_METHOD_UNSPECIFIED: PeakMemoryMethod
PEAK_MEMORY_METHOD_VMHWM_RESET: PeakMemoryMethod
PEAK_MEMORY_METHOD_VMHWM_FRESH_PROCESS: PeakMemoryMethod
PEAK_MEMORY_METHOD_CUDA_MAX_ALLOCATED: PeakMemoryMethod

class GetDeviceInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RuntimeInfo(_message.Message):
    __slots__ = ("runtime", "name", "version", "devices", "artifact_suffix", "carries_code", "disabled", "note")
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SUFFIX_FIELD_NUMBER: _ClassVar[int]
    CARRIES_CODE_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    runtime: Runtime
    name: str
    version: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    artifact_suffix: str
    carries_code: bool
    disabled: bool
    note: str
    def __init__(self, runtime: _Optional[_Union[Runtime, str]] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., artifact_suffix: _Optional[str] = ..., carries_code: _Optional[bool] = ..., disabled: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("name", "total_memory_bytes", "index", "capability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    total_memory_bytes: int
    index: str
    capability: str
    def __init__(self, name: _Optional[str] = ..., total_memory_bytes: _Optional[int] = ..., index: _Optional[str] = ..., capability: _Optional[str] = ...) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("agent_version", "protocol", "hostname", "os", "os_release", "machine", "cpu_model", "logical_cores", "allowed_cpus", "total_memory_bytes", "available_memory_bytes", "gpus", "runtimes", "python_version", "max_artifact_bytes", "worker_memory_limit_bytes", "auth_required", "tls", "extra", "max_input_bytes", "max_threads", "cache_quota_bytes", "allow_pickle_formats", "isolation", "protocol_version")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    OS_RELEASE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_CORES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_CPUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKER_MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_THREADS_FIELD_NUMBER: _ClassVar[int]
    CACHE_QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PICKLE_FORMATS_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    protocol: str
    hostname: str
    os: str
    os_release: str
    machine: str
    cpu_model: str
    logical_cores: int
    allowed_cpus: _containers.RepeatedScalarFieldContainer[int]
    total_memory_bytes: int
    available_memory_bytes: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    runtimes: _containers.RepeatedCompositeFieldContainer[RuntimeInfo]
    python_version: str
    max_artifact_bytes: int
    worker_memory_limit_bytes: int
    auth_required: bool
    tls: bool
    extra: _containers.ScalarMap[str, str]
    max_input_bytes: int
    max_threads: int
    cache_quota_bytes: int
    allow_pickle_formats: bool
    isolation: str
    protocol_version: int
    def __init__(self, agent_version: _Optional[str] = ..., protocol: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., os_release: _Optional[str] = ..., machine: _Optional[str] = ..., cpu_model: _Optional[str] = ..., logical_cores: _Optional[int] = ..., allowed_cpus: _Optional[_Iterable[int]] = ..., total_memory_bytes: _Optional[int] = ..., available_memory_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., runtimes: _Optional[_Iterable[_Union[RuntimeInfo, _Mapping]]] = ..., python_version: _Optional[str] = ..., max_artifact_bytes: _Optional[int] = ..., worker_memory_limit_bytes: _Optional[int] = ..., auth_required: _Optional[bool] = ..., tls: _Optional[bool] = ..., extra: _Optional[_Mapping[str, str]] = ..., max_input_bytes: _Optional[int] = ..., max_threads: _Optional[int] = ..., cache_quota_bytes: _Optional[int] = ..., allow_pickle_formats: _Optional[bool] = ..., isolation: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class HasArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class HasArtifactResponse(_message.Message):
    __slots__ = ("present", "size_bytes", "partial_bytes")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    present: bool
    size_bytes: int
    partial_bytes: int
    def __init__(self, present: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., partial_bytes: _Optional[int] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("sha256", "total_size_bytes", "offset", "filename", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    total_size_bytes: int
    offset: int
    filename: str
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., total_size_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., filename: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadArtifactResponse(_message.Message):
    __slots__ = ("sha256", "complete", "received_bytes", "size_bytes", "already_present")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    complete: bool
    received_bytes: int
    size_bytes: int
    already_present: bool
    def __init__(self, sha256: _Optional[str] = ..., complete: _Optional[bool] = ..., received_bytes: _Optional[int] = ..., size_bytes: _Optional[int] = ..., already_present: _Optional[bool] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class ProfileRequest(_message.Message):
    __slots__ = ("artifact_sha256", "runtime", "device", "inputs", "threads", "warmup_runs", "repeats", "min_time_s", "cooldown_ms", "deadline_s", "cpu_affinity", "memory_limit_bytes", "max_repeats", "request_id", "seed", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    MIN_TIME_S_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    CPU_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REPEATS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    artifact_sha256: str
    runtime: Runtime
    device: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    threads: int
    warmup_runs: int
    repeats: int
    min_time_s: float
    cooldown_ms: float
    deadline_s: float
    cpu_affinity: _containers.RepeatedScalarFieldContainer[int]
    memory_limit_bytes: int
    max_repeats: int
    request_id: str
    seed: int
    options: _containers.ScalarMap[str, str]
    def __init__(self, artifact_sha256: _Optional[str] = ..., runtime: _Optional[_Union[Runtime, str]] = ..., device: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., threads: _Optional[int] = ..., warmup_runs: _Optional[int] = ..., repeats: _Optional[int] = ..., min_time_s: _Optional[float] = ..., cooldown_ms: _Optional[float] = ..., deadline_s: _Optional[float] = ..., cpu_affinity: _Optional[_Iterable[int]] = ..., memory_limit_bytes: _Optional[int] = ..., max_repeats: _Optional[int] = ..., request_id: _Optional[str] = ..., seed: _Optional[int] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MeasurementContext(_message.Message):
    __slots__ = ("threads", "cpu_affinity", "governor", "cpu_freq_khz", "temperature_c", "runtime_versions", "device", "device_name", "worker_pid", "memory_limit_bytes", "extra", "runqueue_wait_fraction", "involuntary_context_switches")
    class GovernorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CpuFreqKhzEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TemperatureCEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RuntimeVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    THREADS_FIELD_NUMBER: _ClassVar[int]
    CPU_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    GOVERNOR_FIELD_NUMBER: _ClassVar[int]
    CPU_FREQ_KHZ_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    RUNQUEUE_WAIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    INVOLUNTARY_CONTEXT_SWITCHES_FIELD_NUMBER: _ClassVar[int]
    threads: int
    cpu_affinity: _containers.RepeatedScalarFieldContainer[int]
    governor: _containers.ScalarMap[str, str]
    cpu_freq_khz: _containers.ScalarMap[str, int]
    temperature_c: _containers.ScalarMap[str, float]
    runtime_versions: _containers.ScalarMap[str, str]
    device: str
    device_name: str
    worker_pid: int
    memory_limit_bytes: int
    extra: _containers.ScalarMap[str, str]
    runqueue_wait_fraction: float
    involuntary_context_switches: int
    def __init__(self, threads: _Optional[int] = ..., cpu_affinity: _Optional[_Iterable[int]] = ..., governor: _Optional[_Mapping[str, str]] = ..., cpu_freq_khz: _Optional[_Mapping[str, int]] = ..., temperature_c: _Optional[_Mapping[str, float]] = ..., runtime_versions: _Optional[_Mapping[str, str]] = ..., device: _Optional[str] = ..., device_name: _Optional[str] = ..., worker_pid: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., extra: _Optional[_Mapping[str, str]] = ..., runqueue_wait_fraction: _Optional[float] = ..., involuntary_context_switches: _Optional[int] = ...) -> None: ...

class ProfileResult(_message.Message):
    __slots__ = ("request_id", "artifact_sha256", "runtime", "samples_ns", "min_latency_us", "median_latency_us", "mean_latency_us", "p90_latency_us", "p99_latency_us", "std_latency_us", "max_latency_us", "warmup_runs", "peak_bytes", "peak_method", "baseline_rss_bytes", "load_peak_bytes", "process_peak_bytes", "context", "inputs", "load_time_ms", "measure_time_s", "queue_wait_us", "started_unix_ns", "finished_unix_ns", "thread_cpu_samples_ns", "median_thread_cpu_us", "warmup_time_s", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_NS_FIELD_NUMBER: _ClassVar[int]
    MIN_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    P90_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    STD_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_METHOD_FIELD_NUMBER: _ClassVar[int]
    BASELINE_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESS_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEASURE_TIME_S_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    THREAD_CPU_SAMPLES_NS_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_THREAD_CPU_US_FIELD_NUMBER: _ClassVar[int]
    WARMUP_TIME_S_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    artifact_sha256: str
    runtime: Runtime
    samples_ns: _containers.RepeatedScalarFieldContainer[int]
    min_latency_us: float
    median_latency_us: float
    mean_latency_us: float
    p90_latency_us: float
    p99_latency_us: float
    std_latency_us: float
    max_latency_us: float
    warmup_runs: int
    peak_bytes: int
    peak_method: PeakMemoryMethod
    baseline_rss_bytes: int
    load_peak_bytes: int
    process_peak_bytes: int
    context: MeasurementContext
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    load_time_ms: float
    measure_time_s: float
    queue_wait_us: float
    started_unix_ns: int
    finished_unix_ns: int
    thread_cpu_samples_ns: _containers.RepeatedScalarFieldContainer[int]
    median_thread_cpu_us: float
    warmup_time_s: float
    extra: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., artifact_sha256: _Optional[str] = ..., runtime: _Optional[_Union[Runtime, str]] = ..., samples_ns: _Optional[_Iterable[int]] = ..., min_latency_us: _Optional[float] = ..., median_latency_us: _Optional[float] = ..., mean_latency_us: _Optional[float] = ..., p90_latency_us: _Optional[float] = ..., p99_latency_us: _Optional[float] = ..., std_latency_us: _Optional[float] = ..., max_latency_us: _Optional[float] = ..., warmup_runs: _Optional[int] = ..., peak_bytes: _Optional[int] = ..., peak_method: _Optional[_Union[PeakMemoryMethod, str]] = ..., baseline_rss_bytes: _Optional[int] = ..., load_peak_bytes: _Optional[int] = ..., process_peak_bytes: _Optional[int] = ..., context: _Optional[_Union[MeasurementContext, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., load_time_ms: _Optional[float] = ..., measure_time_s: _Optional[float] = ..., queue_wait_us: _Optional[float] = ..., started_unix_ns: _Optional[int] = ..., finished_unix_ns: _Optional[int] = ..., thread_cpu_samples_ns: _Optional[_Iterable[int]] = ..., median_thread_cpu_us: _Optional[float] = ..., warmup_time_s: _Optional[float] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ProfileError(_message.Message):
    __slots__ = ("code", "code_name", "kind", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    code_name: str
    kind: str
    message: str
    def __init__(self, code: _Optional[int] = ..., code_name: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ProfileOutcome(_message.Message):
    __slots__ = ("index", "request_id", "result", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    request_id: str
    result: ProfileResult
    error: ProfileError
    def __init__(self, index: _Optional[int] = ..., request_id: _Optional[str] = ..., result: _Optional[_Union[ProfileResult, _Mapping]] = ..., error: _Optional[_Union[ProfileError, _Mapping]] = ...) -> None: ...

class DeleteArtifactsRequest(_message.Message):
    __slots__ = ("sha256", "all")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    sha256: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, sha256: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class DeleteArtifactsResponse(_message.Message):
    __slots__ = ("deleted", "freed_bytes")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    freed_bytes: int
    def __init__(self, deleted: _Optional[_Iterable[str]] = ..., freed_bytes: _Optional[int] = ...) -> None: ...

class CacheStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStatsResponse(_message.Message):
    __slots__ = ("artifacts", "artifact_bytes", "partials", "partial_bytes", "quota_bytes", "max_artifact_bytes", "evicted", "expired_partials", "partial_expiry_s")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARTIALS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_PARTIALS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_EXPIRY_S_FIELD_NUMBER: _ClassVar[int]
    artifacts: int
    artifact_bytes: int
    partials: int
    partial_bytes: int
    quota_bytes: int
    max_artifact_bytes: int
    evicted: int
    expired_partials: int
    partial_expiry_s: float
    def __init__(self, artifacts: _Optional[int] = ..., artifact_bytes: _Optional[int] = ..., partials: _Optional[int] = ..., partial_bytes: _Optional[int] = ..., quota_bytes: _Optional[int] = ..., max_artifact_bytes: _Optional[int] = ..., evicted: _Optional[int] = ..., expired_partials: _Optional[int] = ..., partial_expiry_s: _Optional[float] = ...) -> None: ...
