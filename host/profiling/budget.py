"""Device-budget search: the best model for a task that fits a device's latency/memory budget.

Part 1, the searches (docs/design.md §5, the paper's Algorithm 1).

Given a task and a device budget (latency, memory), find the largest activation limit whose generated
subnet still fits. The assembler is any callable mapping ``(task, limits)`` to *batched hard gates*
(:class:`GateAssembler`: one ``(B, D_l)`` tensor per gated layer for ``B`` limits), so the search works
with the real assembler (``host.assembler``) as with a fake one in tests.

Three searches, all over the same grid of limits ``step, 2·step, …, 1.0`` (1 %, 2 %, … by default):

* :func:`algorithm1` — the paper's loop: one assembler call and one evaluation per limit, stop at the
  first candidate that misses the budget, return the last one that fitted.
* :func:`batched_search` — the same answer from one batched assembler forward over every limit and one
  vectorised prediction; the first miss is found on the whole vector at once.
* :func:`live_search` — hardware in the loop: candidates are *measured* on the device's agent instead of
  predicted. The first-miss structure makes "fits" monotone along the grid, so a bisection over the
  grid index needs ~log2(grid) measurements; identical gate vectors (neighbouring limits often give the
  same subnet) are measured once (cache keyed by the gates' hash), and the artifacts themselves are
  content-addressed on the agent.

Budgets: ``latency_ms`` and ``memory_mb`` (MB = 10^6 bytes); either may be None (unconstrained).
If no candidate fits, :class:`~host.errors.SearchError` says the smallest reachable latency/memory.

Part 2, device-budget generation (:func:`generate_for_device`): a loaded generator
(``host.generate.ModelFactory``, or anything with ``factory.models.supernet`` and ``factory.gates``), a
device profile (``host.profiling.device_profile``) at the budget's percentile and the searches above:

1. **runtime**: the profile must be of the runtime the model will run on (``--format``'s); a TorchScript
   profile never silently prices an ONNX model (measured: 0.96 ms ONNX vs 2.4 ms TorchScript for one model);
2. **drift check** (``host.profiling.drift``), when the device's agent is at hand: its reference subnets are
   re-measured; the profile is used as is, rescaled by one factor, or refused with advice;
3. **search**: the batched search holds each candidate's predicted cost *plus the profile's calibrated
   margin* to the budget (live mode: candidates are measured on the agent instead, by bisection started at
   the predictor's answer);
4. the chosen model is extracted and saved with the budget, percentile, runtime, margin, prediction and
   drift check in its spec; with an agent it is measured too (predicted vs. measured in the report).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from host.errors import ConfigError, SearchError
from host.gates import activation_ratio
from host.profiling.build import gates_sha256
from host.profiling.data import DEFAULT_PERCENTILE, percentile_name

log = logging.getLogger(__name__)


class GateAssembler(Protocol):
    """``(task, limits (B,)) -> per-layer hard gates, each (B, D_l)``."""

    def __call__(self, task: str, limits: torch.Tensor) -> list[torch.Tensor]: ...


class BatchEvaluator(Protocol):
    """Predicted cost of a batch of candidates: ``gates (B, D_l) per layer -> (latency_us (B,), memory_bytes (B,))``."""

    def __call__(self, gates: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]: ...


#: Measure one candidate on a device: ``gates (D_l,) per layer -> (latency_us, memory_bytes)``
#: (``host.profiling.measurers.CandidateMeasurer``).
CandidateCost = Callable[[Sequence[torch.Tensor]], tuple[float, float]]


@dataclass(frozen=True)
class Budget:
    latency_ms: float | None = None
    memory_mb: float | None = None

    def __post_init__(self) -> None:
        if self.latency_ms is None and self.memory_mb is None:
            raise ConfigError("give a latency budget (--latency-ms) and/or a memory budget (--memory-mb)")
        for name, v in (("latency_ms", self.latency_ms), ("memory_mb", self.memory_mb)):
            if v is not None and not (v > 0 and np.isfinite(v)):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")

    def fits(self, latency_us: np.ndarray, memory_bytes: np.ndarray) -> np.ndarray:
        ok = np.ones(np.shape(latency_us), dtype=bool)
        if self.latency_ms is not None:
            ok &= np.asarray(latency_us) <= self.latency_ms * 1000.0
        if self.memory_mb is not None:
            ok &= np.asarray(memory_bytes) <= self.memory_mb * 1e6
        return ok

    def describe(self) -> str:
        parts = []
        if self.latency_ms is not None:
            parts.append(f"latency <= {self.latency_ms:g} ms")
        if self.memory_mb is not None:
            parts.append(f"memory <= {self.memory_mb:g} MB")
        return " and ".join(parts)


@dataclass
class SearchResult:
    method: str
    limit: float
    grid_index: int
    gates: list[torch.Tensor]
    activation_ratio: float
    latency_us: float
    memory_bytes: float
    measured: bool
    rounds: int
    assembler_calls: int
    seconds: float
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "method": self.method,
            "limit": round(self.limit, 6),
            "activation_ratio": round(self.activation_ratio, 6),
            "latency_ms": round(self.latency_us / 1000.0, 4),
            "memory_mb": round(self.memory_bytes / 1e6, 4),
            "measured": self.measured,
            "rounds": self.rounds,
            "assembler_calls": self.assembler_calls,
            "search_seconds": round(self.seconds, 5),
        }


def limit_grid(step: float = 0.01) -> torch.Tensor:
    if not 0 < step <= 1:
        raise ConfigError(f"limit step must lie in (0, 1], got {step}")
    n = int(round(1.0 / step))
    return torch.arange(1, n + 1, dtype=torch.float32) * (1.0 / n)


def _row(gates: Sequence[torch.Tensor], i: int) -> list[torch.Tensor]:
    return [g[i] for g in gates]


def _no_fit(budget: Budget, latency_us: float, memory_bytes: float, device: str) -> SearchError:
    return SearchError(
        f"no subnet meets {budget.describe()} on {device}: the smallest reachable (activation limit 1%) is "
        f"{latency_us / 1000:.3f} ms and {memory_bytes / 1e6:.2f} MB; raise the budget or pick a faster device"
    )


def algorithm1(
    assembler: GateAssembler,
    task: str,
    evaluator: BatchEvaluator,
    budget: Budget,
    *,
    step: float = 0.01,
    device: str = "the device",
) -> SearchResult:
    """The paper's Algorithm 1: limit = step, 2·step, …; stop at the first miss; return the last fit."""
    t0 = time.perf_counter()
    grid = limit_grid(step)
    best: SearchResult | None = None
    first: tuple[float, float] | None = None
    rounds = 0
    for i, limit in enumerate(grid.tolist()):
        gates = assembler(task, torch.tensor([limit]))
        lat, mem = evaluator(gates)
        rounds += 1
        lat0, mem0 = float(lat[0]), float(mem[0])
        if first is None:
            first = (lat0, mem0)
        if not bool(budget.fits(lat[:1], mem[:1])[0]):
            break
        single = _row(gates, 0)
        best = SearchResult(
            method="algorithm1",
            limit=limit,
            grid_index=i,
            gates=single,
            activation_ratio=float(activation_ratio(single)),
            latency_us=lat0,
            memory_bytes=mem0,
            measured=False,
            rounds=rounds,
            assembler_calls=rounds,
            seconds=0.0,
        )
    if best is None:
        assert first is not None
        raise _no_fit(budget, *first, device)
    best.rounds = best.assembler_calls = rounds
    best.seconds = time.perf_counter() - t0
    return best


