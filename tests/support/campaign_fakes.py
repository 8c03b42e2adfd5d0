"""Test doubles for campaigns: a deterministic builder and an in-memory 'device' with a known latency law.

Used by tests/test_campaign.py, also from a subprocess that is killed mid-campaign.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from host.errors import AgentError
from host.gates import GatedLayer, GateLayout
from host.profiling.build import BuiltArtifact
from host.profiling.measurers import Measurement, MeasurementFailed, Upload
from host.profiling.plan import MeasureSettings

LAYOUT = GateLayout(
    "resnet",
    "fake_campaign",
    (
        GatedLayer("l1.conv1", 16, 10, 100, (8, 8), "conv"),
        GatedLayer("l2.conv1", 32, 10, 100, (4, 4), "conv"),
        GatedLayer("l3.conv1", 24, 10, 100, (4, 4), "conv", inputs_from=("l2.conv1",)),
    ),
)
TRUE_COEF = np.array([400.0, 3.0, 2.0, 5.0])  # bias, per-module µs of each layer


class FakeBuilder:
    runtime = "torchscript"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.built = 0
        self.delay_s = delay_s
        self.busy = threading.Event()

    def __call__(self, gates: Sequence[torch.Tensor]) -> BuiltArtifact:
        self.busy.set()
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            self.built += 1
            counts = [int(g.sum()) for g in gates]
            data = json.dumps({"counts": counts, "bits": [g.int().tolist() for g in gates]}).encode() * 20
            return BuiltArtifact(data, hashlib.sha256(data).hexdigest(), sum(counts) * 400, max(counts) * 256, sum(counts) * 1000)
        finally:
            self.busy.clear()


class FakeDevice:
    """Latency = TRUE_COEF · [1, counts] × drift(t) × noise; memory = 1e6 + 1.2·params + 1.5·act."""

    def __init__(self, name: str = "fake", *, noise: float = 0.0, drift_per_job: float = 0.0, delay_s: float = 0.0,
                 fail_after: int | None = None, log: Callable[[str], None] | None = None, seed: int = 0,
                 builder: FakeBuilder | None = None, transient: Callable[[int, list[int]], bool] | None = None) -> None:
        self.name = name
        self.transient = transient  # (call number, counts) -> fail this request transiently?
        self.calls = 0
        self.blobs: dict[str, bytes] = {}
        self.uploaded_bytes = 0
        self.measured = 0
        self.noise = noise
        self.drift_per_job = drift_per_job
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.log = log
        self.rng = np.random.default_rng(seed)
        self.active = 0
        self.overlaps = 0
        self.builder = builder
        self.host_overlaps = 0
        self._lock = threading.Lock()

    def device_info(self) -> dict:
        return {"hostname": f"host-{self.name}", "cpu_model": "FakeCPU", "machine": "x86_64", "logical_cores": 2}

    def has_artifact(self, sha256: str) -> bool:
        return sha256 in self.blobs

    def ensure_artifact(self, sha256: str, data: Callable[[], bytes]) -> Upload:
        if sha256 in self.blobs:
            return Upload()
        blob = data()
        assert hashlib.sha256(blob).hexdigest() == sha256
        self.blobs[sha256] = blob
        self.uploaded_bytes += len(blob)
        return Upload(len(blob), len(blob))

    def close(self) -> None:
        pass

    def measure(self, sha256: str, runtime: str, input_shape, settings: MeasureSettings) -> Measurement:
        with self._lock:
            self.active += 1
            if self.active > 1:
                self.overlaps += 1
        try:
            if self.builder is not None and self.builder.busy.is_set():
                self.host_overlaps += 1
            if self.fail_after is not None and self.measured >= self.fail_after:
                raise AgentError(f"agent {self.name} is unreachable (UNAVAILABLE)")
            info = json.loads(self.blobs[sha256][: len(self.blobs[sha256]) // 20])
            self.calls += 1
            if self.transient is not None and self.transient(self.calls, info["counts"]):
                raise MeasurementFailed("Profile on agent fake: DEADLINE_EXCEEDED: deadline passed while waiting for "
                                        "the device", final=False)
            if info["counts"] == [0, 0, 0]:
                raise MeasurementFailed("model crashed", final=True)
            counts = np.array([1.0, *info["counts"]])
            lat = float(TRUE_COEF @ counts) * (1.0 + self.drift_per_job * self.measured)
            if self.noise:
                lat *= float(self.rng.normal(1.0, self.noise))
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.builder is not None and self.builder.busy.is_set():
                self.host_overlaps += 1
            self.measured += 1
            if self.log is not None:
                self.log(sha256)
            params = sum(info["counts"]) * 400
            act = max(info["counts"]) * 256
            return Measurement(lat, lat * 0.95, lat, lat * 1.1, lat * 0.02, 20, int(1e6 + 1.2 * params + 1.5 * act),
                               "VMHWM_RESET", {"threads": 1})
        finally:
            with self._lock:
                self.active -= 1


def synthetic_entry(layout: GateLayout, latency, memory, structure, *, backbone: str = "resnet",
                    runtime: str = "torchscript", latency_margin: float = 0.0, memory_margin: float = 0.0,
                    measure: dict | None = None, references: dict | None = None) -> dict:
    """A device-profile entry (version 2) with given models: a synthetic device law for tests."""
    margin = lambda v: {"value": v, "coverage": 0.99, "n": 100, "order_statistic": 100, "guaranteed": True}  # noqa: E731
    block = {"latency": latency.to_json(), "variant": latency.schema.variant, "models": {}, "accuracy": {},
             "margin": margin(latency_margin)}
    entry = {"backbone": backbone, "config": layout.config, "layout_fingerprint": layout.fingerprint(),
             "runtime": runtime, "percentiles": {p: block for p in ("p50", "p90", "p99")}, "default_percentile": "p90",
             "memory": memory.to_json(), "memory_margin": margin(memory_margin), "structure": structure.to_json(),
             "references": references, "fit_mix": {"train": {}, "test": {}}, "fitted_at": "synthetic"}
    if measure is not None:
        entry["measure"] = measure
    return entry
