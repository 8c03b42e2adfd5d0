"""gRPC server of the profiling agent (service ``nnfactory.agent.v1.ProfilingAgent``).

``create_server(addr, ...)`` builds a started server and returns ``(server, port)``; ``agent.cli`` wraps it
as ``nnf-agent serve``. The server process stays light: it imports grpc, protobuf and the standard
library only; runtimes are imported inside measurement workers (``agent.worker``), one fresh process per
profile request.

Device-wide serialisation: a FIFO lock (:class:`FifoLock`) is held from the moment a worker is started
until it has exited, so two models are never timed at once and queued requests run in arrival order.
While the worker measures, the request's server thread is blocked in ``wait`` on the child: the agent
does no work of its own during a measurement (uploads from other clients are the exception; avoid them
during a campaign if that matters).

Security (see the trust model in ``protos/nnfactory/agent/v1/agent.proto``): loopback by default, a
non-loopback bind without a token is refused, a missing TLS pair on a non-loopback address is warned
about, every call is checked against the bearer token by an interceptor, and message and artifact sizes
are capped.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import agent as agent_pkg
from agent import runtimes, sysinfo
from agent._proto.nnfactory.agent.v1 import agent_pb2 as pb
from agent._proto.nnfactory.agent.v1 import agent_pb2_grpc as pb_grpc
from agent.store import ArtifactStore, BadHash, HashMismatch, OffsetMismatch, StoreError, TooLarge, UploadBusy

log = logging.getLogger("nnf.agent")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProfilingAgent"].full_name
PROTOCOL = "nnfactory.agent.v1"
ERROR_KIND_KEY = "nnf-error-kind"
CHUNK_CAP_BYTES = 4 * 1024 * 1024  # largest upload chunk accepted (client default: 1 MiB)

DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 30
DEFAULT_MIN_TIME_S = 1.0
DEFAULT_MAX_REPEATS = 100_000
MAX_INPUTS = 64
MAX_INPUT_ELEMENTS = 1 << 31

_PEAK_METHODS = {
    "vmhwm_reset": pb.PEAK_MEMORY_METHOD_VMHWM_RESET,
    "vmhwm_fresh_process": pb.PEAK_MEMORY_METHOD_VMHWM_FRESH_PROCESS,
    "cuda_max_allocated": pb.PEAK_MEMORY_METHOD_CUDA_MAX_ALLOCATED,
}


def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT (e.g. 127.0.0.1:0)")
    return host, int(port)


@dataclass
class AgentConfig:
    """Settings of one agent server."""

    cache_dir: Path
    token: str | None = None
    max_artifact_bytes: int = 512 * 1024 * 1024
    worker_memory_limit_bytes: int = 0  # RLIMIT_AS of CPU workers unless the request says otherwise; 0 = none
    default_deadline_s: float = 600.0
    max_queue: int = 16
    worker_env: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    device_lock_path: Path | None = None  # shared flock file serialising agents on one device; None = off
    worker_nice: int | None = None  # nice value of measurement workers (negative needs privileges); None = inherit


class ProfileFailure(Exception):
    """A profile request failed: carries the gRPC code, the nnf-error-kind and a message."""

    def __init__(self, code: grpc.StatusCode, kind: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message


class FifoLock:
    """A lock granted in arrival order, with timeouts and a cap on how many may wait."""

    def __init__(self, max_waiting: int) -> None:
        self._mutex = threading.Lock()
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._held = False
        self.max_waiting = max_waiting

    def acquire(self, timeout_s: float) -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            if len(self._waiters) >= self.max_waiting:
                raise ProfileFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy",
                                     f"agent busy: {len(self._waiters)} requests already queued; retry later")
            ev = threading.Event()
            self._waiters.append(ev)
        if ev.wait(max(0.0, timeout_s)):
            return True
        with self._mutex:
            if ev.is_set():  # granted just as we timed out: keep it
                return True
            self._waiters.remove(ev)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # hand over directly; _held stays True
            else:
                self._held = False

    def queued(self) -> int:
        with self._mutex:
            return len(self._waiters)


class DeviceFileLock:
    """An advisory ``flock`` on a file shared by every agent on this device (None path = disabled).

    The in-process FIFO lock orders one agent's requests; this lock keeps two agents started on the same
    device (e.g. a forgotten one, or one per user) from timing models at the same moment. Waiting is a
    blocking ``flock`` in a helper thread (woken by the kernel the moment the other agent releases, so a
    busy agent cannot starve this one, and nothing polls while the other agent measures).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._fd: int | None = None

    def acquire(self, timeout_s: float) -> bool:
        if self.path is None:
            return True
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd = fd
            return True
        except BlockingIOError:
            pass
        got = threading.Event()
        mutex = threading.Lock()
        abandoned = [False]

        def wait_for_lock() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with mutex:
                if abandoned[0]:
                    os.close(fd)  # the requester gave up: drop the lock at once
                    return
                got.set()

        threading.Thread(target=wait_for_lock, name="nnf-device-lock", daemon=True).start()
        if got.wait(max(0.0, timeout_s)):
            self._fd = fd
            return True
        with mutex:
            if got.is_set():
                self._fd = fd
                return True
            abandoned[0] = True
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def default_device_lock_path() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"nnf-agent-device-{os.getuid()}.lock"