def batched_search(
    assembler: GateAssembler,
    task: str,
    evaluator: BatchEvaluator,
    budget: Budget,
    *,
    step: float = 0.01,
    device: str = "the device",
    chunk: int | None = None,
) -> SearchResult:
    """Algorithm 1's answer from batched assembler forwards and vectorised predictions.

    ``chunk=None`` evaluates every candidate limit in one assembler forward and one prediction. With
    ``chunk=n`` the limits go n at a time, in order, and the search stops at the first batch that holds a
    miss: the same first miss, hence the same answer, for less work when the answer is a low limit.
    """
    if chunk is not None and chunk < 1:
        raise ConfigError(f"chunk must be a positive number of limits, got {chunk}")
    t0 = time.perf_counter()
    grid = limit_grid(step)
    n = len(grid)
    size = n if chunk is None else chunk
    calls = 0
    best: tuple[list[torch.Tensor], float, float, int] | None = None
    first: tuple[float, float] | None = None
    for start in range(0, n, size):
        gates = assembler(task, grid[start : start + size])
        lat, mem = evaluator(gates)
        calls += 1
        if first is None:
            first = (float(lat[0]), float(mem[0]))
        fits = budget.fits(lat, mem)
        miss = int(np.argmin(fits)) if not fits.all() else len(fits)
        if miss > 0:
            i = miss - 1
            best = ([g.clone() for g in _row(gates, i)], float(lat[i]), float(mem[i]), start + i)
        if miss < len(fits):
            break
    if best is None:
        assert first is not None
        raise _no_fit(budget, *first, device)
    single, lat_i, mem_i, index = best
    return SearchResult(
        method="batched",
        limit=float(grid[index]),
        grid_index=index,
        gates=single,
        activation_ratio=float(activation_ratio(single)),
        latency_us=lat_i,
        memory_bytes=mem_i,
        measured=False,
        rounds=calls,
        assembler_calls=calls,
        seconds=time.perf_counter() - t0,
    )


