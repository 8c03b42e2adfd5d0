"""Host-side client of the on-device profiling agent (protocol ``nnfactory.agent.v1``).

:class:`AgentClient` wraps the gRPC stubs with what a campaign needs:

* an address check (``HOST:PORT``; a missing port is an error, never gRPC's silent 443);
* the token: given, or for an agent on this machine's loopback that runs as this user, the one
  ``nnf-agent serve`` generated in its state directory (read automatically; see :func:`local_token`);
* a deadline on every call (``timeout_s`` per call, a larger one for profiling);
* retries only on status codes that mean "try again", with exponential backoff: UNAVAILABLE (agent
  restarting, network blip) for up to ``retry_window_s`` (30 s: longer than an agent restart and gRPC's
  reconnect delay; ``connect_window_s`` before the first successful call), ABORTED (another upload of the
  same artifact) and RESOURCE_EXHAUSTED when the agent says ``nnf-error-kind: busy`` (``retries`` times).
  Never on INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED, a model's out-of-memory or crash.
  ``profile_many`` resumes a stream broken by a restart with the requests that have no outcome yet;
* resumable, content-addressed chunked upload: ``HasArtifact`` first (nothing is sent when the agent
  has the artifact), resume from the agent's ``partial_bytes`` after an interruption;
* typed results (:class:`ProfileResult`, :class:`DeviceInfo`, ...) instead of protobuf messages.

Errors (all subclasses of :class:`host.errors.AgentError`; ``.code`` is the gRPC status code name and
``.kind`` the agent's ``nnf-error-kind`` when it sent one, see ``agent.protocol.ErrorKind``; messages of
unreachable/auth/TLS failures say what to do next):

==========================  =====================================================================
``AgentUnavailableError``   cannot reach the agent (UNAVAILABLE after the retries)
``AgentAuthError``          missing or wrong token (UNAUTHENTICATED / PERMISSION_DENIED)
``AgentTimeoutError``       the call or the model passed its deadline (DEADLINE_EXCEEDED)
``AgentRequestError``       the request is wrong (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION)
``AgentArtifactError``      artifact too large, or its bytes do not match its hash
``AgentModelError``         the model crashed the worker or ran out of memory (``.kind`` = crash/oom)
``AgentBusyError``          the agent's queue stayed full through the retries
==========================  =====================================================================
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent._proto.nnfactory.agent.v1 import agent_pb2 as pb
from agent._proto.nnfactory.agent.v1 import agent_pb2_grpc as pb_grpc
from agent.protocol import (
    AUTH_METADATA_KEY,
    BEARER_PREFIX,
    ERROR_KIND_KEY,
    ErrorKind,
    is_loopback,
    parse_address,
    status_code_from_value,
)
from agent.runtimes import NAME_TO_RUNTIME, runtime_from_suffix, runtime_name
from host.errors import AgentError, ConfigError
from host.fileio import sha256_file

DEFAULT_CHUNK_BYTES = 1024 * 1024
TLS_ROOT_CERT_ENV = "NNF_AGENT_TLS_ROOT_CERT"
T = TypeVar("T")


class AgentUnavailableError(AgentError):
    """The agent could not be reached (after retries)."""


class AgentAuthError(AgentError):
    """The agent refused the token."""


class AgentTimeoutError(AgentError):
    """A call or a profiled model passed its deadline."""


class AgentRequestError(AgentError):
    """The agent rejected the request as invalid (bad fields, unknown artifact, missing runtime)."""


class AgentArtifactError(AgentError):
    """An artifact was refused: too large, or its bytes did not hash to its name."""


class AgentModelError(AgentError):
    """The model crashed its worker process or ran out of memory (``kind``: 'crash' or 'oom')."""


class AgentBusyError(AgentError):
    """The agent's measurement queue stayed full."""


def _kind(exc: grpc.RpcError) -> str:
    try:
        for key, value in exc.trailing_metadata() or ():
            if key == ERROR_KIND_KEY:
                return str(value)
    except (AttributeError, TypeError):
        pass
    return ""


