"""Campaign plans: which subnets a campaign measures, in which order (a pure function of the plan).

A campaign is fully described by its :class:`CampaignPlan` (backbone config, gate-layout fingerprint,
sample count, seed, sample mix, ratio spread, passes, reference schedule, runtime and measuring settings).
The plan stored in the campaign's store is enough to rebuild every job; re-running the same command
resumes, and a larger ``samples`` grows the campaign (earlier jobs keep their place).

**Which subnets** (:class:`SampleMix`): every sample index is assigned one *source*, in exact proportions
within each block of :data:`MIX_BLOCK` consecutive indices (so any prefix of the campaign, and its
held-out tail, carries the mix):

* ``uniform``: an activation ratio uniform in ``[ratio_min, ratio_max]``, then every layer's keep ratio
  varied independently by ``± jitter`` (``host.gates.random_gates``): decorrelated per-layer counts;
* ``stratified``: every layer's keep fraction drawn independently from its own Latin-hypercube strata
  (blocks of :data:`STRATA` stratified samples cover each layer's ``[0, 1]`` range once per stratum), so
  no layer's range is left empty, including combinations the two other sources never produce;
* ``generated``: what the generator makes: the module assembler of a trained checkpoint, for a task of
  its task space and an activation limit on the search's grid (1 %, 2 %, …, 100 %). These gates depend on
  the checkpoint, so the runner stores them on first use (``CampaignStore.generated``) and a resumed
  campaign measures exactly what it planned, even if the checkpoint changed since.

Uniform and stratified gates are a pure function of ``(seed, index)``.

**Order**: every pass visits the samples in its own seeded random order, so slow drift of the device (an
in-order campaign drifted −6 % → +3 %) becomes noise instead of bias; ``passes=3`` measures every sample
three times in independently shuffled orders and the fit uses the median. **Reference subnets** (full
model, 50 %, 25 %) are re-measured every ``reference_every`` samples through the same path: their level
over time is the drift report, and their values become the device profile's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch

from host.errors import CampaignError, ConfigError
from host.gates import GateLayout, random_gates

REFERENCE_RATIOS = (1.0, 0.5, 0.25)
SOURCES = ("uniform", "stratified", "generated")
MIX_BLOCK = 20  # sources are assigned in exact proportions within each block of this many indices
STRATA = 10  # stratified samples: each layer's [0, 1] keep range is cut into this many strata
GENERATED_LIMITS = tuple(round(k / 100, 2) for k in range(1, 101))  # the search's limit grid


@dataclass(frozen=True)
class SampleMix:
    """Relative weights of the sample sources (normalised; zero = not used)."""

    uniform: float = 1.0
    stratified: float = 0.0
    generated: float = 0.0

    def __post_init__(self) -> None:
        w = self.weights()
        if any(not (v >= 0 and np.isfinite(v)) for v in w.values()) or sum(w.values()) <= 0:
            raise ConfigError(f"sample mix weights must be >= 0 and not all zero, got {w}")

    def weights(self) -> dict[str, float]:
        return {"uniform": self.uniform, "stratified": self.stratified, "generated": self.generated}

    def fractions(self) -> dict[str, float]:
        w = self.weights()
        total = sum(w.values())
        return {k: v / total for k, v in w.items()}

    def block_counts(self) -> dict[str, int]:
        """How many of each :data:`MIX_BLOCK` consecutive indices each source gets (largest remainder)."""
        frac = self.fractions()
        raw = {k: v * MIX_BLOCK for k, v in frac.items()}
        counts = {k: int(np.floor(v)) for k, v in raw.items()}
        for k in sorted(raw, key=lambda k: (counts[k] - raw[k], SOURCES.index(k)))[: MIX_BLOCK - sum(counts.values())]:
            counts[k] += 1
        return counts

    def describe(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.fractions().items() if v > 0)

    @classmethod
    def parse(cls, text: str) -> SampleMix:
        """``"uniform=0.4,stratified=0.2,generated=0.4"`` (weights; missing sources are 0)."""
        values: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in SOURCES:
                raise ConfigError(f"--mix {text!r}: expected SOURCE=WEIGHT,... with SOURCE one of {', '.join(SOURCES)}")
            try:
                values[name] = float(value)
            except ValueError:
                raise ConfigError(f"--mix {text!r}: weight of {name!r} is not a number") from None
        if not values:
            raise ConfigError(f"--mix {text!r}: give at least one SOURCE=WEIGHT")
        return cls(**{k: values.get(k, 0.0) for k in SOURCES})


class GateGenerator(Protocol):
    """The generator as a campaign samples it: tasks of its space and ``(task, limits (B,)) -> gates (B, D_l)``.

    ``identity``: a stable name of what produced the gates (the checkpoint's weights sha256), stored with
    every generated sample. :func:`host.profiling.budget.factory_assembler` gives the same gates the search
    sees.
    """

    tasks: Sequence[str]
    identity: str

    def __call__(self, task: str, limits: torch.Tensor) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class MeasureSettings:
    """What the agent is asked to do per subnet (fields of the agent's ProfileRequest)."""

    threads: int = 1
    warmup_runs: int = 5
    repeats: int = 30
    min_time_s: float = 1.0  # p90 of a 1 s window varied 4.9 % between requests here, of 0.5 s 8.8 %
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
    mix: SampleMix = field(default_factory=SampleMix)  # the default (uniform only) is what version-1 stores hold
    grown_from: tuple[int, ...] = ()  # earlier sizes of a grown campaign (its schedule's segments)
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
        sizes = (*self.grown_from, self.samples)
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or (self.grown_from and self.grown_from[0] < 1):
            raise ConfigError(f"grown_from {self.grown_from} must be increasing sizes below samples={self.samples}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["grown_from"] = list(self.grown_from)
        return d

    @classmethod
    def from_json(cls, d: dict) -> CampaignPlan:
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        d["measure"] = MeasureSettings(**d["measure"])
        d["mix"] = SampleMix(**d["mix"]) if "mix" in d else SampleMix()
        d["grown_from"] = tuple(d.get("grown_from", ()))
        return cls(**d)

    def same_campaign(self, other: CampaignPlan) -> list[str]:
        """Fields (other than the size) in which ``other`` describes a different campaign."""
        a, b = self.to_json(), other.to_json()
        return [k for k in a if k not in ("samples", "grown_from") and a[k] != b[k]]

    def grown_to(self, samples: int) -> CampaignPlan:
        """This campaign extended to ``samples`` (earlier jobs keep their place in the schedule)."""
        if samples < self.samples:
            raise CampaignError(f"the campaign holds {self.samples} planned samples; --samples can grow it, not "
                                f"shrink it (fit on fewer with `nnf fit --train-limit N`)")
        if samples == self.samples:
            return self
        from dataclasses import replace

        return replace(self, samples=samples, grown_from=(*self.grown_from, self.samples))

    def segments(self) -> list[tuple[int, int]]:
        """Index ranges ``[start, end)`` in the order they were planned (one per growth)."""
        bounds = [0, *self.grown_from, self.samples]
        return list(zip(bounds, bounds[1:], strict=False))


def sample_source(plan: CampaignPlan, index: int) -> str:
    """The source (``uniform`` / ``stratified`` / ``generated``) of sample ``index``."""
    return _block_sources(plan.seed, plan.mix, index // MIX_BLOCK)[index % MIX_BLOCK]


def _block_sources(seed: int, mix: SampleMix, block: int) -> list[str]:
    counts = mix.block_counts()
    names = [s for s in SOURCES for _ in range(counts[s])]
    order = np.random.default_rng([seed, block, 29]).permutation(MIX_BLOCK)
    return [names[i] for i in order.tolist()]


def _source_rank(plan: CampaignPlan, index: int) -> int:
    """How many earlier indices have the same source as ``index`` (its position within the source)."""
    src = sample_source(plan, index)
    block = index // MIX_BLOCK
    within = _block_sources(plan.seed, plan.mix, block)[: index % MIX_BLOCK].count(src)
    return block * plan.mix.block_counts()[src] + within


def sample_gates(plan: CampaignPlan, layout: GateLayout, index: int) -> list[torch.Tensor]:
    """The gate vector of a ``uniform`` or ``stratified`` sample: a pure function of (plan, index).

    ``generated`` samples come from :func:`generated_request` + the generator (see :class:`Sampler`).
    """
    source = sample_source(plan, index)
    if source == "generated":
        raise CampaignError(f"sample {index} is a generated model: its gates come from the generator (Sampler)")
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 + index + 1)
    if source == "stratified":
        return _stratified_gates(plan, layout, _source_rank(plan, index), g)
    ratio = plan.ratio_min + (plan.ratio_max - plan.ratio_min) * torch.rand((), generator=g).item()
    return random_gates(layout, ratio, generator=g, per_layer_jitter=plan.jitter)


def _stratified_gates(plan: CampaignPlan, layout: GateLayout, rank: int, g: torch.Generator) -> list[torch.Tensor]:
    """Layer l's keep fraction lies in stratum ``perm_l[rank % STRATA]`` of ``[0, 1]``; the permutations are
    independent per layer and per block of STRATA stratified samples (a Latin hypercube per block)."""
    block, pos = divmod(rank, STRATA)
    rng = np.random.default_rng([plan.seed, block, 31])
    gates = []
    for layer in layout.layers:
        stratum = int(rng.permutation(STRATA)[pos])
        frac = (stratum + torch.rand((), generator=g).item()) / STRATA
        k = int(round(frac * layer.modules))
        gate = torch.zeros(layer.modules)
        gate[torch.randperm(layer.modules, generator=g)[:k]] = 1.0
        gates.append(gate)
    return gates


def generated_request(plan: CampaignPlan, tasks: Sequence[str], index: int) -> tuple[str, float]:
    """(task, activation limit) of a generated sample: a task of the generator's space, a limit of the grid."""
    if not tasks:
        raise CampaignError("the generator offers no tasks to sample")
    rng = np.random.default_rng([plan.seed, index, 37])
    return str(tasks[int(rng.integers(len(tasks)))]), float(GENERATED_LIMITS[int(rng.integers(len(GENERATED_LIMITS)))])


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
    """Every job of the campaign in the order it is measured (deterministic from the plan).

    One segment per growth of the campaign (``plan.segments()``): each is scheduled as a campaign of its
    own (passes in their own shuffled orders, reference rounds every ``reference_every`` samples and one
    closing round), appended after the earlier ones, so growing never moves a job that may be stored.
    """
    jobs: list[Job] = []
    seq = 0
    n_refs = len(REFERENCE_RATIOS) if plan.reference_every > 0 else 0

    def refs() -> None:
        nonlocal seq
        for r in range(n_refs):
            jobs.append(Job("ref", 0, r, seq))
            seq += 1

    for k, (start, end) in enumerate(plan.segments()):
        for p in range(plan.passes):
            key = [plan.seed, p, 17] if k == 0 else [plan.seed, p, 17, k]  # segment 0: the version-1 order
            order = np.random.default_rng(key).permutation(end - start) + start
            for pos, idx in enumerate(order.tolist()):
                if n_refs and pos % plan.reference_every == 0:
                    refs()
                jobs.append(Job("sample", p, int(idx), seq))
                seq += 1
        if n_refs:
            refs()
    return jobs


@dataclass(frozen=True)
class Sample:
    """One subnet to measure: its gates and where they came from (``task``/``limit`` for generated ones)."""

    gates: list[torch.Tensor]
    source: str  # "uniform" | "stratified" | "generated" | "reference"
    task: str | None = None
    limit: float | None = None
    generator: str | None = None


class Sampler:
    """The gates of every job of a plan.

    ``generator`` is needed only for generated samples that are not stored yet; ``lookup``/``remember``
    read and write the store's table of generated gates (so they are drawn once and measured as drawn).
    """

    def __init__(self, plan: CampaignPlan, layout: GateLayout, generator: GateGenerator | None = None, *,
                 lookup: Callable[[int], Sample | None] | None = None,
                 remember: Callable[[int, Sample], None] | None = None) -> None:
        self.plan = plan
        self.layout = layout
        self.generator = generator
        self.lookup = lookup
        self.remember = remember

    def needs_generator(self, indices: Sequence[int]) -> bool:
        return any(sample_source(self.plan, i) == "generated" and (self.lookup is None or self.lookup(i) is None)
                   for i in indices)

    def __call__(self, job: Job) -> Sample:
        if job.kind == "ref":
            return Sample(reference_gates(self.plan, self.layout, job.index), "reference")
        source = sample_source(self.plan, job.index)
        if source != "generated":
            return Sample(sample_gates(self.plan, self.layout, job.index), source)
        known = self.lookup(job.index) if self.lookup is not None else None
        if known is not None:
            return known
        if self.generator is None:
            raise CampaignError(
                f"sample {job.index} of this campaign is a generated model and no generator is loaded: pass the "
                "checkpoint whose assembler to sample (--checkpoint DIR, or --space NAME for the shipped one)"
            )
        task, limit = generated_request(self.plan, self.generator.tasks, job.index)
        batched = self.generator(task, torch.tensor([limit], dtype=torch.float32))
        gates = [g[0].detach().cpu().float().clone() for g in batched]
        self.layout.check(gates, hard=True, batched=False)
        sample = Sample(gates, "generated", task, limit, self.generator.identity)
        if self.remember is not None:
            self.remember(job.index, sample)
        return sample
