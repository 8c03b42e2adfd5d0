"""The device side of the comparison: one device profile and one agent for all three methods.

Everything the baselines need from profiling is here, so the rest of ``host.baselines`` does not care where
the predictors, searches and agent clients live:

* :func:`load_device` — the device's fitted predictors for the supernet's gate layout;
* :func:`predict_counts` — predicted latency (ms, at the profile's latency statistic) and memory (MB) of
  compact models given as per-gated-layer active-module counts. Every model of the comparison (generated,
  retrained at a uniform width, pruned) lives in the supernet's architecture space — the gated layers'
  widths are all that differ — so the same profile predicts all of them;
* :class:`AgentMeter` — measures a compact model on a device agent the way the profile was measured
  (same runtime, same measure settings, same latency statistic) and says whether it meets a budget;
* :func:`local_agent` — starts an agent on this machine for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from host.errors import AgentError

MB = 1e6


def load_device(device: str, layout: Any, profiles_root: Path | None = None) -> Any:
    """The device's predictor for ``layout`` (a ``DevicePredictor``); ConfigError when it has none."""
    from host.profiling.device_profile import load_predictor, safe_device_id

    return load_predictor(safe_device_id(device), layout, root=profiles_root)


def latency_statistic(predictor: Any) -> str:
    """The statistic of each model's timed runs that the profile's latency means (e.g. ``p90``)."""
    pct = getattr(predictor, "percentile", None)
    return str(pct or predictor.entry.get("latency_statistic", "p10"))


def predict_counts(predictor: Any, counts: np.ndarray | Sequence[Sequence[int]], *, bound: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (latency_ms, memory_mb) of models with these active-module counts, shape (N, layers).

    ``bound=True``: the estimates plus the profile's calibrated margin, when it has one — what a budget is
    held to (by NN-Factory's search and, here, by the baselines' sizing alike).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    fn = getattr(predictor, "bound_counts", None) if bound else None
    lat_us, mem_b = (fn or predictor.predict_counts)(c)
    return np.asarray(lat_us, dtype=np.float64) / 1000.0, np.asarray(mem_b, dtype=np.float64) / MB


def measure_settings(predictor: Any) -> Any:
    """The agent request settings the profile was measured with (so measured and predicted compare)."""
    from host.profiling.plan import MeasureSettings

    known = MeasureSettings.__dataclass_fields__
    stored = predictor.entry.get("measure")
    if isinstance(stored, dict):
        return MeasureSettings(**{k: v for k, v in stored.items() if k in known})
    return MeasureSettings()


def model_bytes(model: torch.nn.Module, input_shape: Sequence[int], runtime: str) -> bytes:
    """Serialise a compact model for an agent runtime (TorchScript in memory; others via host.exports)."""
    from host.profiling.build import format_for_runtime, torchscript_bytes

    if runtime == "torchscript":
        return torchscript_bytes(model.eval(), input_shape)
    fmt = format_for_runtime(runtime)
    from host.exports import export_artifact

    with tempfile.TemporaryDirectory(prefix="nnf-baseline-") as tmp:
        out = Path(tmp) / f"model{fmt.suffix}"
        export_artifact(model.eval(), fmt.name, out, verify_samples=2)
        return out.read_bytes()


def generate_for_budget(factory: Any, task: str, device: str, budget: Any, predictor: Any) -> tuple[Any, dict]:
    """NN-Factory's model for a budget: the predictor search + extraction (``host.profiling.budget``), nothing saved.

    ``budget``: a ``host.baselines.models.ScenarioBudget``. Returns (compact model, the search's report).
    """
    from host.profiling.budget import Budget, generate_for_device

    return generate_for_device(factory, task, device, Budget(latency_ms=budget.latency_ms, memory_mb=budget.memory_mb),
                               predictor=predictor)


@dataclass
class Measured:
    """One model measured on the agent."""

    latency_ms: float  # at the profile's latency statistic
    memory_mb: float  # peak bytes / 1e6
    statistic: str
    median_ms: float
    runs: int
    artifact_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": round(self.latency_ms, 4), "memory_mb": round(self.memory_mb, 3),
                "latency_statistic": self.statistic, "median_ms": round(self.median_ms, 4), "runs": self.runs,
                "artifact_sha256": self.artifact_sha256}


class AgentMeter:
    """Measure compact models on a device agent with the profile's runtime, settings and statistic."""

    def __init__(self, address: str, predictor: Any, *, token: str | None = None) -> None:
        from host.profiling.measurers import AgentMeasurer

        self.address = address
        self.runtime = str(predictor.runtime)
        self.settings = measure_settings(predictor)
        self.statistic = latency_statistic(predictor)
        self._measurer = AgentMeasurer(address, token=token)

    def close(self) -> None:
        self._measurer.close()

    def __enter__(self) -> AgentMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def device_info(self) -> dict:
        return self._measurer.device_info()

    def measure(self, model: torch.nn.Module, input_shape: Sequence[int]) -> Measured:
        from host.profiling.measurers import MeasurementFailed, measurement_latency

        data = model_bytes(model, input_shape, self.runtime)
        sha = hashlib.sha256(data).hexdigest()
        self._measurer.ensure_artifact(sha, lambda: data)
        try:
            m = self._measurer.measure(sha, self.runtime, tuple(input_shape), self.settings)
        except MeasurementFailed as exc:
            raise AgentError(f"measuring a model on agent {self.address} failed: {exc}") from exc
        return Measured(
            latency_ms=measurement_latency(m, self.statistic) / 1000.0, memory_mb=float(m.peak_bytes) / MB,
            statistic=self.statistic, median_ms=float(m.latency_median_us) / 1000.0, runs=int(m.runs),
            artifact_sha256=sha,
        )


@contextlib.contextmanager
def local_agent(cache_dir: Path | None = None) -> Iterator[tuple[str, str | None]]:
    """An agent on this machine (``agent.launch``, any free loopback port) for the ``with`` block.

    Yields ``(HOST:PORT, token)``. The agent measures with its defaults (a child forked per request at
    nice -20, the device-wide lock) and is stopped when the block ends.
    """
    from agent.launch import LaunchError
    from agent.launch import local_agent as launch
    from host.client import AgentClient

    with tempfile.TemporaryDirectory(prefix="nnf-baselines-agent-") as tmp, contextlib.ExitStack() as stack:
        try:  # a private loopback agent with its own token (generated in its state directory)
            agent = stack.enter_context(launch(cache_dir=cache_dir or Path(tmp) / "cache",
                                               state_dir=Path(tmp) / "state"))
        except LaunchError as exc:
            raise AgentError(f"the local agent did not start: {exc}") from None
        with AgentClient(agent.address, token=agent.token, timeout_s=60.0) as client:
            client.wait_ready(60.0)
        yield agent.address, agent.token