def _next_step(code: grpc.StatusCode, kind: str, details: str, address: str, tls: bool, has_token: bool) -> str:
    """What the user should do about an unreachable agent, a refused token or a TLS mismatch."""
    host = address.rsplit(":", 1)[0]
    if code == grpc.StatusCode.UNAVAILABLE and kind != ErrorKind.SHUTTING_DOWN:
        low = details.lower()
        if "ssl" in low or "tls" in low or "handshake" in low or "wrong_version" in low or "socket closed" in low:
            return (" If the agent serves TLS, pass its certificate (--tls-root-cert PEM); if it does not, drop "
                    "--tls-root-cert." if not tls else " Check --tls-root-cert matches the agent's certificate.")
        if is_loopback(host):
            return (" Is an agent running there? Start one on this machine with `nnf agent start --local` (it "
                    "prints the address), or for a deployed device open a tunnel: `nnf tunnel NAME`.")
        return (" Is the agent running and reachable? Deploy/start it with `nnf deploy NAME`, or reach a "
                "loopback-only agent through `nnf tunnel NAME`.")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        where = (" The token of an agent started on this machine by `nnf agent start --local`/`nnf-agent serve` is "
                 "in its state directory (~/.local/state/nnf-agent/token; nnf reads it automatically for "
                 "loopback agents of your user); for a deployed device print it with "
                 "`nnf tunnel NAME --print-token`. Pass it with --token-file FILE or $NNF_AGENT_TOKEN.")
        return (" No token was sent." if not has_token else " The token was refused.") + where
    return ""


def _error_from_rpc(exc: grpc.RpcError, what: str, *, address: str = "", tls: bool = False,
                    has_token: bool = True) -> AgentError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    kind = _kind(exc)
    hint = _next_step(code, kind, details or "", address, tls, has_token) if address else ""
    return error_for(code, kind, f"{what}: {code.name}: {details}{hint}")


def error_for(code: grpc.StatusCode, kind: str, message: str) -> AgentError:
    """The :class:`AgentError` subclass for a status code (+ nnf-error-kind)."""
    if code == grpc.StatusCode.UNAVAILABLE:
        cls: type[AgentError] = AgentUnavailableError
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        cls = AgentAuthError
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        cls = AgentTimeoutError
    elif code == grpc.StatusCode.DATA_LOSS or kind == ErrorKind.TOO_LARGE:
        cls = AgentArtifactError
    elif kind in (ErrorKind.OOM, ErrorKind.CRASH) or code == grpc.StatusCode.INTERNAL:
        cls = AgentModelError
    elif kind == ErrorKind.BUSY:
        cls = AgentBusyError
    else:
        cls = AgentRequestError
    err = cls(message)
    err.code = code.name  # type: ignore[attr-defined]
    err.kind = kind  # type: ignore[attr-defined]
    return err


def _retryable(exc: grpc.RpcError) -> bool:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and _kind(exc) == ErrorKind.BUSY


