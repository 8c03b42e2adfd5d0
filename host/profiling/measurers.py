"""Measurers: a device's agent as a campaign, a fingerprint or a live search sees it.

* :class:`Measurer` (protocol): what a campaign needs of a device: its identity, content-addressed artifacts
  and one measurement per request. :class:`AgentMeasurer` implements it over gRPC (``host.client``);
  tests implement it in memory.
* :class:`CandidateMeasurer`: one gate vector in, its measured cost out: builds the subnet's artifact
  (once), makes sure the device holds it and measures it on a :class:`Measurer`. The live search, the drift
  fingerprint and the benchmarks measure through it.
* :func:`open_agent`: the :class:`AgentMeasurer` of a named device: ``--agent HOST:PORT`` (+ token), or the
  device inventory's deployed agent through its tunnel, token read from the device.

Failures: :class:`MeasurementFailed` with ``final=True`` when the model itself failed (load error, out of
memory, crash: measuring it again gives the same answer), ``final=False`` when the request did (deadline,
busy or unavailable agent, artifact evicted: worth measuring again). An agent that cannot be reached at all
raises :class:`~host.errors.AgentError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from host.errors import AgentError, CampaignError, ConfigError
from host.profiling.build import BuiltArtifact, SubnetBuilder, gates_sha256
from host.profiling.data import runs_latency
from host.profiling.plan import MeasureSettings

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass
class Measurement:
    latency_median_us: float
    latency_min_us: float
    latency_mean_us: float
    latency_p90_us: float
    latency_std_us: float
    runs: int
    peak_bytes: int
    peak_method: str
    context: dict = field(default_factory=dict)
    samples_us: list[float] = field(default_factory=list)  # every timed run, in order

    def latency(self, stat: str) -> float:
        """The latency under a statistic of the timed runs (``host.profiling.data.row_latency``)."""
        if stat in ("median", "min", "mean") or not self.samples_us:
            return {"min": self.latency_min_us, "mean": self.latency_mean_us}.get(stat, self.latency_median_us)
        return runs_latency(self.samples_us, stat)


def measurement_latency(m: Measurement, stat: str = "p90") -> float:
    """A :class:`Measurement`'s latency under ``stat`` (same as ``m.latency(stat)``)."""
    return m.latency(stat)


@dataclass(frozen=True)
class Upload:
    """What making sure the device holds an artifact cost: payload bytes and estimated bytes on the wire."""

    payload_bytes: int = 0
    wire_bytes: int = 0


class Measurer(Protocol):
    """A device's agent as a campaign sees it."""

    def device_info(self) -> dict: ...

    def has_artifact(self, sha256: str) -> bool: ...

    def ensure_artifact(self, sha256: str, data: Callable[[], bytes]) -> Upload:
        """Make sure the device holds the artifact; ``data`` is called only when it must be sent."""
        ...

    def measure(self, sha256: str, runtime: str, input_shape: Sequence[int], settings: MeasureSettings) -> Measurement: ...

    def close(self) -> None: ...


class MeasurementFailed(Exception):
    """One subnet could not be measured, but the agent answers.

    ``final``: the model itself failed (load error, out of memory, crash): recorded as that subnet's result.
    Otherwise the failure was the request's (deadline, busy, unavailable): the job is measured again later.
    """

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final


#: nnf-error-kind values the agent sends when the model itself failed
FINAL_KINDS = ("load", "input", "oom", "crash", "runtime")


def classify_agent_error(exc: AgentError) -> MeasurementFailed | None:
    """A per-subnet failure for an agent error, or None when the error is not the subnet's: the agent is gone
    (unavailable after the client's retries) or the whole setup is wrong (bad token, runtime not installed,
    invalid request): measuring on would only repeat it, and the job stays unmeasured for the next run."""
    from host.client import AgentArtifactError, AgentAuthError, AgentModelError, AgentUnavailableError

    kind = getattr(exc, "kind", "") or ""
    code = getattr(exc, "code", "") or ""
    if isinstance(exc, AgentModelError) or kind in FINAL_KINDS:
        return MeasurementFailed(str(exc), final=True)
    if isinstance(exc, AgentAuthError | AgentArtifactError | AgentUnavailableError) or kind in ("invalid", "unavailable"):
        return None
    if code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED"):
        return None
    return MeasurementFailed(str(exc), final=False)  # deadline (queued or running), busy, not found, cancelled


