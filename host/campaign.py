"""Profiling campaigns: measure many random subnets on a device and keep every result durably.

A campaign is fully described by its :class:`CampaignPlan` (backbone config, gate-layout fingerprint,
sample count, seed, ratio spread, passes, reference schedule, runtime and measuring settings). Sample
``i``'s gate vector is a pure function of ``(seed, i)``, so the plan stored in the campaign's SQLite file
is enough to rebuild every job; re-running the same command resumes.

Measurement protocol (see ../shared/MEASURED.md for the numbers behind each choice):

* **spread**: each sample draws an activation ratio uniform in ``[ratio_min, ratio_max]`` and then varies
  every layer's keep ratio independently by ``± jitter`` (``host.gates.random_gates``), so per-layer
  counts are decorrelated and the per-layer predictor is identifiable;
* **shuffled order**: every pass visits the samples in its own seeded random order, so slow drift of the
  device (an in-order campaign drifted −6 % → +3 %) becomes noise instead of bias;
* **reference subnets** (full model, 50 %, 25 %) are re-measured every ``reference_every`` samples through
  the same path; their level over time is the drift report, and can optionally correct the samples;
* **passes**: ``passes=3`` measures every sample three times in three independently shuffled orders and
  the fit uses the median (one pass gave ±10 % on 90–97 % of subnets, the median of three on 100 %).

Durability: the store is SQLite in WAL mode with ``synchronous=FULL``; each finished measurement is one
transaction, committed before the next request is sent. Rows are keyed by
``(kind, pass, index, seq)`` with a primary key, so a job is never stored twice; a crash (host killed,
agent killed) loses at most the measurement in flight, and re-running measures exactly the missing jobs.

Devices: one store and one worker thread per device; each device has its own queue and runs one
measurement at a time. When host and agent share this machine (a ``local`` target), host work (extraction,
export) and measurements are serialised under one machine-wide lock so they never overlap.

Bytes on the wire: artifacts are content-addressed (sha256); the agent is asked first, and reference
subnets, repeated passes and resumed runs re-upload nothing. Bytes actually uploaded are stored per row.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from host.errors import AgentError, CampaignError, ConfigError
from host.gates import GateLayout, random_gates

STORE_SCHEMA_VERSION = 1
REFERENCE_RATIOS = (1.0, 0.5, 0.25)


# ---- plan ---------------------------------------------------------------------------------------


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


# ---- store --------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    kind TEXT NOT NULL, pass INTEGER NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL,
    counts TEXT NOT NULL, gates_sha256 TEXT NOT NULL,
    latency_median_us REAL NOT NULL, latency_min_us REAL, latency_mean_us REAL, latency_p90_us REAL,
    latency_std_us REAL, runs INTEGER,
    peak_bytes INTEGER, peak_method TEXT,
    param_bytes INTEGER, peak_activation_bytes INTEGER, macs INTEGER,
    artifact_sha256 TEXT, artifact_bytes INTEGER, bytes_sent INTEGER, wire_bytes INTEGER,
    host_seconds REAL, profile_seconds REAL, measured_unix REAL NOT NULL, context TEXT, samples_us TEXT,
    PRIMARY KEY (kind, pass, idx, seq)
);
CREATE TABLE IF NOT EXISTS failures (
    kind TEXT NOT NULL, pass INTEGER NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL,
    message TEXT NOT NULL, at_unix REAL NOT NULL, PRIMARY KEY (kind, pass, idx, seq)
);
CREATE TABLE IF NOT EXISTS artifacts (
    gates_sha256 TEXT NOT NULL, runtime TEXT NOT NULL, artifact_sha256 TEXT NOT NULL, artifact_bytes INTEGER,
    param_bytes INTEGER, peak_activation_bytes INTEGER, macs INTEGER, PRIMARY KEY (gates_sha256, runtime)
);
"""