def live_search(
    assembler: GateAssembler,
    task: str,
    measure: CandidateCost,
    budget: Budget,
    *,
    step: float = 0.01,
    start_index: int | None = None,
    device: str = "the device",
    cache: dict[str, tuple[float, float]] | None = None,
) -> SearchResult:
    """Hardware-in-the-loop search: bisection over the limit grid with every probe measured on the device.

    start_index: grid index to probe first (e.g. the predictor's answer); the bracket then widens
    geometrically from there, so a good guess needs ~3 measurements instead of ~7.
    cache: gates hash -> (latency_us, memory_bytes), shared across searches to avoid re-measuring.
    """
    t0 = time.perf_counter()
    grid = limit_grid(step)
    n = len(grid)
    gates_all = assembler(task, grid)  # one forward: probing only picks rows
    cache = {} if cache is None else cache
    history: list[dict] = []
    measured: dict[int, tuple[float, float, bool]] = {}
    new_measurements = 0

    def probe(i: int) -> bool:
        nonlocal new_measurements
        if i in measured:
            return measured[i][2]
        row = _row(gates_all, i)
        key = gates_sha256(row)
        if key not in cache:
            log.info("live: measuring the model for limit %.2f on the device ...", float(grid[i]))
            cache[key] = measure(row)
            new_measurements += 1
        lat, mem = cache[key]
        ok = bool(budget.fits(np.array([lat]), np.array([mem]))[0])
        log.info("live: limit %.2f: %.3f ms, %.2f MB: %s", float(grid[i]), lat / 1000, mem / 1e6,
                 "fits" if ok else "over budget")
        measured[i] = (lat, mem, ok)
        history.append({"limit": round(float(grid[i]), 6), "latency_ms": lat / 1000, "memory_mb": mem / 1e6, "fits": ok})
        return ok

    lo, hi = -1, n  # lo: largest index known to fit; hi: smallest index known to miss
    if start_index is not None:
        s = min(max(int(start_index), 0), n - 1)
        width = 2
        if probe(s):
            lo = s
            while lo < n - 1:
                j = min(lo + width, n - 1)
                if probe(j):
                    lo = j
                    width *= 2
                else:
                    hi = j
                    break
        else:
            hi = s
            while hi > 0:
                j = max(hi - width, 0)
                if probe(j):
                    lo = j
                    break
                hi = j
                width *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    if lo < 0:
        lat0, mem0, _ = measured[0]  # the bracket only closes at -1 after index 0 missed
        raise _no_fit(budget, lat0, mem0, device)
    lat, mem, _ = measured[lo]
    single = [g.clone() for g in _row(gates_all, lo)]
    return SearchResult(
        method="live",
        limit=float(grid[lo]),
        grid_index=lo,
        gates=single,
        activation_ratio=float(activation_ratio(single)),
        latency_us=lat,
        memory_bytes=mem,
        measured=True,
        rounds=len(history),
        assembler_calls=1,
        seconds=time.perf_counter() - t0,
        history=history + [{"new_measurements": new_measurements}],
    )


