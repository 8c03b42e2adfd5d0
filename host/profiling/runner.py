"""The campaign runner: measure every missing job of a plan on one or several devices.

Devices: one store and one worker thread per device; each device has its own queue and runs one
measurement at a time. When host and agent share this machine (a ``local`` target), host work (extraction,
export) and measurements are serialised under one machine-wide lock so they never overlap.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from host.errors import AgentError, CampaignError, ConfigError
from host.gates import GateLayout
from host.profiling.build import BuiltArtifact, SubnetBuilder, gates_sha256
from host.profiling.data import drift_levels
from host.profiling.measurers import MeasurementFailed, Measurer
from host.profiling.plan import CampaignPlan, Job, reference_gates, sample_gates, schedule
from host.profiling.store import CampaignStore


@dataclass
class DeviceTarget:
    name: str
    measurer: Measurer
    store: CampaignStore
    local: bool = True


@dataclass
class DeviceSummary:
    device: str
    jobs_total: int
    already_done: int
    measured_now: int
    failed_now: int
    seconds: float
    host_seconds_per_subnet: float
    profile_seconds_per_subnet: float
    bytes_sent_per_sample: float
    wire_bytes_per_sample: float
    artifact_bytes_mean: float
    latency_median_us: float
    drift: dict

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class CampaignRunner:
    """Run one plan on one or several devices (one thread and one queue per device)."""

    def __init__(
        self,
        plan: CampaignPlan,
        layout: GateLayout,
        builder: SubnetBuilder,
        *,
        progress: bool = True,
        max_consecutive_failures: int = 5,
    ) -> None:
        if layout.fingerprint() != plan.layout_fingerprint:
            raise CampaignError("the supernet's gate layout does not match the campaign plan's fingerprint")
        self.plan = plan
        self.layout = layout
        self.builder = builder
        self.progress = progress
        self.max_consecutive_failures = max_consecutive_failures
        self._machine_lock = threading.Lock()  # host work + local measurements never overlap
        self._build_lock = threading.Lock()  # the builder (one supernet) is used by one thread at a time

    def gates_for(self, job: Job) -> list[torch.Tensor]:
        if job.kind == "ref":
            return reference_gates(self.plan, self.layout, job.index)
        return sample_gates(self.plan, self.layout, job.index)

    def run(self, targets: Sequence[DeviceTarget], *, stop_after: int | None = None) -> list[DeviceSummary]:
        """Measure every missing job on every target. ``stop_after``: at most this many new jobs per device."""
        if not targets:
            raise ConfigError("no device to profile")
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"device names must be unique, got {names}")
        any_local = any(t.local for t in targets)
        for t in targets:
            t.store.bind_plan(self.plan, self.layout)
            self._check_device(t)
        if len(targets) == 1:
            return [self._run_device(targets[0], 0, any_local, stop_after)]
        results: list[DeviceSummary | BaseException | None] = [None] * len(targets)

        def work(i: int, t: DeviceTarget) -> None:
            try:
                results[i] = self._run_device(t, i, any_local, stop_after)
            except BaseException as exc:  # re-raised in the caller's thread below
                results[i] = exc

        threads = [threading.Thread(target=work, args=(i, t), name=f"campaign-{t.name}") for i, t in enumerate(targets)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return [r for r in results if isinstance(r, DeviceSummary)]

    def _check_device(self, t: DeviceTarget) -> None:
        info = t.measurer.device_info()
        ident = {k: info.get(k) for k in ("hostname", "cpu_model", "machine")}
        stored = t.store.get_meta("device_ident")
        if stored is None:
            t.store.set_meta("device_ident", ident)
            t.store.set_meta("device_info", info)
            t.store.set_meta("device_name", t.name)
        elif stored != ident:
            raise CampaignError(
                f"campaign store {t.store.path} was measured on {stored}, but the agent for {t.name!r} reports "
                f"{ident}: mixing devices in one campaign would corrupt the profile; use another --store"
            )

    def _build(self, gates: list[torch.Tensor], gsha: str, t: DeviceTarget) -> tuple[dict, BuiltArtifact | None]:
        known = t.store.artifact(gsha, self.builder.runtime)
        if known is not None and t.measurer.has_artifact(known["artifact_sha256"]):
            return known, None
        with self._build_lock:
            built = self.builder(gates)
        facts = built.facts()
        t.store.remember_artifact(gsha, self.builder.runtime, facts)
        return facts, built

    def _run_device(self, t: DeviceTarget, position: int, any_local: bool, stop_after: int | None) -> DeviceSummary:
        jobs = schedule(self.plan)
        done = t.store.done_keys()
        todo = [j for j in jobs if j.key not in done]
        already = len(jobs) - len(todo)
        if stop_after is not None:
            todo = todo[:stop_after]
        host_lock = self._machine_lock if any_local else contextlib.nullcontext()
        measure_lock = self._machine_lock if t.local else contextlib.nullcontext()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), initial=already,
                       desc=f"profile {t.name}", unit="subnet", position=position, leave=True, dynamic_ncols=True)
        t0 = time.perf_counter()
        host_s: list[float] = []
        prof_s: list[float] = []
        failed = 0
        consecutive = 0
        try:
            for job in todo:
                th = time.perf_counter()
                with host_lock:
                    gates = self.gates_for(job)
                    gsha = gates_sha256(gates)
                    facts, built = self._build(gates, gsha, t)
                    counts = [int(g.sum().item()) for g in gates]
                host_seconds = time.perf_counter() - th
                tp = time.perf_counter()
                try:
                    with measure_lock:
                        data_fn = (lambda b=built: b.data) if built is not None else _missing_data(facts)
                        sent = t.measurer.ensure_artifact(facts["artifact_sha256"], data_fn)
                        m = t.measurer.measure(
                            facts["artifact_sha256"], self.builder.runtime, self.plan.input_shape, self.plan.measure
                        )
                except MeasurementFailed as exc:
                    failed += 1
                    consecutive += 1
                    t.store.record_failure(job, str(exc))
                    if consecutive >= self.max_consecutive_failures:
                        raise CampaignError(
                            f"{consecutive} measurements in a row failed on {t.name} (last: {exc}); "
                            "check the agent, then re-run the same command to resume"
                        ) from exc
                    continue
                except AgentError as exc:
                    raise CampaignError(
                        f"lost the agent of {t.name} ({exc}); every finished measurement is stored in "
                        f"{t.store.path}: restart the agent and re-run the same command to resume"
                    ) from exc
                profile_seconds = time.perf_counter() - tp
                consecutive = 0
                tb = time.perf_counter()
                row = {
                    "counts": json.dumps(counts),
                    "gates_sha256": gsha,
                    "latency_median_us": m.latency_median_us,
                    "latency_min_us": m.latency_min_us,
                    "latency_mean_us": m.latency_mean_us,
                    "latency_p90_us": m.latency_p90_us,
                    "latency_std_us": m.latency_std_us,
                    "runs": m.runs,
                    "peak_bytes": m.peak_bytes,
                    "peak_method": m.peak_method,
                    "param_bytes": facts["param_bytes"],
                    "peak_activation_bytes": facts["peak_activation_bytes"],
                    "macs": facts["macs"],
                    "artifact_sha256": facts["artifact_sha256"],
                    "artifact_bytes": facts["artifact_bytes"],
                    "bytes_sent": int(sent),
                    "wire_bytes": int(getattr(t.measurer, "last_wire_bytes", sent)) if sent else 0,
                    "host_seconds": 0.0,
                    "profile_seconds": profile_seconds,
                    "measured_unix": time.time(),
                    "context": json.dumps(m.context, sort_keys=True),
                    "samples_us": json.dumps([round(float(v), 1) for v in m.samples_us]),
                }
                with host_lock:
                    row["host_seconds"] = host_seconds + (time.perf_counter() - tb)
                    t.store.record(job, row)  # committed before the next request is sent
                host_s.append(row["host_seconds"])
                prof_s.append(profile_seconds)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(lat_ms=f"{m.latency_median_us / 1000:.2f}", host_s=f"{np.median(host_s):.2f}")
        finally:
            if bar is not None:
                bar.close()
        return self.summarise(t, len(jobs), already, len(host_s), failed, time.perf_counter() - t0,
                              host_s, prof_s)

    def summarise(self, t: DeviceTarget, total: int, already: int, measured: int, failed: int, seconds: float,
                  host_s: list[float], prof_s: list[float]) -> DeviceSummary:
        rows = t.store.rows("sample") + t.store.rows("ref")
        lat = [r["latency_median_us"] for r in rows if r["kind"] == "sample"]
        sent = [r["bytes_sent"] for r in rows]
        seqs, levels = drift_levels(t.store)
        drift = {
            "reference_rounds": int(len(levels)),
            "range": float(levels.max() - levels.min()) if len(levels) else 0.0,
            "first": float(levels[0]) if len(levels) else 1.0,
            "last": float(levels[-1]) if len(levels) else 1.0,
        }
        return DeviceSummary(
            device=t.name,
            jobs_total=total,
            already_done=already,
            measured_now=measured,
            failed_now=failed,
            seconds=seconds,
            host_seconds_per_subnet=float(np.mean(host_s)) if host_s else float("nan"),
            profile_seconds_per_subnet=float(np.mean(prof_s)) if prof_s else float("nan"),
            bytes_sent_per_sample=float(np.mean(sent)) if sent else 0.0,
            wire_bytes_per_sample=float(np.mean([r["wire_bytes"] if r.get("wire_bytes") is not None else r["bytes_sent"]
                                                 for r in rows])) if rows else 0.0,
            artifact_bytes_mean=float(np.mean([r["artifact_bytes"] for r in rows])) if rows else 0.0,
            latency_median_us=float(np.median(lat)) if lat else float("nan"),
            drift=drift,
        )


def _missing_data(facts: dict) -> Callable[[], bytes]:
    def fail() -> bytes:
        raise CampaignError(
            f"artifact {facts['artifact_sha256'][:12]} vanished from the agent between check and use; re-run to rebuild it"
        )

    return fail