class _AuthInterceptor(grpc.ServerInterceptor):
    """Rejects every call whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        got = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                got = value if isinstance(value, str) else value.decode(errors="replace")
        if hmac.compare_digest(got.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        message = ("missing bearer token (metadata 'authorization: Bearer <token>')" if not got
                   else "wrong bearer token")

        def deny(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        def deny_stream(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover - makes this a generator

        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny, **kw)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
        return grpc.unary_unary_rpc_method_handler(deny, **kw)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, kind: str, message: str) -> None:
    context.set_trailing_metadata(((ERROR_KIND_KEY, kind),))
    context.abort(code, message)


def _worker_pythonpath() -> str:
    root = str(Path(agent_pkg.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + existing if existing else "")


class ProfilingAgentServicer(pb_grpc.ProfilingAgentServicer):
    """Implementation of the ProfilingAgent service."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = ArtifactStore(config.cache_dir, config.max_artifact_bytes)
        self.lock = FifoLock(config.max_queue)
        self.device_lock = DeviceFileLock(config.device_lock_path)
        self._probe: dict[str, Any] | None = None
        self._probe_mutex = threading.Lock()

    # ---------------------------------------------------------------- device info
    def _probe_once(self, context: grpc.ServicerContext) -> dict[str, Any]:
        with self._probe_mutex:
            if self._probe is None:
                try:
                    self._probe = self._run_locked({"mode": "probe"}, 120.0, context, time.monotonic())[0]
                except ProfileFailure as exc:
                    log.warning("runtime probe failed: %s", exc.message)
                    return {"gpus": [], "runtimes": {}, "error": exc.message}
            return self._probe

    def GetDeviceInfo(self, request: pb.GetDeviceInfoRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        facts = sysinfo.host_facts()
        probe = self._probe_once(context)
        info = pb.DeviceInfo(
            agent_version=agent_pkg.__version__, protocol=PROTOCOL,
            max_artifact_bytes=self.config.max_artifact_bytes,
            worker_memory_limit_bytes=self.config.worker_memory_limit_bytes,
            auth_required=self.config.token is not None, tls=self.config.tls,
            **facts,
        )
        for gpu in probe.get("gpus", []):
            info.gpus.add(**gpu)
        for binfo in runtimes.installed_runtimes():
            pr = probe.get("runtimes", {}).get(binfo.name, {})
            info.runtimes.add(runtime=binfo.runtime, name=binfo.name, version=runtimes.dist_version(binfo.dist),
                              devices=pr.get("devices", ["cpu"]), artifact_suffix=binfo.suffixes[0],
                              carries_code=binfo.carries_code)
            if "error" in pr:
                info.extra[f"{binfo.name}_error"] = pr["error"]
        if "error" in probe:
            info.extra["probe_error"] = probe["error"]
        return info

    # ---------------------------------------------------------------- artifacts
    def HasArtifact(self, request: pb.HasArtifactRequest, context: grpc.ServicerContext) -> pb.HasArtifactResponse:
        try:
            st = self.store.state(request.sha256)
        except BadHash as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
        return pb.HasArtifactResponse(present=st.present, size_bytes=st.size_bytes, partial_bytes=st.partial_bytes)

    def UploadArtifact(self, request_iterator: Any, context: grpc.ServicerContext) -> pb.UploadArtifactResponse:
        first = next(request_iterator, None)
        if first is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", "empty upload stream: the first chunk "
                   "must carry sha256 and total_size_bytes")
        sha, total = first.sha256, int(first.total_size_bytes)
        try:
            self.store.begin(sha)  # claim first: nobody can finish this hash while we look at it
        except BadHash as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
        except UploadBusy as exc:
            _abort(context, grpc.StatusCode.ABORTED, "busy", str(exc))
        try:
            st = self.store.state(sha)
            if st.present:
                for _ in request_iterator:  # drain what the client already sent
                    pass
                return pb.UploadArtifactResponse(sha256=sha, complete=True, received_bytes=st.size_bytes,
                                                 size_bytes=st.size_bytes, already_present=True)
            received = int(first.offset)
            with self.store.open_partial(sha, total, received) as fh:
                chunk = first
                while chunk is not None:
                    if chunk.data:
                        if received + len(chunk.data) > total:
                            raise TooLarge(f"upload sends more than the announced total_size_bytes={total}")
                        fh.write(chunk.data)
                        fh.flush()
                        received += len(chunk.data)
                    chunk = next(request_iterator, None)
            complete = self.store.finish(sha, total)
        except TooLarge as exc:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", str(exc))
        except OffsetMismatch as exc:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "offset", str(exc))
        except HashMismatch as exc:
            _abort(context, grpc.StatusCode.DATA_LOSS, "hash_mismatch", str(exc))
        except StoreError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
        finally:
            self.store.end(sha)
        return pb.UploadArtifactResponse(sha256=sha, complete=complete, received_bytes=received,
                                         size_bytes=total if complete else 0)

    def DeleteArtifacts(self, request: pb.DeleteArtifactsRequest,
                        context: grpc.ServicerContext) -> pb.DeleteArtifactsResponse:
        try:
            deleted, freed = self.store.delete(list(request.sha256), everything=request.all)
        except BadHash as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
        return pb.DeleteArtifactsResponse(deleted=deleted, freed_bytes=freed)

    # ---------------------------------------------------------------- profiling
    def _validate(self, req: pb.ProfileRequest) -> dict[str, Any]:
        def bad(msg: str) -> ProfileFailure:
            return ProfileFailure(grpc.StatusCode.INVALID_ARGUMENT, "invalid", msg)

        try:
            path = self.store.path(req.artifact_sha256)
        except BadHash as exc:
            raise bad(str(exc)) from exc
        if not path.is_file():
            raise ProfileFailure(grpc.StatusCode.NOT_FOUND, "not_found",
                                 f"artifact {req.artifact_sha256} is not on this agent: upload it first")
        runtime = int(req.runtime)
        if runtime == runtimes.RUNTIME_UNSPECIFIED:
            runtime = runtimes.sniff_runtime(path)
            if runtime == runtimes.RUNTIME_UNSPECIFIED:
                raise bad("runtime not given and not recognisable from the artifact's bytes: set runtime")
        if runtime not in runtimes.BACKENDS:
            raise bad(f"unknown runtime enum value {runtime}")
        binfo = runtimes.BACKENDS[runtime]
        if not runtimes.is_installed(runtime):
            raise ProfileFailure(grpc.StatusCode.FAILED_PRECONDITION, "unavailable",
                                 f"runtime {binfo.name!r} is not installed on this agent "
                                 f"(installed: {[b.name for b in runtimes.installed_runtimes()]})")
        device = req.device or "cpu"
        if device.split(":")[0] not in binfo.devices:
            raise ProfileFailure(grpc.StatusCode.FAILED_PRECONDITION, "unavailable",
                                 f"runtime {binfo.name!r} cannot run on device {device!r} (supports {list(binfo.devices)})")
        if req.threads < 0 or req.threads > 1024:
            raise bad(f"threads={req.threads} out of range [0, 1024]")
        warmup = req.warmup_runs if req.HasField("warmup_runs") else DEFAULT_WARMUP
        repeats = req.repeats if req.HasField("repeats") else DEFAULT_REPEATS
        min_time = req.min_time_s if req.HasField("min_time_s") else DEFAULT_MIN_TIME_S
        max_repeats = req.max_repeats or DEFAULT_MAX_REPEATS
        if warmup < 0 or repeats < 1 or min_time < 0 or max_repeats < 1 or req.cooldown_ms < 0 or req.deadline_s < 0:
            raise bad("warmup_runs >= 0, repeats >= 1, min_time_s >= 0, max_repeats >= 1, cooldown_ms >= 0 and "
                      "deadline_s >= 0 are required")
        if repeats > max_repeats:
            raise bad(f"repeats={repeats} exceeds max_repeats={max_repeats}")
        allowed = set(sysinfo.allowed_cpus())
        bad_cpus = [c for c in req.cpu_affinity if c not in allowed]
        if bad_cpus:
            raise bad(f"cpu_affinity {bad_cpus} not among the CPUs this agent may use {sorted(allowed)}")
        if len(req.inputs) > MAX_INPUTS:
            raise bad(f"{len(req.inputs)} inputs: at most {MAX_INPUTS}")
        inputs = []
        for i, t in enumerate(req.inputs):
            dtype = t.dtype or "float32"
            if dtype not in runtimes.DTYPES:
                raise bad(f"inputs[{i}].dtype {dtype!r} unknown: use one of {list(runtimes.DTYPES)}")
            if not t.shape or any(d <= 0 for d in t.shape):
                raise bad(f"inputs[{i}].shape {list(t.shape)} must be non-empty with positive dimensions")
            n = 1
            for d in t.shape:
                n *= d
            if n > MAX_INPUT_ELEMENTS:
                raise bad(f"inputs[{i}] has {n} elements: at most {MAX_INPUT_ELEMENTS}")
            inputs.append({"name": t.name, "shape": list(t.shape), "dtype": dtype})
        if runtime == runtimes.RUNTIME_TORCHSCRIPT and not inputs:
            raise bad("TorchScript artifact does not record its input shapes: pass input shapes in the request "
                      "(nnf profile-model: --input-shape)")
        options = dict(req.options)
        unknown = sorted(set(options) - set(binfo.options))
        if unknown:
            raise bad(f"unknown options {unknown} for runtime {binfo.name!r} (accepted: {list(binfo.options)})")
        if req.memory_limit_bytes < 0:
            raise bad("memory_limit_bytes must be >= 0")
        return {
            "mode": "measure", "path": str(path), "sha256": req.artifact_sha256, "runtime": runtime,
            "device": device, "threads": max(1, req.threads), "inputs": inputs, "warmup_runs": warmup,
            "repeats": repeats, "min_time_s": min_time, "max_repeats": max_repeats,
            "cooldown_ms": req.cooldown_ms, "cpu_affinity": list(req.cpu_affinity),
            "memory_limit_bytes": req.memory_limit_bytes or self.config.worker_memory_limit_bytes,
            "seed": req.seed, "options": options, "nice": self.config.worker_nice,
        }

    def _run_locked(self, payload: dict[str, Any], budget_s: float, context: grpc.ServicerContext,
                    t_start: float) -> tuple[dict[str, Any], float, int, int]:
        """Wait for the device lock, run one worker, return (result, queue_wait_s, start_ns, end_ns)."""
        remaining = context.time_remaining()
        if remaining is not None:
            budget_s = min(budget_s, remaining)
        wait_left = budget_s - (time.monotonic() - t_start)
        if wait_left <= 0 or not self.lock.acquire(wait_left):
            raise ProfileFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout",
                                 f"deadline of {budget_s:.3g} s passed while waiting for the device "
                                 f"({self.lock.queued()} request(s) queued)")
        try:
            if not self.device_lock.acquire(budget_s - (time.monotonic() - t_start)):
                raise ProfileFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout",
                                     f"deadline of {budget_s:.3g} s passed while another agent on this device was "
                                     f"measuring (device lock {self.device_lock.path})")
            try:
                if not context.is_active():  # the client gave up while queued: do not measure for nobody
                    raise ProfileFailure(grpc.StatusCode.CANCELLED, "cancelled", "the client cancelled the request")
                queue_wait = time.monotonic() - t_start
                run_left = budget_s - queue_wait
                started = time.time_ns()
                result = self._spawn_worker(payload, run_left, context)
                finished = time.time_ns()
            finally:
                self.device_lock.release()
        finally:
            self.lock.release()
        return result, queue_wait, started, finished

    def _spawn_worker(self, payload: dict[str, Any], timeout_s: float, context: grpc.ServicerContext) -> dict:
        if timeout_s <= 0:
            raise ProfileFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", "deadline passed before the run")
        env = dict(os.environ)
        env.update(self.config.worker_env)
        env["PYTHONPATH"] = _worker_pythonpath()
        threads = str(payload.get("threads", 1))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = threads
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            start_new_session=True,
        )

        def kill_if_running() -> None:
            if proc.poll() is None:
                proc.kill()

        context.add_callback(kill_if_running)  # client cancelled / RPC ended: never leave a worker behind
        timed_out = False
        try:
            out, err = proc.communicate(json.dumps(payload).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            out, err = proc.communicate()
        rc = proc.returncode
        tail = err.decode(errors="replace")[-1500:].strip()
        if timed_out:
            raise ProfileFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout",
                                 f"model did not finish within its deadline ({timeout_s:.3g} s left when the "
                                 f"worker started); the worker (pid {proc.pid}) was killed")
        if not context.is_active():
            raise ProfileFailure(grpc.StatusCode.CANCELLED, "cancelled", "the client cancelled the request")
        if rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            if -rc == signal.SIGKILL:
                raise ProfileFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "oom",
                                     f"worker (pid {proc.pid}) was killed by SIGKILL, most likely by the kernel's "
                                     f"out-of-memory killer. stderr: {tail}")
            raise ProfileFailure(grpc.StatusCode.INTERNAL, "crash",
                                 f"worker (pid {proc.pid}) crashed with signal {sig} while running the model; "
                                 f"the agent keeps serving. stderr: {tail}")
        if rc != 0:
            raise ProfileFailure(grpc.StatusCode.INTERNAL, "crash",
                                 f"worker (pid {proc.pid}) exited with code {rc}. stderr: {tail}")
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError) as exc:
            raise ProfileFailure(grpc.StatusCode.INTERNAL, "crash",
                                 f"worker answered nothing readable. stderr: {tail}") from exc
        if answer.get("ok"):
            return answer["result"]
        kind = answer.get("kind", "runtime")
        code = {
            "load": grpc.StatusCode.INVALID_ARGUMENT, "input": grpc.StatusCode.INVALID_ARGUMENT,
            "unavailable": grpc.StatusCode.FAILED_PRECONDITION, "oom": grpc.StatusCode.RESOURCE_EXHAUSTED,
        }.get(kind, grpc.StatusCode.INTERNAL)
        message = answer.get("message", "")
        if kind == "oom":
            limit = payload.get("memory_limit_bytes") or 0
            message = ("model ran out of memory" + (f" (worker address-space limit {limit} bytes)" if limit else "")
                       + f": {message}")
        raise ProfileFailure(code, kind, message)

    def _profile(self, req: pb.ProfileRequest, context: grpc.ServicerContext) -> pb.ProfileResult:
        t_start = time.monotonic()
        payload = self._validate(req)
        budget = req.deadline_s or self.config.default_deadline_s
        res, queue_wait, started, finished = self._run_locked(payload, budget, context, t_start)
        ctx = res.pop("context")
        inputs = res.pop("inputs")
        method = _PEAK_METHODS.get(res.pop("peak_method"), pb.PEAK_MEMORY_METHOD_UNSPECIFIED)
        out = pb.ProfileResult(
            request_id=req.request_id, artifact_sha256=req.artifact_sha256, runtime=payload["runtime"],
            peak_method=method, queue_wait_us=queue_wait * 1e6, started_unix_ns=started, finished_unix_ns=finished,
            context=pb.MeasurementContext(**ctx),
            inputs=[pb.TensorSpec(**i) for i in inputs],
            **res,
        )
        return out

    def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> pb.ProfileResult:
        try:
            return self._profile(request, context)
        except ProfileFailure as exc:
            _abort(context, exc.code, exc.kind, exc.message)

    def ProfileStream(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        for index, req in enumerate(request_iterator):
            try:
                res = self._profile(req, context)
                yield pb.ProfileOutcome(index=index, request_id=req.request_id, result=res)
            except ProfileFailure as exc:
                if exc.code == grpc.StatusCode.CANCELLED:
                    return
                yield pb.ProfileOutcome(index=index, request_id=req.request_id, error=pb.ProfileError(
                    code=exc.code.value[0], code_name=exc.code.name, kind=exc.kind, message=exc.message))


def create_server(
    addr: str = "127.0.0.1:0",
    *,
    cache_dir: str | Path,
    token: str | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    max_artifact_bytes: int = 512 * 1024 * 1024,
    worker_memory_limit_bytes: int = 0,
    default_deadline_s: float = 600.0,
    max_queue: int = 16,
    max_workers: int = 32,
    worker_env: dict[str, str] | None = None,
    device_lock: str | Path | None = None,
    worker_nice: int | None = None,
) -> tuple[grpc.Server, int]:
    """Build and start an agent server bound to ``addr`` (``HOST:PORT``; port 0 = any free port).

    ``device_lock``: file whose ``flock`` serialises measurements of all agents on this device
    ("default": ``$TMPDIR/nnf-agent-device-<uid>.lock``, what ``nnf-agent serve`` uses; None, the default
    here so embedded/test servers stay hermetic: only this agent's own queue).
    ``worker_nice``: nice value for measurement workers (e.g. -10: other processes on a shared machine
    interrupt timed runs less; needs root/CAP_SYS_NICE, else the worker reports what it got); None = inherit.

    Returns ``(server, port)``. Raises ``ValueError`` for a non-loopback address without a token or a
    TLS certificate without its key, and ``RuntimeError`` when the address cannot be bound.
    """
    host, _ = split_addr(addr)
    if token is not None and not token:
        raise ValueError("empty token: give a non-empty --token (or none at all on loopback)")
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to bind non-loopback address {host!r} without a token: anyone who can reach it could "
            f"run code on this device. Pass --token (or set NNF_AGENT_TOKEN), or bind 127.0.0.1 and tunnel"
        )
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    tls = tls_cert is not None
    if not tls and not is_loopback(host):
        log.warning("serving on %s without TLS: the token and artifacts travel in clear text; "
                    "use --tls-cert/--tls-key or an ssh/adb tunnel", host)
    config = AgentConfig(
        cache_dir=Path(cache_dir), token=token, max_artifact_bytes=int(max_artifact_bytes),
        worker_memory_limit_bytes=int(worker_memory_limit_bytes), default_deadline_s=float(default_deadline_s),
        max_queue=int(max_queue), worker_env=dict(worker_env or {}), tls=tls,
        device_lock_path=default_device_lock_path() if device_lock == "default" else
        (Path(device_lock) if device_lock else None),
        worker_nice=worker_nice,
    )
    interceptors = [_AuthInterceptor(token)] if token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="nnf-agent"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", CHUNK_CAP_BYTES + 64 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
        maximum_concurrent_rpcs=max_workers,
    )
    servicer = ProfilingAgentServicer(config)
    pb_grpc.add_ProfilingAgentServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    if tls:
        creds = grpc.ssl_server_credentials([(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())])
        port = server.add_secure_port(addr, creds)
    else:
        port = server.add_insecure_port(addr)
    if port == 0:
        raise RuntimeError(f"could not bind {addr}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    server.nnf_servicer = servicer  # for tests and embedding: the servicer behind this server
    return server, port