def factory_assembler(factory: Any) -> GateAssembler:
    """Adapt a ModelFactory to the search's ``(task, limits) -> batched hard gates`` protocol.

    With a ``host.assembler.ModuleAssembler`` inside, the task is encoded once and expanded over the
    limits, the logits come from one forward, and the assembler's own ``trim_to_limit`` runs only on the
    rows whose hard gates exceed their limit (the trim is row-wise, so the gates are identical to
    ``factory.gates``; checked in tests). Otherwise ``factory.gates`` is called as is.
    """
    assembler = getattr(getattr(factory, "models", None), "assembler", None)
    space = getattr(factory, "space", None)
    direct = hasattr(assembler, "generate") and hasattr(space, "encode") and hasattr(space, "task")
    encoded: dict[str, torch.Tensor] = {}

    def assemble(task: str, limits: torch.Tensor) -> list[torch.Tensor]:
        if not direct:
            return list(factory.gates([task] * int(limits.shape[0]), limits).gates)
        from host.assembler import check_limits, max_active, trim_to_limit

        limits = limits.float().reshape(-1)
        check_limits(limits)
        if task not in encoded:
            encoded[task] = space.encode([space.task(task)])
        enc = encoded[task].expand(int(limits.shape[0]), -1)
        was_training = assembler.training
        assembler.eval()
        try:
            with torch.no_grad():
                logits = assembler(enc, limits)
        finally:
            assembler.train(was_training)
        sizes = [x.shape[1] for x in logits]
        hard = torch.cat(logits, dim=1) > 0
        need = hard.sum(dim=1) > max_active(limits, hard.shape[1])
        gates = hard.float()
        if bool(need.any()):
            trimmed, _ = trim_to_limit([x[need] for x in logits], limits[need])
            gates[need] = torch.cat(trimmed, dim=1)
        return list(torch.split(gates, sizes, dim=1))

    return assemble


@dataclass(frozen=True)
class FactoryGenerator:
    """A loaded generator as a campaign samples it (``host.profiling.plan.GateGenerator``): the tasks of its
    space (seen and unseen), the gates the search would see, and the checkpoint's identity."""

    tasks: tuple[str, ...]
    identity: str
    assemble: GateAssembler

    def __call__(self, task: str, limits: torch.Tensor) -> list[torch.Tensor]:
        return self.assemble(task, limits)


def factory_generator(factory: Any) -> FactoryGenerator:
    """:class:`FactoryGenerator` of a ``host.generate.ModelFactory``."""
    space = factory.space
    tasks = tuple(space.names("seen") + space.names("unseen"))
    files = (factory.meta or {}).get("files") or {}
    identity = files.get("model.safetensors") or str(factory.checkpoint)
    return FactoryGenerator(tasks, f"{space.name}:{identity}", factory_assembler(factory))