class AgentMeasurer:
    """:class:`Measurer` backed by an on-device agent (``host.client.AgentClient``).

    Artifacts are content-addressed: the agent is asked first and nothing it already holds is sent again.
    """

    def __init__(self, address: str, *, token: str | None = None, device: str = "cpu", timeout_s: float = 30.0,
                 compression: str | None = None) -> None:
        from host.client import AgentClient

        self.address = address
        self.device = device
        self.compression = None if compression in (None, "none") else compression
        self.client = AgentClient(address, token=token, timeout_s=timeout_s, compression=self.compression)
        self._info: dict | None = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> AgentMeasurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def device_info(self) -> dict:
        if self._info is None:
            self._info = _jsonable(asdict(self.client.device_info()))
        return self._info

    def has_artifact(self, sha256: str) -> bool:
        return self.client.has_artifact(sha256)

    def ensure_artifact(self, sha256: str, data: Callable[[], bytes]) -> Upload:
        if self.client.has_artifact(sha256):
            return Upload()
        blob = data()
        sent = int(self.client.upload(blob, sha256=sha256).bytes_sent)
        return Upload(sent, _wire_bytes(blob, sent, self.compression, self.client.chunk_bytes))

    def measure(self, sha256: str, runtime: str, input_shape: Sequence[int], settings: MeasureSettings) -> Measurement:
        from host.client import ProfileRequest, TensorSpec

        req = ProfileRequest(
            artifact_sha256=sha256, runtime=runtime, device=self.device,
            inputs=[TensorSpec(shape=(1, *input_shape))], threads=settings.threads,
            warmup_runs=settings.warmup_runs, repeats=settings.repeats, min_time_s=settings.min_time_s,
            deadline_s=settings.deadline_s,
        )
        try:
            r = self.client.profile(req)
        except AgentError as exc:
            failed = classify_agent_error(exc)
            if failed is None:
                raise
            raise failed from exc
        ctx = {
            "threads": r.context.threads, "cpu_affinity": list(r.context.cpu_affinity),
            "cpu_freq_khz": dict(r.context.cpu_freq_khz), "runtime_versions": dict(r.context.runtime_versions),
            "device": r.context.device, "queue_wait_us": r.queue_wait_us, "load_time_ms": r.load_time_ms,
            "measure_time_s": r.measure_time_s, "warmup_runs": r.warmup_runs,
        }
        if settings.clock == "thread_cpu":  # the agent reports the worker thread's CPU time of every run too
            cpu = np.array(r.thread_cpu_samples_ns or (), dtype=np.float64) / 1000.0
            if cpu.size == 0:
                raise AgentError(f"agent {self.address} reports no per-run thread CPU time; use --clock wall")
            ctx["clock"] = "thread_cpu"
            return Measurement(
                latency_median_us=float(np.median(cpu)), latency_min_us=float(cpu.min()),
                latency_mean_us=float(cpu.mean()), latency_p90_us=float(np.percentile(cpu, 90)),
                latency_std_us=float(cpu.std()), runs=int(cpu.size), peak_bytes=int(r.peak_bytes),
                peak_method=r.peak_method, context=ctx, samples_us=cpu.tolist(),
            )
        return Measurement(
            latency_median_us=r.median_latency_us, latency_min_us=r.min_latency_us, latency_mean_us=r.mean_latency_us,
            latency_p90_us=r.p90_latency_us, latency_std_us=r.std_latency_us, runs=len(r.samples_ns),
            peak_bytes=int(r.peak_bytes), peak_method=r.peak_method, context=ctx,
            samples_us=[ns / 1000.0 for ns in r.samples_ns],
        )


def _wire_bytes(blob: bytes, sent: int, compression: str | None, chunk_bytes: int) -> int:
    """Payload bytes on the wire: ``sent`` uncompressed, else the per-message compressed size (gRPC
    compresses each upload chunk message on its own, so each chunk is compressed separately here)."""
    if not compression or sent == 0:
        return sent
    import zlib

    data = blob[-sent:]
    return sum(len(zlib.compress(data[i : i + chunk_bytes], 6)) for i in range(0, len(data), chunk_bytes))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


