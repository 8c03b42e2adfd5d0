"""The campaign runner: measure every missing job of a plan on one or several devices.

Devices: one store and one worker thread per device; each device has its own queue and runs one
measurement at a time. When host and agent share this machine (a ``local`` target), host work (extraction,
export) and measurements are serialised under one machine-wide lock so they never overlap.

Failures: a model that fails by itself (load error, out of memory, crash) is stored as that job's final
result; a request that fails (deadline, busy agent, evicted artifact) is stored as a transient failure, retried
after the other jobs (``retry_rounds``) and, if it still fails, on the next run. Too many failures in a row
stop the campaign (the agent is probably unwell); an agent that cannot be reached stops it at once. Either
way every finished measurement is stored and re-running the same command resumes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from host.errors import AgentError, CampaignError, ConfigError
from host.gates import GateLayout
from host.profiling.build import BuiltArtifact, SubnetBuilder, gates_sha256
from host.profiling.data import drift_levels
from host.profiling.measurers import Measurement, MeasurementFailed, Measurer, measurement_json
from host.profiling.plan import CampaignPlan, GateGenerator, Job, Sampler, schedule
from host.profiling.store import Bind, CampaignStore, MeasurementRow


@dataclass
class DeviceTarget:
    name: str
    measurer: Measurer
    store: CampaignStore
    local: bool = True


@dataclass
class DeviceSummary:
    device: str
    plan: str  # "new" | "resumed" | "grown" | "replanned" (host.profiling.store.Bind)
    samples: int
    jobs_total: int
    already_done: int
    measured_now: int
    failed_now: int  # final failures (the model failed)
    transient_now: int  # request failures of this run (each retried up to retry_rounds times)
    left_to_retry: int  # jobs whose last attempt failed transiently: measured again on the next run
    seconds: float
    host_seconds_per_subnet: float
    profile_seconds_per_subnet: float
    bytes_sent_per_sample: float
    wire_bytes_per_sample: float
    artifact_bytes_mean: float
    latency_median_us: float
    drift: dict
    mix: dict  # measured samples per source

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class _Progress:
    measured: int = 0
    final: int = 0
    transient: int = 0
    consecutive: int = 0
    host_s: list[float] = field(default_factory=list)
    prof_s: list[float] = field(default_factory=list)


class CampaignRunner:
    """Run one plan on one or several devices (one thread and one queue per device).

    generator: the module assembler generated samples are drawn from (only needed while a store lacks the
    gates of some generated sample it must measure). retry_rounds: how often a run retries the jobs that
    failed transiently, after the others.
    """

    def __init__(
        self,
        plan: CampaignPlan,
        layout: GateLayout,
        builder: SubnetBuilder,
        *,
        generator: GateGenerator | None = None,
        progress: bool = True,
        max_consecutive_failures: int = 5,
        retry_rounds: int = 2,
    ) -> None:
        if layout.fingerprint() != plan.layout_fingerprint:
            raise CampaignError("the supernet's gate layout does not match the campaign plan's fingerprint")
        self.plan = plan
        self.layout = layout
        self.builder = builder
        self.generator = generator
        self.progress = progress
        self.max_consecutive_failures = max_consecutive_failures
        self.retry_rounds = retry_rounds
        self._machine_lock = threading.Lock()  # host work + local measurements never overlap
        self._build_lock = threading.Lock()  # the builder (one supernet) is used by one thread at a time

    def sampler(self, plan: CampaignPlan, store: CampaignStore) -> Sampler:
        """The gates of every job of ``plan``, generated ones kept in ``store``."""
        return Sampler(plan, self.layout, self.generator, lookup=lambda i: store.generated(i, self.layout),
                       remember=store.remember_generated)

    def run(self, targets: Sequence[DeviceTarget], *, stop_after: int | None = None) -> list[DeviceSummary]:
        """Measure every missing job on every target. ``stop_after``: at most this many new jobs per device."""
        if not targets:
            raise ConfigError("no device to profile")
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"device names must be unique, got {names}")
        any_local = any(t.local for t in targets)
        bound: list[tuple[CampaignPlan, Bind]] = []
        for t in targets:
            self._check_device(t)
            plan, how = t.store.bind_plan(self.plan, self.layout)
            todo = [j.index for j in self._todo(plan, t.store) if j.kind == "sample"]
            if self.generator is None and self.sampler(plan, t.store).needs_generator(todo):
                raise CampaignError(
                    f"the campaign of {t.name} samples generated models and none is loaded: pass the checkpoint "
                    "whose assembler to sample (--checkpoint DIR, or --space NAME for the one shipped for it)"
                )
            bound.append((plan, how))
        if len(targets) == 1:
            return [self._run_device(targets[0], *bound[0], 0, any_local, stop_after)]
        results: list[DeviceSummary | BaseException | None] = [None] * len(targets)

        def work(i: int, t: DeviceTarget) -> None:
            try:
                results[i] = self._run_device(t, *bound[i], i, any_local, stop_after)
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

    @staticmethod
    def _todo(plan: CampaignPlan, store: CampaignStore) -> list[Job]:
        done = store.done_keys()
        return [j for j in schedule(plan) if j.key not in done]

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
        built = self.builder(gates)
        facts = built.facts()
        t.store.remember_artifact(gsha, self.builder.runtime, facts)
        return facts, built

    def _run_device(self, t: DeviceTarget, plan: CampaignPlan, how: Bind, position: int, any_local: bool,
                    stop_after: int | None) -> DeviceSummary:
        jobs = schedule(plan)
        todo = self._todo(plan, t.store)
        already = len(jobs) - len(todo)
        if stop_after is not None:
            todo = todo[:stop_after]
        sampler = self.sampler(plan, t.store)
        host_lock = self._machine_lock if any_local else contextlib.nullcontext()
        measure_lock = self._machine_lock if t.local else contextlib.nullcontext()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), initial=already,
                       desc=f"profile {t.name}", unit="subnet", position=position, leave=True, dynamic_ncols=True)
        t0 = time.perf_counter()
        p = _Progress()
        try:
            retry: list[Job] = []
            for job in todo:
                if not self._one(t, plan, sampler, job, host_lock, measure_lock, p, bar):
                    retry.append(job)
            for _ in range(self.retry_rounds):
                if not retry:
                    break
                retry = [job for job in retry if not self._one(t, plan, sampler, job, host_lock, measure_lock, p, bar)]
        finally:
            if bar is not None:
                bar.close()
        return self.summarise(t, plan, how, len(jobs), already, p, time.perf_counter() - t0)

    def _one(self, t: DeviceTarget, plan: CampaignPlan, sampler: Sampler, job: Job, host_lock, measure_lock,
             p: _Progress, bar) -> bool:
        """Measure one job and store the outcome; False when it failed transiently (worth retrying)."""
        th = time.perf_counter()
        with host_lock, self._build_lock:
            sample = sampler(job)
            gsha = gates_sha256(sample.gates)
            facts, built = self._build(sample.gates, gsha, t)
        host_seconds = time.perf_counter() - th
        tp = time.perf_counter()
        try:
            with measure_lock:
                data_fn = (lambda b=built: b.data) if built is not None else _missing_data(facts)
                upload = t.measurer.ensure_artifact(facts["artifact_sha256"], data_fn)
                m = t.measurer.measure(facts["artifact_sha256"], self.builder.runtime, plan.input_shape, plan.measure)
        except MeasurementFailed as exc:
            p.consecutive += 1
            attempts = t.store.record_failure(job, str(exc), final=exc.final)
            if exc.final:
                p.final += 1
            else:
                p.transient += 1
            if p.consecutive >= self.max_consecutive_failures:
                raise CampaignError(
                    f"{p.consecutive} measurements in a row failed on {t.name} (last, attempt {attempts}: {exc}); "
                    f"check the agent, then re-run the same command to resume"
                ) from exc
            return exc.final
        except AgentError as exc:
            raise CampaignError(
                f"lost the agent of {t.name} ({exc}); every finished measurement is stored in "
                f"{t.store.path}: restart the agent and re-run the same command to resume"
            ) from exc
        profile_seconds = time.perf_counter() - tp
        p.consecutive = 0
        tb = time.perf_counter()
        row = _row(m, sample.source, [int(g.sum().item()) for g in sample.gates], gsha, facts, upload.payload_bytes,
                   upload.wire_bytes, profile_seconds)
        with host_lock:
            row = replace(row, host_seconds=host_seconds + (time.perf_counter() - tb))
            t.store.record(job, row)  # committed before the next request is sent
        p.measured += 1
        p.host_s.append(float(row.host_seconds or 0.0))
        p.prof_s.append(profile_seconds)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(lat_ms=f"{m.latency_median_us / 1000:.2f}", host_s=f"{np.median(p.host_s):.2f}")
        return True

    def summarise(self, t: DeviceTarget, plan: CampaignPlan, how: Bind, total: int, already: int, p: _Progress,
                  seconds: float) -> DeviceSummary:
        rows = t.store.rows("sample") + t.store.rows("ref")
        samples = [r for r in rows if r["kind"] == "sample"]
        lat = [r["latency_median_us"] for r in samples]
        sent = [r["bytes_sent"] or 0 for r in rows]
        _, levels = drift_levels(t.store)
        drift = {
            "reference_rounds": int(len(levels)),
            "range": float(levels.max() - levels.min()) if len(levels) else 0.0,
            "first": float(levels[0]) if len(levels) else 1.0,
            "last": float(levels[-1]) if len(levels) else 1.0,
        }
        mix: dict[str, int] = {}
        for r in samples:
            mix[r["source"] or "uniform"] = mix.get(r["source"] or "uniform", 0) + 1
        return DeviceSummary(
            device=t.name,
            plan=how.value,
            samples=plan.samples,
            jobs_total=total,
            already_done=already,
            measured_now=p.measured,
            failed_now=p.final,
            transient_now=p.transient,
            left_to_retry=len(t.store.failures(final=False)),
            seconds=seconds,
            host_seconds_per_subnet=float(np.mean(p.host_s)) if p.host_s else float("nan"),
            profile_seconds_per_subnet=float(np.mean(p.prof_s)) if p.prof_s else float("nan"),
            bytes_sent_per_sample=float(np.mean(sent)) if sent else 0.0,
            wire_bytes_per_sample=float(np.mean([r["wire_bytes"] if r.get("wire_bytes") is not None else (r["bytes_sent"] or 0)
                                                 for r in rows])) if rows else 0.0,
            artifact_bytes_mean=float(np.mean([r["artifact_bytes"] or 0 for r in rows])) if rows else 0.0,
            latency_median_us=float(np.median(lat)) if lat else float("nan"),
            drift=drift,
            mix=dict(sorted(mix.items())),
        )


def _row(m: Measurement, source: str, counts: list[int], gsha: str, facts: dict, sent: int, wire: int,
         profile_seconds: float) -> MeasurementRow:
    return MeasurementRow(
        counts=json.dumps(counts), gates_sha256=gsha, source=source,
        latency_median_us=m.latency_median_us, latency_min_us=m.latency_min_us, latency_mean_us=m.latency_mean_us,
        latency_p90_us=m.latency_p90_us, latency_std_us=m.latency_std_us, runs=m.runs,
        peak_bytes=m.peak_bytes, peak_method=m.peak_method,
        param_bytes=facts["param_bytes"], peak_activation_bytes=facts["peak_activation_bytes"], macs=facts["macs"],
        artifact_sha256=facts["artifact_sha256"], artifact_bytes=facts["artifact_bytes"],
        bytes_sent=int(sent), wire_bytes=int(wire), host_seconds=0.0, profile_seconds=profile_seconds,
        measured_unix=time.time(), context=json.dumps(m.context, sort_keys=True), samples_us=measurement_json(m),
    )


def _missing_data(facts: dict) -> Callable[[], bytes]:
    def fail() -> bytes:  # transient: the next attempt finds the agent without it and rebuilds it
        raise MeasurementFailed(
            f"artifact {facts['artifact_sha256'][:12]} vanished from the agent between check and use", final=False
        )

    return fail