def generate_for_device(
    factory: Any,
    task: str,
    device: str,
    budget: Budget,
    *,
    percentile: str | int = DEFAULT_PERCENTILE,
    runtime: str | None = None,
    live: bool = False,
    measurer: Any = None,
    agent: str | None = None,
    drift_check: str = "auto",
    method: str = "batched",
    out_dir: Path | None = None,
    profiles_root: Path | None = None,
    step: float = 0.01,
    measure_settings: Any = None,
    predictor: Any = None,
    chunk: int | None = None,
    on_measure: Callable[[Any, float], None] | None = None,
    meta: dict | None = None,
) -> tuple[Any, dict]:
    """Search, extract and (optionally) save; returns (compact model, report dict).

    percentile: the statistic of the model's runs the budget holds (p50/p90/p99; the profile must be fitted
    on it). runtime: the runtime the model will run on (``--format``'s); the profile must be of that runtime,
    default: the device's only profiled runtime for this supernet.
    measurer: an open ``host.profiling.measurers.Measurer`` of the device (``agent`` names it in reports):
    needed by ``live``; otherwise it runs the drift check (``drift_check="auto"``: when a measurer is given;
    ``"on"``: required; ``"off"``) and measures the chosen model (predicted vs. measured in the report).
    predictor: an already loaded ``DevicePredictor`` (a long-running service loads it once).
    chunk: limits per batched assembler pass (``None`` = all limits in one pass); the answer is the same.
    on_measure: called after every measurement on the device (progress output).
    meta: extra fields for the saved model's spec.
    """
    from host.extraction import extract
    from host.profiling.drift import apply

    if drift_check not in ("auto", "on", "off"):
        raise ConfigError(f"drift_check must be auto, on or off, got {drift_check!r}")
    if live and measurer is None:
        raise ConfigError("--live measures candidates on the device: give its agent (--agent HOST:PORT, or a device "
                          "of the inventory)")
    pct = percentile_name(percentile)
    t0 = time.perf_counter()
    net = factory.models.supernet
    layout = net.gate_layout()
    task_name = factory.space.task(task).name if hasattr(factory, "space") else task
    assemble = factory_assembler(factory)
    predictor = _device_predictor(predictor, device, layout, runtime, pct, profiles_root, live)
    run_rt = runtime or (predictor.runtime if predictor is not None else "torchscript")
    candidates = None
    if measurer is not None:
        candidates = _candidates(net, run_rt, measurer, predictor, measure_settings, pct, on_measure)
    check = _drift_check(predictor, measurer, drift_check, live, device, layout, net, pct, agent)
    if predictor is not None:
        predictor = apply(check, predictor)  # refused -> DriftError
    t_check = time.perf_counter()
    result = _search(assemble, task_name, predictor, candidates, budget, live=live, method=method, step=step,
                     device=device, chunk=chunk)
    t_search = time.perf_counter()
    counts = np.array([[int(g.sum().item()) for g in result.gates]])
    report: dict[str, Any] = {
        "task": task_name,
        "device": device,
        "runtime": run_rt,
        "percentile": pct,
        "budget": {"latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb},
        "search": result.summary(),
        "limit": round(result.limit, 6),
        "activation_ratio": round(result.activation_ratio, 6),
        "drift_check": check.to_json(),
    }
    if predictor is not None:
        report.update(_prediction(predictor, counts, pct))
    spec_meta = {**(meta or {}), "task": task_name, "activation_limit": result.limit, "device": device,
                 "budget": report["budget"], "search": result.method, "runtime": run_rt, "percentile": pct,
                 "drift_check": report["drift_check"]}
    spec_meta.update({k: report[k] for k in ("predicted", "margin") if k in report})
    compact = extract(net, result.gates, meta=spec_meta)
    if out_dir is not None:
        from host.artifact import save_compact

        save_compact(compact, out_dir, meta=spec_meta)
    t_extract = time.perf_counter()
    if predictor is not None:  # exact structural figures without building the spec on the meta device
        report["param_bytes"] = int(round(float(predictor.structure.param_bytes(counts)[0])))
        report["peak_activation_bytes"] = int(round(float(predictor.structure.peak_activation_bytes(counts)[0])))
    else:
        report["param_bytes"] = compact.spec.param_bytes()
        report["peak_activation_bytes"] = compact.spec.peak_activation_bytes()
    if candidates is not None:
        if live:
            lat_m, mem_m = result.latency_us, result.memory_bytes
        else:
            log.info("measuring the chosen model (limit %.2f) on the device ...", result.limit)
            lat_m, mem_m = candidates(result.gates)
        report["measured"] = {"latency_ms": round(lat_m / 1000, 4), "memory_mb": round(mem_m / 1e6, 4),
                              "percentile": pct, "agent": agent,
                              "fits": bool(budget.fits([lat_m], [mem_m])[0]),
                              "measurements": candidates.measurements,
                              "bytes_sent": candidates.bytes_sent}
    report.update({
        "seconds_drift_check": round(t_check - t0, 4),
        "seconds_search": round(t_search - t_check, 4),
        "seconds_extract": round(t_extract - t_search, 4),
        "out": str(out_dir) if out_dir is not None else None,
        "seconds": round(time.perf_counter() - t0, 4),
    })
    return compact, report


def _device_predictor(predictor: Any, device: str, layout: Any, runtime: str | None, pct: str,
                      profiles_root: Path | None, live: bool) -> Any:
    """The device's predictor at ``pct`` for ``runtime`` (loaded unless given); None only for a live search on a
    device without a profile."""
    from host.profiling.device_profile import load_predictor

    if predictor is None:
        try:
            return load_predictor(device, layout, runtime, root=profiles_root, percentile=pct)
        except ConfigError:
            if not live:
                raise
            return None
    if runtime is not None and predictor.runtime != runtime:
        raise ConfigError(f"the loaded profile of {device} is for runtime {predictor.runtime}, not {runtime}")
    if predictor.percentile != pct:
        raise ConfigError(f"the loaded profile of {device} predicts {predictor.percentile}, not {pct}")
    return predictor


def _candidates(net: Any, runtime: str, measurer: Any, predictor: Any, settings: Any, pct: str,
                on_measure: Callable[[Any, float], None] | None) -> Any:
    """A CandidateMeasurer on the device, with the profile's measure settings (so figures compare)."""
    from host.profiling.build import ExtractingBuilder
    from host.profiling.measurers import CandidateMeasurer
    from host.profiling.plan import MeasureSettings

    if settings is None and predictor is not None and isinstance(predictor.entry.get("measure"), dict):
        known = MeasureSettings.__dataclass_fields__
        settings = MeasureSettings(**{k: v for k, v in predictor.entry["measure"].items() if k in known})
    return CandidateMeasurer(ExtractingBuilder(net, runtime), measurer, net.input_shape, settings or MeasureSettings(),
                             stat=pct, on_measure=on_measure)


def _drift_check(predictor: Any, measurer: Any, mode: str, live: bool, device: str, layout: Any, net: Any,
                 pct: str, agent: str | None) -> Any:
    """Run (or say why not) the drift check before a predicted search."""
    from host.profiling.drift import DriftCheck, fingerprint

    if live:
        return DriftCheck.skipped("live search: every candidate is measured on the device")
    if predictor is None:
        return DriftCheck.skipped("no profile")
    if mode == "off":
        return DriftCheck.skipped("drift check turned off (--drift-check off)")
    if measurer is None:
        if mode == "on":
            raise ConfigError(f"--drift-check on needs the agent of {device}: give --agent HOST:PORT or a device of "
                              "the inventory")
        return DriftCheck.skipped(f"no agent reachable for {device}: the profile is used as it is")
    if not predictor.entry.get("references"):
        if mode == "on":
            raise ConfigError(f"the profile of {device} keeps no reference subnets: re-fit it with `nnf fit` to "
                              "enable drift checks")
        return DriftCheck.skipped("the profile keeps no reference subnets")
    return fingerprint(predictor.entry, layout, net, measurer, percentile=pct, agent=agent)


def _search(assemble: GateAssembler, task: str, predictor: Any, candidates: Any, budget: Budget, *, live: bool,
            method: str, step: float, device: str, chunk: int | None) -> SearchResult:
    """The predicted search (bounds = prediction + margin held to the budget), or the live one."""
    if live:
        start = None
        if predictor is not None:
            try:
                start = batched_search(assemble, task, predictor.guarded(), budget, step=step, device=device).grid_index
            except SearchError:
                start = 0
        return live_search(assemble, task, candidates, budget, step=step, start_index=start, device=device)
    if method == "algorithm1":
        return algorithm1(assemble, task, predictor.guarded(), budget, step=step, device=device)
    if method == "batched":
        return batched_search(assemble, task, predictor.guarded(), budget, step=step, device=device, chunk=chunk)
    raise ConfigError(f"unknown search method {method!r}; use batched or algorithm1")


def _prediction(predictor: Any, counts: np.ndarray, pct: str) -> dict:
    lat, mem = predictor.predict_counts(counts)
    blat, bmem = predictor.bound_counts(counts)
    return {
        "predicted": {"latency_ms": round(float(lat[0]) / 1000, 4), "memory_mb": round(float(mem[0]) / 1e6, 4),
                      "latency_bound_ms": round(float(blat[0]) / 1000, 4),
                      "memory_bound_mb": round(float(bmem[0]) / 1e6, 4), "percentile": pct},
        "margin": predictor.margins(),
        "profile": {"fitted_at": predictor.entry.get("fitted_at"), "runtime": predictor.runtime,
                    "fit_mix": predictor.entry.get("fit_mix")},
    }