@dataclass(frozen=True)
class AgentLink:
    """How a named device's agent was reached (for reports): address, through the inventory or not, local."""

    device: str
    address: str
    via: str  # "--agent" | "inventory"
    local: bool  # the agent shares this machine (host work and measurements must not overlap)


@contextlib.contextmanager
def open_agent(device: str, agent: str | None = None, *, token: str | None = None, inventory: str | None = None,
               target: str = "cpu", compression: str | None = None, remote: bool = False
               ) -> Iterator[tuple[AgentMeasurer, AgentLink]]:
    """The :class:`AgentMeasurer` of ``device``: at ``agent`` (HOST:PORT; token from ``token`` or
    ``$NNF_AGENT_TOKEN``), else the device inventory's deployed agent, reached through a tunnel with the
    token read from the device (never on the command line). ``remote``: never treat the agent as local."""
    session = None
    if agent is not None:
        tok = token if token is not None else os.environ.get("NNF_AGENT_TOKEN")
        address, via = agent, "--agent"
        local = not remote and agent.rsplit(":", 1)[0] in LOOPBACK
    else:
        try:
            from host.deploy.inventory import load_inventory
            from host.deploy.session import DeviceSession
        except ImportError as exc:  # the deploy package is optional in a partial install
            raise ConfigError(
                f"no --agent given for device {device!r} and no device inventory support here; give --agent "
                "HOST:PORT (start a local agent with `nnf agent start --local`)"
            ) from exc
        dev = load_inventory(inventory).get(device)
        session = DeviceSession(dev)
        address, tok, via = session.address, session.token, "inventory"
        local = dev.transport == "local" and not remote
    try:
        measurer = AgentMeasurer(address, token=tok, device=target, compression=compression)
        try:
            yield measurer, AgentLink(device, address, via, local)
        finally:
            measurer.close()
    finally:
        if session is not None:
            session.close()


class CandidateMeasurer:
    """Measure candidate subnets (one gate vector each) on a device.

    Each candidate is built once (extraction + export) and uploaded once (content-addressed). Calling it
    returns ``(latency_us, memory_bytes)`` under ``stat``, which must be the statistic the device's profile
    predicts so measured and predicted figures compare (the live search's measure). ``on_measure`` is
    called after every measurement (progress output).
    """

    def __init__(self, builder: SubnetBuilder, measurer: Measurer, input_shape: Sequence[int],
                 settings: MeasureSettings | None = None, stat: str = "p90",
                 on_measure: Callable[[Measurement, float], None] | None = None) -> None:
        self.builder = builder
        self.measurer = measurer
        self.input_shape = tuple(input_shape)
        self.settings = settings or MeasureSettings()
        self.stat = stat
        self.on_measure = on_measure
        self._artifacts: dict[str, BuiltArtifact] = {}
        self.measurements = 0
        self.bytes_sent = 0
        self.host_seconds = 0.0
        self.device_seconds = 0.0

    def measure(self, gates: Sequence[torch.Tensor]) -> Measurement:
        """One full measurement (every timed run) of the subnet ``gates``."""
        t0 = time.perf_counter()
        gsha = gates_sha256(gates)
        built = self._artifacts.get(gsha)
        if built is None:
            built = self.builder(list(gates))
            self._artifacts[gsha] = built
        t1 = time.perf_counter()
        self.bytes_sent += self.measurer.ensure_artifact(built.artifact_sha256, lambda: built.data).payload_bytes
        try:
            m = self.measurer.measure(built.artifact_sha256, self.builder.runtime, self.input_shape, self.settings)
        except MeasurementFailed as exc:
            raise CampaignError(f"measuring a candidate on the device failed: {exc}") from exc
        self.measurements += 1
        self.host_seconds += t1 - t0
        self.device_seconds += time.perf_counter() - t1
        if self.on_measure is not None:
            self.on_measure(m, m.latency(self.stat))
        return m

    def __call__(self, gates: Sequence[torch.Tensor]) -> tuple[float, float]:
        m = self.measure(gates)
        return m.latency(self.stat), float(m.peak_bytes)


def measurement_json(m: Measurement) -> str:
    """A measurement's raw runs as stored (``samples_us``)."""
    return json.dumps([round(float(v), 1) for v in m.samples_us])