class CampaignStore:
    """One device's campaign in one SQLite file (WAL, synchronous=FULL, one transaction per result)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            ok = self.conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            with self.transaction():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(measurements)")}
            for col, kind in (("samples_us", "TEXT"), ("wire_bytes", "INTEGER")):  # nullable columns added later
                if col not in have:
                    self.conn.execute(f"ALTER TABLE measurements ADD COLUMN {col} {kind}")
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", STORE_SCHEMA_VERSION)
            elif int(version) != STORE_SCHEMA_VERSION:
                raise CampaignError(
                    f"campaign store {self.path} has schema version {version}; this NN-Factory reads version "
                    f"{STORE_SCHEMA_VERSION}: use a matching NN-Factory or start a new store (--store)"
                )
        except sqlite3.DatabaseError as exc:
            raise CampaignError(
                f"campaign store {self.path} is corrupt or not a campaign store ({exc}); move it away and re-run "
                "to start over, or pass another --store"
            ) from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # plan ----------------------------------------------------------------------------------------
    def bind_plan(self, plan: CampaignPlan, layout: GateLayout) -> CampaignPlan:
        """Store the plan on first use; afterwards the same command must describe the same campaign."""
        stored = self.get_meta("plan")
        if stored is None:
            with self.transaction() as c:
                c.execute("INSERT INTO meta (key, value) VALUES ('plan', ?)", (json.dumps(plan.to_json(), sort_keys=True),))
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('layout', ?)",
                    (json.dumps(layout.to_json(), sort_keys=True),),
                )
            return plan
        old = CampaignPlan.from_json(stored)
        if old != plan:
            diff = [k for k in plan.to_json() if plan.to_json()[k] != old.to_json()[k]]
            raise CampaignError(
                f"campaign store {self.path} holds a different campaign (differs in: {', '.join(diff)}); "
                "re-run with the original options to resume it, or pass a new --store"
            )
        return old

    def plan(self) -> CampaignPlan:
        stored = self.get_meta("plan")
        if stored is None:
            raise CampaignError(f"campaign store {self.path} has no campaign yet: run `nnf profile` first")
        return CampaignPlan.from_json(stored)

    def layout(self) -> GateLayout:
        stored = self.get_meta("layout")
        if stored is None:
            raise CampaignError(f"campaign store {self.path} has no gate layout: run `nnf profile` first")
        return GateLayout.from_json(stored)

    # rows ----------------------------------------------------------------------------------------
    def done_keys(self) -> set[tuple[str, int, int, int]]:
        rows = self.conn.execute("SELECT kind, pass, idx, seq FROM measurements").fetchall()
        rows += self.conn.execute("SELECT kind, pass, idx, seq FROM failures").fetchall()
        return {tuple(r) for r in rows}  # type: ignore[misc]

    def record(self, job: Job, row: dict) -> None:
        cols = ["kind", "pass", "idx", "seq", *row.keys()]
        vals = [job.kind, job.pass_no, job.index, job.seq, *row.values()]
        with self._lock, self.transaction() as c:
            c.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)

    def record_failure(self, job: Job, message: str) -> None:
        with self._lock, self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO failures (kind, pass, idx, seq, message, at_unix) VALUES (?, ?, ?, ?, ?, ?)",
                (job.kind, job.pass_no, job.index, job.seq, message[:2000], time.time()),
            )

    def artifact(self, gates_sha: str, runtime: str) -> dict | None:
        row = self.conn.execute(
            "SELECT artifact_sha256, artifact_bytes, param_bytes, peak_activation_bytes, macs FROM artifacts "
            "WHERE gates_sha256 = ? AND runtime = ?",
            (gates_sha, runtime),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("artifact_sha256", "artifact_bytes", "param_bytes", "peak_activation_bytes", "macs"), row, strict=True))

    def remember_artifact(self, gates_sha: str, runtime: str, built: dict) -> None:
        with self._lock, self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gates_sha, runtime, built["artifact_sha256"], built["artifact_bytes"], built["param_bytes"],
                 built["peak_activation_bytes"], built["macs"]),
            )

    def rows(self, kind: str = "sample") -> list[dict]:
        cur = self.conn.execute("SELECT * FROM measurements WHERE kind = ? ORDER BY seq", (kind,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def failures(self) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM failures ORDER BY seq")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def default_store_path(root: str | Path, device: str, backbone: str, runtime: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device)
    return Path(root) / safe / f"{backbone}-{runtime}.sqlite"


# ---- building artifacts -------------------------------------------------------------------------


def gates_sha256(gates: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for g in gates:
        bits = (g.detach().cpu() > 0.5).to(torch.uint8).numpy()
        h.update(len(bits).to_bytes(4, "little"))
        h.update(np.packbits(bits).tobytes())
    return h.hexdigest()


@dataclass
class BuiltArtifact:
    data: bytes
    artifact_sha256: str
    param_bytes: int
    peak_activation_bytes: int
    macs: int | None

    def facts(self) -> dict:
        return {
            "artifact_sha256": self.artifact_sha256,
            "artifact_bytes": len(self.data),
            "param_bytes": self.param_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "macs": self.macs,
        }


class SubnetBuilder(Protocol):
    """Turn one hard gate vector into a runtime artifact plus its structural facts."""

    runtime: str

    def __call__(self, gates: Sequence[torch.Tensor]) -> BuiltArtifact: ...


def torchscript_bytes(module: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """Trace a static (compact) module and serialise it as a TorchScript archive."""
    import warnings

    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export; the PyTorch agent runtime still loads it
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit\.")
        with torch.no_grad():
            traced = torch.jit.trace(module.eval(), example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


RUNTIME_FORMATS = {"torchscript": "torchscript", "torch_export": "torch-export", "onnxruntime": "onnx", "litert": "tflite"}
RUNTIME_SUFFIX = {"torchscript": ".pt", "torch_export": ".pt2", "onnxruntime": ".onnx", "litert": ".tflite"}


class ExtractingBuilder:
    """Extract the subnet from a gated supernet (``host.extraction.extract``) and export it.

    runtime "torchscript" traces with ``torch.jit.trace`` in memory (fast path); "torch_export",
    "onnxruntime" and "litert" go through ``host.exports.export_artifact`` (checked against PyTorch on one
    input). Structural facts (``param_bytes`` of float32 parameters and buffers, ``peak_activation_bytes``)
    come from the exact structure model (``host.predictor.StructureModel``, calibrated once and checked
    against real specs), which saves building each compact spec on the meta device (~50-200 ms);
    ``exact_costs=True`` reads them from each spec instead (and ``macs`` too).
    """

    def __init__(self, net: torch.nn.Module, runtime: str = "torchscript", *, exact_costs: bool = False,
                 constant_weights: bool = False) -> None:
        if runtime not in RUNTIME_FORMATS:
            raise ConfigError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_FORMATS)}")
        self.net = net.eval()
        self.runtime = runtime
        self.input_shape = tuple(net.input_shape)
        self.constant_weights = constant_weights
        self.structure = None
        if not exact_costs:
            from host.predictor import StructureModel

            model = StructureModel.calibrate(net)
            if model.max_rel_error < 1e-9:  # exact for every registered backbone; otherwise use the specs
                self.structure = model

    def _export(self, compact: torch.nn.Module) -> bytes:
        if self.runtime == "torchscript":
            return torchscript_bytes(compact, self.input_shape)
        import tempfile

        from host.exports import export_artifact

        with tempfile.TemporaryDirectory(prefix="nnf-export-") as tmp:
            out = Path(tmp) / f"model{RUNTIME_SUFFIX[self.runtime]}"
            export_artifact(compact, RUNTIME_FORMATS[self.runtime], out, verify_samples=2)
            return out.read_bytes()

    def __call__(self, gates: Sequence[torch.Tensor]) -> BuiltArtifact:
        from host.extraction import extract

        compact = extract(self.net, list(gates))
        if self.constant_weights:
            _constant_weights(compact)
        data = self._export(compact)
        if self.structure is not None:
            counts = np.array([[int(g.sum().item()) for g in gates]])
            param_bytes = int(round(float(self.structure.param_bytes(counts)[0])))
            peak = int(round(float(self.structure.peak_activation_bytes(counts)[0])))
            macs = None
        else:
            spec = compact.spec
            param_bytes, peak, macs = int(spec.param_bytes()), int(spec.peak_activation_bytes()), int(spec.macs())
        return BuiltArtifact(
            data=data,
            artifact_sha256=hashlib.sha256(data).hexdigest(),
            param_bytes=param_bytes,
            peak_activation_bytes=peak,
            macs=macs,
        )


def _constant_weights(module: torch.nn.Module) -> None:
    """Zero every floating tensor (BatchNorm running variance one): same architecture, same cost, and the
    exported file is mostly zeros (a few KB after gzip). Latency does not depend on weight values."""
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dtype.is_floating_point:
                t.fill_(1.0 if name.endswith("running_var") else 0.0)


# ---- measuring ----------------------------------------------------------------------------------


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


LATENCY_STATS = ("median", "min", "p10", "p25", "mean")


def row_latency(row: dict, stat: str = "median") -> float:
    """One measurement's latency under a statistic of its timed runs.

    "median" (the agent's), "min", "mean", or a low percentile "p10"/"p25" of the raw runs. On a machine
    shared with other work, preemption inflates the median of a run series while its low percentiles stay
    near the undisturbed latency (see docs/campaigns.md for measured figures).
    """
    if stat == "median":
        return float(row["latency_median_us"])
    if stat == "min":
        return float(row["latency_min_us"])
    if stat == "mean":
        return float(row["latency_mean_us"])
    if stat in ("p10", "p25"):
        runs = json.loads(row.get("samples_us") or "[]")
        if not runs:
            return float(row["latency_median_us"])
        return float(np.percentile(runs, int(stat[1:])))
    raise ConfigError(f"unknown latency statistic {stat!r}; choose one of {', '.join(LATENCY_STATS)}")


def drift_levels(store: CampaignStore, stat: str = "median") -> tuple[np.ndarray, np.ndarray]:
    """(seq, level) of the reference rounds: one level per round = mean of its refs' relative latency."""
    refs = store.rows("ref")
    if not refs:
        return np.zeros(0), np.zeros(0)
    by_ref: dict[int, list[dict]] = {}
    for r in refs:
        by_ref.setdefault(r["idx"], []).append(r)
    meds = {k: float(np.median([row_latency(r, stat) for r in v])) for k, v in by_ref.items()}
    rounds: dict[int, list[float]] = {}
    for r in refs:
        round_start = r["seq"] - r["idx"]  # refs of one round are consecutive, idx 0..n_refs-1
        rounds.setdefault(round_start, []).append(row_latency(r, stat) / meds[r["idx"]])
    seqs = np.array(sorted(rounds), dtype=np.float64)
    levels = np.array([float(np.mean(rounds[int(s)])) for s in seqs])
    return seqs, levels


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


# ---- dataset for fitting ------------------------------------------------------------------------


@dataclass
class CampaignData:
    """Per-sample arrays for fitting: one row per sample index (median over passes)."""

    indices: np.ndarray
    counts: np.ndarray  # (N, L)
    latency_us: np.ndarray  # (N,) median over passes (drift-corrected when asked)
    latency_by_pass: np.ndarray  # (N, P), NaN where missing
    peak_bytes: np.ndarray
    param_bytes: np.ndarray
    peak_activation_bytes: np.ndarray
    drift_corrected: bool


def load_samples(
    store: CampaignStore, *, correct_drift: bool = False, passes: int | None = None, stat: str = "median"
) -> CampaignData:
    """Collect the samples of a campaign; ``passes``: use only the first ``passes`` passes; ``stat``: see
    :func:`row_latency`."""
    plan = store.plan()
    rows = store.rows("sample")
    if not rows:
        raise CampaignError(f"campaign store {store.path} holds no measured samples yet: run `nnf profile` first")
    p_used = plan.passes if passes is None else min(passes, plan.passes)
    seqs, levels = drift_levels(store, stat) if correct_drift else (np.zeros(0), np.zeros(0))
    by_idx: dict[int, dict] = {}
    for r in rows:
        if r["pass"] >= p_used:
            continue
        e = by_idx.setdefault(r["idx"], {"lat": [math.nan] * p_used, "row": r, "peaks": []})
        lat = row_latency(r, stat)
        if correct_drift and len(levels) >= 2:
            lat = lat / float(np.interp(r["seq"], seqs, levels))
        e["lat"][r["pass"]] = lat
        if r["peak_bytes"] is not None and r["peak_bytes"] > 0:
            e["peaks"].append(r["peak_bytes"])
    idx = np.array(sorted(by_idx), dtype=np.int64)
    ent = [by_idx[i] for i in idx.tolist()]
    lat_by_pass = np.array([e["lat"] for e in ent], dtype=np.float64)
    return CampaignData(
        indices=idx,
        counts=np.array([json.loads(e["row"]["counts"]) for e in ent], dtype=np.float64),
        latency_us=np.nanmedian(lat_by_pass, axis=1),
        latency_by_pass=lat_by_pass,
        peak_bytes=np.array([float(np.median(e["peaks"])) if e["peaks"] else math.nan for e in ent]),
        param_bytes=np.array([e["row"]["param_bytes"] for e in ent], dtype=np.float64),
        peak_activation_bytes=np.array([e["row"]["peak_activation_bytes"] for e in ent], dtype=np.float64),
        drift_corrected=bool(correct_drift and len(levels) >= 2),
    )



# ---- the real device: an agent over gRPC ---------------------------------------------------------


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
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
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
    """Measure candidate subnets on a device for live search (``host.search.LiveMeasurer``).

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
