"""Measurers: a device's agent as a campaign or a live search sees it.

:class:`Measurer` is the protocol the campaign runner uses; :class:`AgentMeasurer` implements it over gRPC
(``host.client.AgentClient``); :class:`LiveDeviceMeasurer` builds and measures one candidate for a live
search.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from host.errors import AgentError, CampaignError
from host.fileio import sha256_file
from host.profiling.build import RUNTIME_SUFFIX, BuiltArtifact, SubnetBuilder, gates_sha256
from host.profiling.data import row_latency
from host.profiling.plan import MeasureSettings


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


class Measurer(Protocol):
    """A device's agent as the campaign sees it."""

    def device_info(self) -> dict: ...

    def ensure_artifact(self, sha256: str, data: Callable[[], bytes]) -> int:
        """Make sure the agent holds the artifact; returns the bytes actually uploaded (0 if present)."""
        ...

    def has_artifact(self, sha256: str) -> bool: ...

    def measure(self, sha256: str, runtime: str, input_shape: Sequence[int], settings: MeasureSettings) -> Measurement: ...


class MeasurementFailed(Exception):
    """One subnet could not be measured (crash, OOM, timeout), but the agent is fine: skip it."""


class AgentMeasurer:
    """:class:`Measurer` backed by an on-device agent (``host.client.AgentClient``).

    Artifacts are written once to a local content-addressed cache (``<cache>/<sha256>.pt``) because the
    client uploads files; the agent is asked first and nothing it already holds is sent again.
    A model that crashes, runs out of memory or passes its deadline fails only that subnet
    (:class:`MeasurementFailed`); an unreachable agent raises :class:`~host.errors.AgentError`.
    """

    def __init__(self, address: str, *, token: str | None = None, device: str = "cpu",
                 cache_dir: str | Path | None = None, timeout_s: float = 30.0, compression: str | None = None) -> None:
        from host.client import AgentClient

        self.address = address
        self.device = device
        self.compression = compression
        self.client = AgentClient(address, token=token, timeout_s=timeout_s, compression=compression)
        self.last_wire_bytes = 0
        base = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "nnfactory" / "artifacts"
        self.cache_dir = base
        self._info: dict | None = None
        self.suffix = ".bin"

    def close(self) -> None:
        self.client.close()

    def device_info(self) -> dict:
        if self._info is None:
            from dataclasses import asdict as _asdict

            self._info = _jsonable(_asdict(self.client.device_info()))
        return self._info

    def has_artifact(self, sha256: str) -> bool:
        return self.client.has_artifact(sha256)

    def ensure_artifact(self, sha256: str, data: Callable[[], bytes]) -> int:
        if self.client.has_artifact(sha256):
            return 0
        path = self.cache_dir / f"{sha256}{self.suffix}"
        if not path.exists() or sha256_file(path) != sha256:
            blob = data()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(blob)
            tmp.replace(path)
        sent = int(self.client.upload(path, sha256=sha256).bytes_sent)
        self.last_wire_bytes = _wire_bytes(path, sent, self.compression, self.client.chunk_bytes)
        return sent

    def measure(self, sha256: str, runtime: str, input_shape: Sequence[int], settings: MeasureSettings) -> Measurement:
        self.suffix = RUNTIME_SUFFIX.get(runtime, ".bin")
        from host.client import (
            AgentModelError,
            AgentRequestError,
            AgentTimeoutError,
            ProfileRequest,
            TensorSpec,
        )

        req = ProfileRequest(
            artifact_sha256=sha256, runtime=runtime, device=self.device,
            inputs=[TensorSpec(shape=(1, *input_shape))], threads=settings.threads,
            warmup_runs=settings.warmup_runs, repeats=settings.repeats, min_time_s=settings.min_time_s,
            deadline_s=settings.deadline_s,
        )
        try:
            r = self.client.profile(req)
        except (AgentModelError, AgentTimeoutError, AgentRequestError) as exc:
            raise MeasurementFailed(str(exc)) from exc
        ctx = {
            "threads": r.context.threads, "cpu_affinity": list(r.context.cpu_affinity),
            "cpu_freq_khz": dict(r.context.cpu_freq_khz), "runtime_versions": dict(r.context.runtime_versions),
            "device": r.context.device, "queue_wait_us": r.queue_wait_us, "load_time_ms": r.load_time_ms,
            "measure_time_s": r.measure_time_s,
        }
        if settings.clock == "thread_cpu":  # the agent reports the worker thread's CPU time of every run too
            cpu = np.array(getattr(r, "thread_cpu_samples_ns", ()) or (), dtype=np.float64) / 1000.0
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


def _wire_bytes(path: Path, sent: int, compression: str | None, chunk_bytes: int) -> int:
    """Payload bytes on the wire: ``sent`` uncompressed, else the per-message compressed size (gRPC
    compresses each upload chunk message on its own, so each chunk is compressed separately here)."""
    if not compression or compression == "none" or sent == 0:
        return sent
    import zlib

    data = path.read_bytes()[-sent:]
    return sum(len(zlib.compress(data[i : i + chunk_bytes], 6)) for i in range(0, len(data), chunk_bytes))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def measurement_latency(m: Measurement, stat: str = "p10") -> float:
    """A :class:`Measurement`'s latency under ``stat`` (see :func:`row_latency`)."""
    row = {"latency_median_us": m.latency_median_us, "latency_min_us": m.latency_min_us,
           "latency_mean_us": m.latency_mean_us, "samples_us": json.dumps(list(m.samples_us))}
    return row_latency(row, stat)


class LiveDeviceMeasurer:
    """Measure candidate subnets on a device for live search (``host.profiling.budget.LiveMeasurer``).

    Each candidate is built once (extraction + export) and uploaded once (content-addressed); ``stat`` must
    match the statistic the device's profile was fitted with so measured and predicted figures compare.
    """

    def __init__(self, builder: SubnetBuilder, measurer: Measurer, input_shape: Sequence[int],
                 settings: MeasureSettings | None = None, stat: str = "p10") -> None:
        self.builder = builder
        self.measurer = measurer
        self.input_shape = tuple(input_shape)
        self.settings = settings or MeasureSettings()
        self.stat = stat
        self._artifacts: dict[str, BuiltArtifact] = {}
        self.measurements = 0
        self.bytes_sent = 0
        self.host_seconds = 0.0
        self.device_seconds = 0.0

    def __call__(self, gates: Sequence[torch.Tensor]) -> tuple[float, float]:
        t0 = time.perf_counter()
        gsha = gates_sha256(gates)
        built = self._artifacts.get(gsha)
        if built is None:
            built = self.builder(list(gates))
            self._artifacts[gsha] = built
        t1 = time.perf_counter()
        self.bytes_sent += self.measurer.ensure_artifact(built.artifact_sha256, lambda: built.data)
        try:
            m = self.measurer.measure(built.artifact_sha256, self.builder.runtime, self.input_shape, self.settings)
        except MeasurementFailed as exc:
            raise CampaignError(f"measuring a candidate on the device failed: {exc}") from exc
        self.measurements += 1
        self.host_seconds += t1 - t0
        self.device_seconds += time.perf_counter() - t1
        return measurement_latency(m, self.stat), float(m.peak_bytes)
