"""gRPC service of the profiling agent (``nnfactory.agent.v1.ProfilingAgent``) and ``create_server(config)``.

``create_server(config)`` builds a started server from an :class:`agent.config.AgentConfig` and returns
``(server, port)``; ``agent.cli`` wraps it as ``nnf-agent serve``; :func:`shutdown` stops it within a
bounded time whatever the traffic. The server process stays light: it imports grpc, protobuf and the
standard library only; runtimes are imported by the measuring processes (``agent.workers``).

What a profile request goes through: the :class:`~agent.guard.Guard` interceptor (safe decoding, token,
idle watchdog, concurrency caps) -> :func:`agent.requests.validate` (a typed job, or INVALID_ARGUMENT
naming the field) -> the FIFO queue and the device lock (``agent.locks``) -> the artifact is re-hashed and
pinned against eviction (``agent.store``) -> a measuring child (``agent.workers``: forked from the
runtime's zygote) that receives the locked descriptor -> the result or a :class:`ProfileFailure`.
While the child measures, the request's server thread is blocked waiting for it: the agent does no work
of its own during a measurement (uploads from other clients are the exception; avoid them during a
campaign if that matters).

Security: see the trust model in ``docs/agent.md`` and ``protos/nnfactory/agent/v1/agent.proto``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import agent as agent_pkg
from agent import runtimes, sysinfo
from agent._proto.nnfactory.agent.v1 import agent_pb2 as pb
from agent._proto.nnfactory.agent.v1 import agent_pb2_grpc as pb_grpc
from agent.config import AgentConfig, ConfigProblem
from agent.errors import ProfileFailure
from agent.guard import Guard, IdleWatchdog, abort
from agent.locks import DeviceFileLock, FifoLock
from agent.protocol import (
    MAX_RECEIVE_MESSAGE_BYTES,
    MAX_SEND_MESSAGE_BYTES,
    PROTOCOL,
    PROTOCOL_VERSION,
    SERVICE_NAME,
    ErrorKind,
    is_loopback,
    parse_address,
)
from agent.requests import ProfileJob, validate
from agent.store import (
    ArtifactStore,
    BadHash,
    Corrupted,
    HashMismatch,
    OffsetMismatch,
    StoreError,
    TooLarge,
    UploadBusy,
)
from agent.workers import ZYGOTE_START_TIMEOUT_S, WorkerHandle, WorkerPool, interpret

log = logging.getLogger("nnf.agent")

PROBE_TIMEOUT_S = 120.0
MAX_INFO_WAITERS = 8

_PEAK_METHODS = {
    "vmhwm_reset": pb.PEAK_MEMORY_METHOD_VMHWM_RESET,
    "vmhwm_fresh_process": pb.PEAK_MEMORY_METHOD_VMHWM_FRESH_PROCESS,
    "cuda_max_allocated": pb.PEAK_MEMORY_METHOD_CUDA_MAX_ALLOCATED,
}


class _CancelScope:
    """Kills the measurement of a call whose client went away (``context.add_callback``)."""

    def __init__(self) -> None:
        self.current: WorkerHandle | None = None
        self.done = False

    def cancel(self) -> None:
        self.done = True
        if self.current is not None:
            self.current.kill("cancelled")


class ProfilingAgentServicer(pb_grpc.ProfilingAgentServicer):
    """Implementation of the ProfilingAgent service."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.limits = config.limits()
        self.store = ArtifactStore(config.cache_dir, self.limits.max_artifact_bytes,
                                   quota_bytes=self.limits.cache_quota_bytes, partial_expiry_s=config.partial_expiry_s)
        self.lock = FifoLock(config.max_queue)
        self.device_lock = DeviceFileLock(config.device_lock_path)
        self.pool = WorkerPool(isolation=config.isolation, env=config.worker_env, zygote_idle_s=config.zygote_idle_s)
        self._probe: dict[str, Any] | None = None
        self._probe_done = threading.Event()
        self._probe_started = False
        self._probe_mutex = threading.Lock()
        self._info_waiters = threading.BoundedSemaphore(MAX_INFO_WAITERS)
        self.stopping = threading.Event()

    # ---------------------------------------------------------------- device info
    def _run_probe(self) -> None:
        try:
            ex = self.pool.probe(PROBE_TIMEOUT_S)
            self._probe = interpret(ex, 0)
        except ProfileFailure as exc:
            log.warning("runtime probe failed: %s", exc.message)
            self._probe = {"gpus": [], "runtimes": {}, "error": exc.message}
        finally:
            self._probe_done.set()

    def probe(self, timeout_s: float) -> dict[str, Any]:
        """Runtime versions and accelerators: probed once in a low-priority process that never waits for
        (nor holds) the device lock, so device info is never stuck behind a measurement."""
        with self._probe_mutex:
            if not self._probe_started:
                self._probe_started = True
                threading.Thread(target=self._run_probe, name="nnf-probe", daemon=True).start()
        if not self._probe_done.wait(timeout_s):
            return {"gpus": [], "runtimes": {}, "error": "runtime probe still running"}
        return self._probe or {}

    def GetDeviceInfo(self, request: pb.GetDeviceInfoRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        if not self._info_waiters.acquire(blocking=False):
            abort(context, ErrorKind.BUSY, "agent busy: too many device-info calls waiting for the runtime probe")
        try:
            probe = self.probe(min(PROBE_TIMEOUT_S + 10, context.time_remaining() or PROBE_TIMEOUT_S + 10))
        finally:
            self._info_waiters.release()
        lim = self.limits
        info = pb.DeviceInfo(
            agent_version=agent_pkg.__version__, protocol=PROTOCOL, protocol_version=PROTOCOL_VERSION,
            max_artifact_bytes=lim.max_artifact_bytes, worker_memory_limit_bytes=lim.worker_memory_bytes,
            auth_required=self.config.token is not None, tls=self.config.tls, max_input_bytes=lim.max_input_bytes,
            max_threads=lim.max_threads, cache_quota_bytes=lim.cache_quota_bytes,
            allow_pickle_formats=self.config.allow_pickle_formats, isolation=self.config.isolation,
            **sysinfo.host_facts(),
        )
        for gpu in probe.get("gpus", []):
            info.gpus.add(**gpu)
        for binfo in runtimes.installed_runtimes():
            pr = probe.get("runtimes", {}).get(binfo.name, {})
            disabled = binfo.pickle_bearing and not self.config.allow_pickle_formats
            info.runtimes.add(runtime=binfo.runtime, name=binfo.name, version=runtimes.dist_version(binfo.dist),
                              devices=pr.get("devices", ["cpu"]), artifact_suffix=binfo.suffixes[0],
                              carries_code=binfo.carries_code, disabled=disabled,
                              note="pickle-bearing format: the operator must pass --allow-pickle-formats"
                              if disabled else "")
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
            abort(context, ErrorKind.INVALID, f"sha256: {exc}")
        if st.present:
            self.store.touch(request.sha256)  # about to be profiled: least likely to be evicted
        return pb.HasArtifactResponse(present=st.present, size_bytes=st.size_bytes, partial_bytes=st.partial_bytes)

    def UploadArtifact(self, request_iterator: Iterator[pb.UploadChunk],
                       context: grpc.ServicerContext) -> pb.UploadArtifactResponse:
        first = next(request_iterator, None)
        if first is None:
            abort(context, ErrorKind.INVALID, "empty upload stream: the first chunk must carry sha256 and "
                                              "total_size_bytes")
        sha, total = first.sha256, int(first.total_size_bytes)
        try:
            self.store.begin(sha)  # claim first: nobody can finish this hash while we look at it
        except BadHash as exc:
            abort(context, ErrorKind.INVALID, f"sha256: {exc}")
        except UploadBusy as exc:
            abort(context, ErrorKind.BUSY, str(exc), code=grpc.StatusCode.ABORTED)
        received = 0
        complete = False
        try:
            st = self.store.state(sha)
            if st.present:
                for _ in request_iterator:  # drain what the client already sent
                    pass
                self.store.touch(sha)
                return pb.UploadArtifactResponse(sha256=sha, complete=True, received_bytes=st.size_bytes,
                                                 size_bytes=st.size_bytes, already_present=True)
            received = int(first.offset)
            with self.store.open_partial(sha, total, received) as fh:
                chunk: pb.UploadChunk | None = first
                while chunk is not None:
                    if chunk.data:
                        if received + len(chunk.data) > total:
                            raise TooLarge(f"upload sends more than the announced total_size_bytes={total}")
                        fh.write(chunk.data)
                        received += len(chunk.data)
                    chunk = next(request_iterator, None)
            complete = self.store.finish(sha, total)
        except TooLarge as exc:
            abort(context, ErrorKind.TOO_LARGE, str(exc))
        except OffsetMismatch as exc:
            abort(context, ErrorKind.OFFSET, str(exc))
        except HashMismatch as exc:
            abort(context, ErrorKind.HASH_MISMATCH, str(exc))
        except StoreError as exc:
            abort(context, ErrorKind.INVALID, str(exc))
        except OSError as exc:  # e.g. the device's disk is full
            abort(context, ErrorKind.TOO_LARGE, f"the agent could not store the upload: {exc.strerror or exc}")
        finally:
            self.store.end(sha)
        return pb.UploadArtifactResponse(sha256=sha, complete=complete, received_bytes=received,
                                         size_bytes=total if complete else 0)

    def DeleteArtifacts(self, request: pb.DeleteArtifactsRequest,
                        context: grpc.ServicerContext) -> pb.DeleteArtifactsResponse:
        try:
            deleted, freed = self.store.delete(list(request.sha256), everything=request.all)
        except BadHash as exc:
            abort(context, ErrorKind.INVALID, f"sha256: {exc}")
        return pb.DeleteArtifactsResponse(deleted=deleted, freed_bytes=freed)

    def CacheStats(self, request: pb.CacheStatsRequest, context: grpc.ServicerContext) -> pb.CacheStatsResponse:
        st = self.store.stats()
        return pb.CacheStatsResponse(
            artifacts=st.artifacts, artifact_bytes=st.artifact_bytes, partials=st.partials,
            partial_bytes=st.partial_bytes, quota_bytes=st.quota_bytes, max_artifact_bytes=st.max_artifact_bytes,
            evicted=st.evicted, expired_partials=st.expired_partials, partial_expiry_s=self.store.partial_expiry_s)

    # ---------------------------------------------------------------- profiling
    def _run_locked(self, job: ProfileJob, context: grpc.ServicerContext, scope: _CancelScope,
                    t_start: float) -> tuple[dict[str, Any], float, int, int]:
        """Wait for the device, run one child, return (result, queue_wait_s, start_ns, end_ns)."""
        budget_s = job.deadline_s
        remaining = context.time_remaining()
        if remaining is not None:
            budget_s = min(budget_s, remaining)
        wait_left = budget_s - (time.monotonic() - t_start)
        if wait_left <= 0 or not self.lock.acquire(wait_left):
            raise ProfileFailure(ErrorKind.TIMEOUT, f"deadline of {budget_s:.3g} s passed while waiting for the device "
                                                    f"({self.lock.queued()} request(s) queued)")
        try:
            if not self.device_lock.acquire(budget_s - (time.monotonic() - t_start)):
                raise ProfileFailure(ErrorKind.TIMEOUT, f"deadline of {budget_s:.3g} s passed while another agent on "
                                                        f"this device was measuring (device lock "
                                                        f"{self.device_lock.path})")
            try:
                if self.stopping.is_set():
                    raise ProfileFailure(ErrorKind.SHUTTING_DOWN, "the agent is stopping; retry on its successor")
                if scope.done or not context.is_active():  # the client gave up while queued
                    raise ProfileFailure(ErrorKind.CANCELLED, "the client cancelled the request")
                try:
                    with self.store.pinned(job.sha256):
                        queue_wait = time.monotonic() - t_start
                        run_left = budget_s - queue_wait
                        if run_left <= 0:
                            raise ProfileFailure(ErrorKind.TIMEOUT, "deadline passed before the run")
                        payload = job.payload(nice=self.config.worker_nice, sandbox=self.config.sandbox)
                        started = time.time_ns()

                        def on_start(handle: WorkerHandle) -> None:
                            scope.current = handle
                            if scope.done:
                                handle.kill("cancelled")

                        grpc_left = context.time_remaining()  # bounds a runtime's one-time import
                        ex = self.pool.run(payload, run_left, self.device_lock.fd, on_start,
                                           startup_s=min(ZYGOTE_START_TIMEOUT_S, grpc_left or ZYGOTE_START_TIMEOUT_S))
                        finished = time.time_ns()
                        scope.current = None
                except Corrupted as exc:
                    raise ProfileFailure(ErrorKind.NOT_FOUND, str(exc)) from exc
            finally:
                self.device_lock.release()
        finally:
            self.lock.release()
        if ex.kill_reason == "shutdown":
            raise ProfileFailure(ErrorKind.SHUTTING_DOWN, "the agent stopped while the model ran; retry on its "
                                                          "successor")
        return interpret(ex, job.memory_limit_bytes), queue_wait, started, finished

    def _profile(self, req: pb.ProfileRequest, context: grpc.ServicerContext, scope: _CancelScope) -> pb.ProfileResult:
        t_start = time.monotonic()
        if self.stopping.is_set():
            raise ProfileFailure(ErrorKind.SHUTTING_DOWN, "the agent is stopping; retry on its successor")
        job = validate(req, store=self.store, limits=self.limits, default_deadline_s=self.config.default_deadline_s,
                       allow_pickle_formats=self.config.allow_pickle_formats)
        res, queue_wait, started, finished = self._run_locked(job, context, scope, t_start)
        ctx = res.pop("context")
        inputs = res.pop("inputs")
        method = _PEAK_METHODS.get(res.pop("peak_method"), pb.PEAK_MEMORY_METHOD_UNSPECIFIED)
        return pb.ProfileResult(
            request_id=req.request_id, artifact_sha256=req.artifact_sha256, runtime=cast(Any, job.runtime),
            peak_method=method, queue_wait_us=queue_wait * 1e6, started_unix_ns=started, finished_unix_ns=finished,
            context=pb.MeasurementContext(**ctx), inputs=[pb.TensorSpec(**i) for i in inputs], **res,
        )

    def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> pb.ProfileResult:
        scope = _CancelScope()
        context.add_callback(scope.cancel)
        try:
            return self._profile(request, context, scope)
        except ProfileFailure as exc:
            abort(context, exc.kind, exc.message, exc.code)
            raise  # unreachable: abort raises

    def ProfileStream(self, request_iterator: Iterator[pb.ProfileRequest],
                      context: grpc.ServicerContext) -> Iterator[pb.ProfileOutcome]:
        scope = _CancelScope()
        context.add_callback(scope.cancel)
        for index, req in enumerate(request_iterator):
            try:
                res = self._profile(req, context, scope)
                yield pb.ProfileOutcome(index=index, request_id=req.request_id, result=res)
            except ProfileFailure as exc:
                if exc.kind in (ErrorKind.CANCELLED, ErrorKind.SHUTTING_DOWN):
                    abort(context, exc.kind, exc.message, exc.code)
                yield pb.ProfileOutcome(index=index, request_id=req.request_id[:256], error=pb.ProfileError(
                    code=exc.code.value[0], code_name=exc.code.name, kind=str(exc.kind), message=exc.message))


def _method(name: str) -> str:
    return f"/{SERVICE_NAME}/{name}"


def create_server(config: AgentConfig) -> tuple[grpc.Server, int]:
    """Build and start an agent server for ``config`` (``config.address``: ``HOST:PORT``, port 0 = any free).

    Returns ``(server, port)``; ``server.nnf_servicer`` is the servicer behind it. Raises
    :class:`agent.config.ConfigProblem` (a ValueError) for settings that cannot work (a non-loopback
    address without a token, a cache directory others can write, ...) and ``RuntimeError`` when the
    address cannot be bound, e.g. because another agent listens there (SO_REUSEPORT is off: two agents
    never share a port).
    """
    host, _ = parse_address(config.address)
    if not is_loopback(host) and not config.token:
        raise ConfigProblem(
            f"refusing to bind non-loopback address {host!r} without a token: anyone who can reach it could "
            f"run code on this device. Pass --token-file (or set NNF_AGENT_TOKEN), or bind 127.0.0.1 and tunnel"
        )
    if config.token is None:
        log.warning("authentication is OFF (--no-auth): any local process that can reach %s may send models to "
                    "run as this user", config.address)
    if not config.tls and not is_loopback(host):
        log.warning("serving on %s without TLS: the token and artifacts travel in clear text; "
                    "use --tls-cert/--tls-key or an ssh/adb tunnel", host)
    servicer = ProfilingAgentServicer(config)
    caps = {
        _method("UploadArtifact"): config.max_uploads,
        _method("ProfileStream"): config.max_profile_streams,
        "/grpc.health.v1.Health/Watch": 4,
        f"/{reflection.SERVICE_NAME}/ServerReflectionInfo": 4,
    }
    watchdog = IdleWatchdog(config.stream_idle_timeout_s)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="nnf-agent"),
        interceptors=[Guard(config.token, caps, watchdog)],
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a second agent on this port must fail, not split the traffic
        ],
        maximum_concurrent_rpcs=config.rpc_threads,
    )
    pb_grpc.add_ProfilingAgentServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        if config.tls:
            creds = grpc.ssl_server_credentials([(config.tls_key.read_bytes(),  # type: ignore[union-attr]
                                                  config.tls_cert.read_bytes())])  # type: ignore[union-attr]
            port = server.add_secure_port(config.address, creds)
        else:
            port = server.add_insecure_port(config.address)
    except RuntimeError:
        port = 0
    if port == 0:
        servicer.pool.close()
        raise RuntimeError(f"could not bind {config.address}: the port is in use (another agent?) or the address "
                           f"is not this machine's. Stop the other agent (`nnf agent stop --pid PID`) or choose "
                           f"another --port (0: any free port)")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    server.nnf_servicer = servicer
    server.nnf_health = health_servicer
    server.nnf_watchdog = watchdog
    return server, port


def shutdown(server: grpc.Server, grace_s: float = 2.0) -> bool:
    """Stop ``server`` within about ``grace_s + 2`` seconds whatever the traffic; True when gRPC confirmed.

    Running measurements are killed (their clients get UNAVAILABLE, kind ``shutting_down``), zygotes
    stop, then gRPC gets ``grace_s`` to finish calls. False means gRPC did not confirm in time (seen
    with grpcio 1.85 after undecodable messages on a bidirectional stream): the caller should exit the
    process anyway.
    """
    servicer: ProfilingAgentServicer | None = getattr(server, "nnf_servicer", None)
    if servicer is not None:
        servicer.stopping.set()
        health_servicer = getattr(server, "nnf_health", None)
        if health_servicer is not None:
            health_servicer.enter_graceful_shutdown()
        servicer.pool.close()
    watchdog = getattr(server, "nnf_watchdog", None)
    if watchdog is not None:
        watchdog.stop()
    return server.stop(grace_s).wait(grace_s + 2.0)
