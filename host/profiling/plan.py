"""Campaign plans: which subnets a campaign measures, in which order (a pure function of the plan).

A campaign is fully described by its :class:`CampaignPlan` (backbone config, gate-layout fingerprint,
sample count, seed, ratio spread, passes, reference schedule, runtime and measuring settings). Sample
``i``'s gate vector is a pure function of ``(seed, i)``, so the plan stored in the campaign's store is
enough to rebuild every job; re-running the same command resumes.

* **spread**: each sample draws an activation ratio uniform in ``[ratio_min, ratio_max]`` and then varies
  every layer's keep ratio independently by ``± jitter`` (``host.gates.random_gates``), so per-layer
  counts are decorrelated and the per-layer predictor is identifiable;
* **shuffled order**: every pass visits the samples in its own seeded random order, so slow drift of the
  device (an in-order campaign drifted −6 % → +3 %) becomes noise instead of bias;
* **reference subnets** (full model, 50 %, 25 %) are re-measured every ``reference_every`` samples through
  the same path; their level over time is the drift report, and can optionally correct the samples;
* **passes**: ``passes=3`` measures every sample three times in three independently shuffled orders and
  the fit uses the median.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from host.errors import ConfigError
from host.gates import GateLayout, random_gates

REFERENCE_RATIOS = (1.0, 0.5, 0.25)


@dataclass(frozen=True)
class MeasureSettings:
    """What the agent is asked to do per subnet (fields of the agent's ProfileRequest)."""

    threads: int = 1
    warmup_runs: int = 5
    repeats: int = 30
    min_time_s: float = 0.5
    deadline_s: float = 120.0
    # "wall": perf_counter around each run (what a user of an idle device sees); "thread_cpu": the worker
    # thread's CPU time per run (reported by the agent next to the wall time), immune to preemption by other
    # processes on a shared machine; with threads=1 it approximates the idle-device wall time.
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "thread_cpu"):
            raise ConfigError(f"unknown clock {self.clock!r}; use 'wall' or 'thread_cpu'")
        if self.threads < 1 or self.repeats < 1 or self.warmup_runs < 0 or self.min_time_s < 0:
            raise ConfigError("threads >= 1, repeats >= 1, warmup >= 0 and min_time_s >= 0 are required")


@dataclass(frozen=True)
class CampaignPlan:
    backbone: str
    layout_fingerprint: str
    runtime: str
    input_shape: tuple[int, ...]
    samples: int = 2000
    seed: int = 0
    ratio_min: float = 0.05
    ratio_max: float = 1.0
    jitter: float = 0.3
    passes: int = 1
    reference_every: int = 50
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    # "real": the supernet's weights; "constant": every weight zero (BN variance one). Latency and memory do
    # not depend on weight values, and constant artifacts compress to a few KB on the wire.
    weights: str = "real"

    def __post_init__(self) -> None:
        if self.weights not in ("real", "constant"):
            raise ConfigError(f"weights must be 'real' or 'constant', got {self.weights!r}")
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if not 0 <= self.ratio_min <= self.ratio_max <= 1:
            raise ConfigError(f"need 0 <= ratio_min <= ratio_max <= 1, got {self.ratio_min}, {self.ratio_max}")
        if self.passes < 1:
            raise ConfigError(f"--passes must be >= 1, got {self.passes}")
        if self.reference_every < 0:
            raise ConfigError("reference_every must be >= 0 (0 = no reference subnets)")

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> CampaignPlan:
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        d["measure"] = MeasureSettings(**d["measure"])
        return cls(**d)


def sample_gates(plan: CampaignPlan, layout: GateLayout, index: int) -> list[torch.Tensor]:
    """The gate vector of sample ``index``: a pure function of (seed, index)."""
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 + index + 1)
    ratio = plan.ratio_min + (plan.ratio_max - plan.ratio_min) * torch.rand((), generator=g).item()
    return random_gates(layout, ratio, generator=g, per_layer_jitter=plan.jitter)


def reference_gates(plan: CampaignPlan, layout: GateLayout, ref: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 - 7919 * (ref + 1))
    return random_gates(layout, REFERENCE_RATIOS[ref], generator=g)


@dataclass(frozen=True)
class Job:
    kind: str  # "sample" | "ref"
    pass_no: int
    index: int  # sample index, or reference id
    seq: int  # position in the device's schedule (unique per job)

    @property
    def key(self) -> tuple[str, int, int, int]:
        return (self.kind, self.pass_no, self.index, self.seq)


def schedule(plan: CampaignPlan) -> list[Job]:
    """Every job of the campaign in the order it is measured (deterministic from the plan)."""
    jobs: list[Job] = []
    seq = 0
    n_refs = len(REFERENCE_RATIOS) if plan.reference_every > 0 else 0

    def refs() -> None:
        nonlocal seq
        for r in range(n_refs):
            jobs.append(Job("ref", 0, r, seq))
            seq += 1

    for p in range(plan.passes):
        order = np.random.default_rng([plan.seed, p, 17]).permutation(plan.samples)
        for pos, idx in enumerate(order.tolist()):
            if n_refs and pos % plan.reference_every == 0:
                refs()
            jobs.append(Job("sample", p, int(idx), seq))
            seq += 1
    if n_refs:
        refs()
    return jobs