def _listener_uid(port: int) -> int | None:
    """The uid owning the socket listening on loopback ``port`` (Linux /proc/net/tcp*), None when unknown."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 7 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                return int(f[7])
    return None


def local_token(address: str) -> str | None:
    """The token of a local agent at ``address``, found without being told.

    Only for a loopback address whose listening socket belongs to this user (so a token is never sent
    to another user's process) and only when the default token file exists: the one ``nnf-agent serve``
    and ``nnf agent start --local`` generate (``$XDG_STATE_HOME/nnf-agent/token``).
    """
    from agent.config import ConfigProblem, default_token_path, read_token_file

    try:
        host, port = parse_address(address)
    except ValueError:
        return None
    if not is_loopback(host) or _listener_uid(port) != os.getuid():
        return None
    path = default_token_path()
    if not path.is_file():
        return None
    try:
        return read_token_file(path)
    except ConfigProblem:
        return None


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"
    name: str = ""


@dataclass(frozen=True)
class UploadResult:
    sha256: str
    size_bytes: int
    bytes_sent: int  # payload bytes sent by this call (0 when the agent already had it)
    skipped: bool  # the agent already had the artifact
    resumed_from: int  # offset the upload started at (> 0 when a partial upload was resumed)


@dataclass(frozen=True)
class ArtifactStatus:
    present: bool
    size_bytes: int
    partial_bytes: int


@dataclass(frozen=True)
class MeasurementContext:
    threads: int
    cpu_affinity: tuple[int, ...]
    governor: dict[str, str]
    cpu_freq_khz: dict[str, int]
    temperature_c: dict[str, float]
    runtime_versions: dict[str, str]
    device: str
    device_name: str
    worker_pid: int
    memory_limit_bytes: int
    extra: dict[str, str]
    runqueue_wait_fraction: float = 0.0  # share of the timed wall time spent waiting for a CPU (contention)
    involuntary_context_switches: int = 0


@dataclass(frozen=True)
class ProfileResult:
    request_id: str
    artifact_sha256: str
    runtime: str
    samples_ns: tuple[int, ...]
    min_latency_us: float
    median_latency_us: float
    mean_latency_us: float
    p90_latency_us: float
    p99_latency_us: float
    std_latency_us: float
    max_latency_us: float
    warmup_runs: int
    peak_bytes: int
    peak_method: str  # "vmhwm_reset" | "vmhwm_fresh_process" | "cuda_max_allocated"
    baseline_rss_bytes: int
    load_peak_bytes: int
    process_peak_bytes: int
    context: MeasurementContext
    inputs: tuple[TensorSpec, ...]
    load_time_ms: float
    measure_time_s: float
    queue_wait_us: float
    started_unix_ns: int
    finished_unix_ns: int
    thread_cpu_samples_ns: tuple[int, ...] = ()  # CPU time of the measuring thread per run (threads=1 proxy)
    median_thread_cpu_us: float = 0.0
    warmup_time_s: float = 0.0  # the warm-up runs together

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        if not samples:
            d.pop("samples_ns")
            d.pop("thread_cpu_samples_ns")
        d["samples_count"] = len(self.samples_ns)
        return d

    @classmethod
    def from_proto(cls, m: pb.ProfileResult) -> ProfileResult:
        c = m.context
        return cls(
            request_id=m.request_id, artifact_sha256=m.artifact_sha256, runtime=runtime_name(m.runtime),
            samples_ns=tuple(m.samples_ns), min_latency_us=m.min_latency_us, median_latency_us=m.median_latency_us,
            mean_latency_us=m.mean_latency_us, p90_latency_us=m.p90_latency_us, p99_latency_us=m.p99_latency_us,
            std_latency_us=m.std_latency_us, max_latency_us=m.max_latency_us, warmup_runs=m.warmup_runs,
            peak_bytes=m.peak_bytes,
            peak_method=pb.PeakMemoryMethod.Name(m.peak_method).removeprefix("PEAK_MEMORY_METHOD_").lower(),
            baseline_rss_bytes=m.baseline_rss_bytes, load_peak_bytes=m.load_peak_bytes,
            process_peak_bytes=m.process_peak_bytes,
            context=MeasurementContext(
                threads=c.threads, cpu_affinity=tuple(c.cpu_affinity), governor=dict(c.governor),
                cpu_freq_khz=dict(c.cpu_freq_khz), temperature_c=dict(c.temperature_c),
                runtime_versions=dict(c.runtime_versions), device=c.device, device_name=c.device_name,
                worker_pid=c.worker_pid, memory_limit_bytes=c.memory_limit_bytes, extra=dict(c.extra),
                runqueue_wait_fraction=c.runqueue_wait_fraction,
                involuntary_context_switches=c.involuntary_context_switches),
            inputs=tuple(TensorSpec(tuple(i.shape), i.dtype, i.name) for i in m.inputs),
            load_time_ms=m.load_time_ms, measure_time_s=m.measure_time_s, queue_wait_us=m.queue_wait_us,
            started_unix_ns=m.started_unix_ns, finished_unix_ns=m.finished_unix_ns,
            thread_cpu_samples_ns=tuple(m.thread_cpu_samples_ns), median_thread_cpu_us=m.median_thread_cpu_us,
            warmup_time_s=m.warmup_time_s,
        )


@dataclass(frozen=True)
class ProfileOutcome:
    """One item of :meth:`AgentClient.profile_many`: a result or the error of that one request."""

    index: int
    request_id: str
    result: ProfileResult | None
    error: AgentError | None


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str
    devices: tuple[str, ...]
    artifact_suffix: str
    carries_code: bool
    disabled: bool = False  # installed, but refused by the agent's settings (pickle-bearing .pt2)
    note: str = ""


@dataclass(frozen=True)
class DeviceInfo:
    agent_version: str
    protocol: str
    hostname: str
    os: str
    os_release: str
    machine: str
    cpu_model: str
    logical_cores: int
    allowed_cpus: tuple[int, ...]
    total_memory_bytes: int
    available_memory_bytes: int
    gpus: tuple[dict[str, Any], ...]
    runtimes: tuple[RuntimeInfo, ...]
    python_version: str
    max_artifact_bytes: int
    worker_memory_limit_bytes: int
    auth_required: bool
    tls: bool
    extra: dict[str, str] = field(default_factory=dict)
    max_input_bytes: int = 0
    max_threads: int = 0
    cache_quota_bytes: int = 0
    allow_pickle_formats: bool = False
    isolation: str = ""
    protocol_version: int = 0


@dataclass(frozen=True)
class CacheStats:
    artifacts: int
    artifact_bytes: int
    partials: int
    partial_bytes: int
    quota_bytes: int
    max_artifact_bytes: int
    evicted: int
    expired_partials: int
    partial_expiry_s: float


@dataclass
class ProfileRequest:
    """What to measure. ``runtime``: 'torchscript' | 'torch_export' | 'onnxruntime' | 'litert' | None (agent sniffs)."""

    artifact_sha256: str
    runtime: str | None = None
    device: str = "cpu"
    inputs: Sequence[TensorSpec | Sequence[int]] = ()  # TensorSpec or a bare shape (float32)
    threads: int = 1
    warmup_runs: int | None = None
    repeats: int | None = None
    min_time_s: float | None = None
    cooldown_ms: float = 0.0
    deadline_s: float = 0.0
    cpu_affinity: Sequence[int] = ()
    memory_limit_bytes: int = 0
    max_repeats: int = 0
    request_id: str = ""
    seed: int = 0
    options: dict[str, str] = field(default_factory=dict)

    def to_proto(self) -> pb.ProfileRequest:
        if self.runtime is None:
            rt = 0
        elif self.runtime in NAME_TO_RUNTIME:
            rt = NAME_TO_RUNTIME[self.runtime]
        else:
            raise ConfigError(f"unknown runtime {self.runtime!r}: use one of {sorted(NAME_TO_RUNTIME)}")
        m = pb.ProfileRequest(
            artifact_sha256=self.artifact_sha256, runtime=rt, device=self.device,
            inputs=[pb.TensorSpec(name=t.name, shape=list(t.shape), dtype=t.dtype)
                    for t in (i if isinstance(i, TensorSpec) else TensorSpec(tuple(int(d) for d in i))
                              for i in self.inputs)],
            threads=self.threads, cooldown_ms=self.cooldown_ms, deadline_s=self.deadline_s,
            cpu_affinity=list(self.cpu_affinity), memory_limit_bytes=self.memory_limit_bytes,
            max_repeats=self.max_repeats, request_id=self.request_id, seed=self.seed, options=self.options,
        )
        if self.warmup_runs is not None:
            m.warmup_runs = self.warmup_runs
        if self.repeats is not None:
            m.repeats = self.repeats
        if self.min_time_s is not None:
            m.min_time_s = self.min_time_s
        return m

    def call_timeout_s(self, default: float) -> float:
        # + room for queueing behind others and a runtime's one-time import on the agent
        return (self.deadline_s + 60.0) if self.deadline_s else default


# ------------------------------------------------------------------------------------------ client
class AgentClient:
    """Talks to one agent at ``address`` (``HOST:PORT``). Use as a context manager or call ``close()``.

    ``token``: the agent's bearer token; None = :func:`local_token` (a loopback agent of this user), else
    none. ``tls_root_cert``: PEM of the agent's certificate (or its CA) for a TLS agent; None = the file
    named by ``$NNF_AGENT_TLS_ROOT_CERT`` if set (so every command that talks to an agent speaks TLS
    with it), else plaintext.
    ``compression='gzip'`` compresses every message sent (artifacts whose weights are constant shrink to a
    few KB); the agent decompresses transparently, and its size caps apply to the decompressed bytes.
    ``retries=0`` turns every retry off.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls_root_cert: bytes | str | Path | None = None,
        timeout_s: float = 30.0,
        profile_timeout_s: float = 900.0,
        retries: int = 4,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        retry_window_s: float = 30.0,
        connect_window_s: float = 5.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        seed: int | None = None,
        compression: str | None = None,
    ) -> None:
        if retries < 0:
            raise ConfigError(f"retries must be >= 0 (got {retries})")
        try:
            parse_address(address)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.address = address
        self.timeout_s = timeout_s
        self.profile_timeout_s = profile_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_window_s = retry_window_s if retries else 0.0
        self.connect_window_s = connect_window_s if retries else 0.0
        self.chunk_bytes = chunk_bytes
        self._rng = random.Random(seed)
        self._connected = False
        if token is None:
            token = local_token(address)
        self.has_token = bool(token)
        self._metadata: tuple[tuple[str, str], ...] = (
            ((AUTH_METADATA_KEY, f"{BEARER_PREFIX}{token}"),) if token else ())
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # reconnect quickly after an agent restart (gRPC's default waits 1 s, then up to 120 s)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        comp = {None: None, "none": None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
        if compression not in comp:
            raise ConfigError(f"compression {compression!r}: use None, 'gzip' or 'deflate'")
        if tls_root_cert is None and os.environ.get(TLS_ROOT_CERT_ENV):
            tls_root_cert = Path(os.environ[TLS_ROOT_CERT_ENV])
        self.tls = tls_root_cert is not None
        if tls_root_cert is not None:
            try:
                root = tls_root_cert if isinstance(tls_root_cert, bytes) else Path(tls_root_cert).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the TLS root certificate {tls_root_cert}: {exc.strerror or exc}") from None
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root), options=options,
                                                compression=comp[compression])
        else:
            self._channel = grpc.insecure_channel(address, options=options, compression=comp[compression])
        self._stub = pb_grpc.ProfilingAgentStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -------------------------------------------------------------------- plumbing
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        time.sleep(delay * (0.5 + self._rng.random() / 2))

    def _error(self, exc: grpc.RpcError, what: str) -> AgentError:
        return _error_from_rpc(exc, f"{what} on agent {self.address}", address=self.address, tls=self.tls,
                               has_token=self.has_token)

    def _may_retry(self, exc: grpc.RpcError, attempt: int, started: float) -> bool:
        """Retry UNAVAILABLE within the time window (a restarting agent), busy/aborted ``retries`` times."""
        if not _retryable(exc) or self.retries == 0:
            return False
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            window = self.retry_window_s if self._connected else self.connect_window_s
            return time.monotonic() - started < window
        return attempt < self.retries

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                out = fn()
                self._connected = True
                return out
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    self._connected = True  # the agent answered
                if self._may_retry(exc, attempt, started):
                    self._sleep_backoff(attempt)
                    attempt += 1
                    continue
                raise self._error(exc, what) from None

    # -------------------------------------------------------------------- calls
    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """The gRPC health status name ('SERVING', ...)."""
        resp = self._call("health check", lambda: self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s or self.timeout_s,
            metadata=self._metadata))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll the health service until SERVING or ``timeout_s`` passes (AgentUnavailableError)."""
        end = time.monotonic() + timeout_s
        last: grpc.RpcError | None = None
        while time.monotonic() < end:
            try:
                resp = self._health.Check(health_pb2.HealthCheckRequest(), timeout=min(2.0, self.timeout_s),
                                          metadata=self._metadata)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    self._connected = True
                    return
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise self._error(exc, "health check") from None
                last = exc
            time.sleep(0.1)
        if last is not None:
            err = self._error(last, "health check")
            raise AgentUnavailableError(f"agent {self.address} not healthy within {timeout_s} s: {err}")
        raise AgentUnavailableError(f"agent {self.address} not healthy within {timeout_s} s")

    def device_info(self) -> DeviceInfo:
        # The first call may wait for the agent's runtime probe (imports every runtime once, ~seconds);
        # it never waits for a running measurement.
        m = self._call("GetDeviceInfo", lambda: self._stub.GetDeviceInfo(
            pb.GetDeviceInfoRequest(), timeout=max(self.timeout_s, 150.0), metadata=self._metadata))
        return DeviceInfo(
            agent_version=m.agent_version, protocol=m.protocol, hostname=m.hostname, os=m.os,
            os_release=m.os_release, machine=m.machine, cpu_model=m.cpu_model, logical_cores=m.logical_cores,
            allowed_cpus=tuple(m.allowed_cpus), total_memory_bytes=m.total_memory_bytes,
            available_memory_bytes=m.available_memory_bytes,
            gpus=tuple({"name": g.name, "total_memory_bytes": g.total_memory_bytes, "index": g.index,
                        "capability": g.capability} for g in m.gpus),
            runtimes=tuple(RuntimeInfo(runtime_name(r.runtime), r.version, tuple(r.devices), r.artifact_suffix,
                                       r.carries_code, r.disabled, r.note) for r in m.runtimes),
            python_version=m.python_version, max_artifact_bytes=m.max_artifact_bytes,
            worker_memory_limit_bytes=m.worker_memory_limit_bytes, auth_required=m.auth_required, tls=m.tls,
            extra=dict(m.extra), max_input_bytes=m.max_input_bytes, max_threads=m.max_threads,
            cache_quota_bytes=m.cache_quota_bytes, allow_pickle_formats=m.allow_pickle_formats,
            isolation=m.isolation, protocol_version=m.protocol_version,
        )

    def cache_stats(self) -> CacheStats:
        m = self._call("CacheStats", lambda: self._stub.CacheStats(
            pb.CacheStatsRequest(), timeout=self.timeout_s, metadata=self._metadata))
        return CacheStats(m.artifacts, m.artifact_bytes, m.partials, m.partial_bytes, m.quota_bytes,
                          m.max_artifact_bytes, m.evicted, m.expired_partials, m.partial_expiry_s)

    def artifact_status(self, sha256: str) -> ArtifactStatus:
        m = self._call("HasArtifact", lambda: self._stub.HasArtifact(
            pb.HasArtifactRequest(sha256=sha256), timeout=self.timeout_s, metadata=self._metadata))
        return ArtifactStatus(m.present, m.size_bytes, m.partial_bytes)

    def has_artifact(self, sha256: str) -> bool:
        return self.artifact_status(sha256).present

    def upload(self, artifact: str | Path | bytes, *, sha256: str | None = None,
               stop_after_bytes: int | None = None) -> UploadResult:
        """Upload ``artifact`` (a path or the bytes) unless the agent has it; resume a partial upload;
        retry broken streams.

        ``stop_after_bytes`` ends the stream early on purpose (the agent keeps the partial bytes): used
        by tests and by callers that want to bound one call's transfer.
        """
        if isinstance(artifact, bytes | bytearray | memoryview):
            blob = bytes(artifact)
            size = len(blob)
            name = "<bytes>"
            sha = sha256 or hashlib.sha256(blob).hexdigest()

            def opener() -> BinaryIO:
                return io.BytesIO(blob)
        else:
            p = Path(artifact)
            if not p.is_file():
                raise ConfigError(f"artifact {str(p)!r} does not exist")
            size = p.stat().st_size
            name = p.name
            sha = sha256 or sha256_file(p)

            def opener() -> BinaryIO:
                return p.open("rb")
        if size == 0:
            raise ConfigError(f"artifact {name!r} is empty")
        attempt = 0
        started = time.monotonic()
        sent_total = 0
        first_offset: int | None = None
        while True:
            status = self.artifact_status(sha)
            if status.present:
                return UploadResult(sha, status.size_bytes, sent_total, skipped=sent_total == 0,
                                    resumed_from=first_offset or 0)
            offset = status.partial_bytes
            if first_offset is None:
                first_offset = offset
            sent_now = [0]

            def chunks(offset: int = offset, sent_now: list[int] = sent_now) -> Iterator[pb.UploadChunk]:
                with opener() as fh:
                    fh.seek(offset)
                    pos = offset
                    first = True
                    while pos < size:
                        n = self.chunk_bytes
                        if stop_after_bytes is not None:
                            n = min(n, max(0, offset + stop_after_bytes - pos))
                            if n == 0:
                                break
                        data = fh.read(n)
                        if not data:
                            break
                        if first:
                            yield pb.UploadChunk(sha256=sha, total_size_bytes=size, offset=offset,
                                                 filename=name, data=data)
                            first = False
                        else:
                            yield pb.UploadChunk(data=data)
                        pos += len(data)
                        sent_now[0] += len(data)
                if first:  # nothing left to send (the agent holds every byte): a header alone lets it verify
                    yield pb.UploadChunk(sha256=sha, total_size_bytes=size, offset=offset, filename=name)

            timeout = self.timeout_s + size / (1024 * 1024)  # at least 1 MiB/s on top of the base deadline
            try:
                resp = self._stub.UploadArtifact(chunks(), timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                sent_total += sent_now[0]
                offset_moved = exc.code() == grpc.StatusCode.FAILED_PRECONDITION and _kind(exc) == ErrorKind.OFFSET
                if self._may_retry(exc, attempt, started) or (offset_moved and attempt < self.retries):
                    self._sleep_backoff(attempt)  # then re-ask where to resume
                    attempt += 1
                    continue
                raise self._error(exc, f"upload of {name}") from None
            sent_total += sent_now[0]
            if resp.complete or stop_after_bytes is not None:
                return UploadResult(sha, resp.size_bytes or resp.received_bytes, sent_total,
                                    skipped=resp.already_present and sent_total == 0, resumed_from=first_offset)
            if attempt >= self.retries:
                raise AgentArtifactError(f"upload of {name} to agent {self.address} incomplete after "
                                         f"{attempt + 1} attempts ({resp.received_bytes}/{size} bytes)")
            attempt += 1

    def delete_artifacts(self, sha256s: Iterable[str] = (), *, everything: bool = False) -> list[str]:
        m = self._call("DeleteArtifacts", lambda: self._stub.DeleteArtifacts(
            pb.DeleteArtifactsRequest(sha256=list(sha256s), all=everything), timeout=self.timeout_s,
            metadata=self._metadata))
        return list(m.deleted)

    def profile(self, request: ProfileRequest | str, **kw: Any) -> ProfileResult:
        """Profile one artifact: pass a :class:`ProfileRequest`, or the artifact's sha256 and its fields
        as keywords, e.g. ``profile(sha, runtime="onnxruntime", inputs=[(1, 3, 224, 224)], repeats=30)``."""
        if isinstance(request, str):
            request = ProfileRequest(request, **kw)
        elif kw:
            raise ConfigError("pass either a ProfileRequest or a sha256 with keyword fields, not both")
        msg = request.to_proto()
        m = self._call("Profile", lambda: self._stub.Profile(
            msg, timeout=request.call_timeout_s(self.profile_timeout_s), metadata=self._metadata))
        return ProfileResult.from_proto(m)

    def profile_many(self, requests: Sequence[ProfileRequest]) -> Iterator[ProfileOutcome]:
        """Profile many artifacts over one stream; yields one outcome per request, in order.

        The whole stream's deadline is the sum of the per-request deadlines (or profile_timeout_s each).
        A request's own failure is an outcome with ``error`` set. A stream broken by an unreachable agent
        (e.g. restarting) is resumed with the requests that have no outcome yet, within the retry window;
        otherwise a broken stream raises AgentError.
        """
        msgs = [r.to_proto() for r in requests]
        done = 0
        attempt = 0
        started = time.monotonic()
        while done < len(msgs):
            rest = msgs[done:]
            timeout = sum(r.call_timeout_s(self.profile_timeout_s) for r in requests[done:]) or self.profile_timeout_s
            try:
                for o in self._stub.ProfileStream(iter(rest), timeout=timeout, metadata=self._metadata):
                    self._connected = True
                    index = done
                    done += 1
                    if o.HasField("result"):
                        yield ProfileOutcome(index, o.request_id, ProfileResult.from_proto(o.result), None)
                    else:
                        e = o.error
                        yield ProfileOutcome(index, o.request_id, None, error_for(
                            status_code_from_value(e.code), e.kind, f"request {index}: {e.message}"))
                return
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and self._may_retry(exc, attempt, started):
                    self._sleep_backoff(attempt)
                    attempt += 1
                    continue
                raise self._error(exc, "ProfileStream") from None

    def upload_and_profile(self, path: str | Path, request: ProfileRequest | None = None, **kw: Any
                           ) -> ProfileResult:
        """Upload ``path`` (if needed) and profile it; the runtime defaults to the one its suffix implies."""
        up = self.upload(path)
        if request is None:
            rt = runtime_from_suffix(path)
            request = ProfileRequest(artifact_sha256=up.sha256, runtime=runtime_name(rt) if rt else None, **kw)
        else:
            request.artifact_sha256 = up.sha256
        return self.profile(request)
