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

Part 2, device-budget generation (:func:`generate_for_device`). Glue between a loaded generator (``host.generate.ModelFactory`` or anything with the same two members:
``factory.models.supernet`` and ``factory.gates(tasks, limits) -> result with .gates``), a device profile
(``host.profiling.device_profile``) and the searches above:

* predictor mode (default): the batched search picks the limit from the profile's predictions; when an
  agent is given, the chosen model is also measured there and the report shows predicted vs. measured;
* live mode (``live=True``): candidates are measured on the agent (bisection over the limit grid, started
  at the predictor's answer when the device has a profile).

The report: chosen limit, activation ratio, predicted and measured latency/memory, rounds, seconds.
"""

from __future__ import annotations

import hashlib
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

log = logging.getLogger(__name__)


class GateAssembler(Protocol):
    """``(task, limits (B,)) -> per-layer hard gates, each (B, D_l)``."""

    def __call__(self, task: str, limits: torch.Tensor) -> list[torch.Tensor]: ...


class BatchEvaluator(Protocol):
    """Predicted cost of a batch of candidates: ``gates (B, D_l) per layer -> (latency_us (B,), memory_bytes (B,))``."""

    def __call__(self, gates: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]: ...


class LiveMeasurer(Protocol):
    """Measure one candidate on a device: ``gates (D_l,) per layer -> (latency_us, memory_bytes)``."""

    def __call__(self, gates: Sequence[torch.Tensor]) -> tuple[float, float]: ...


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


def gates_key(gates: Sequence[torch.Tensor]) -> str:
    """Stable hash of one hard gate vector (per-layer tensors)."""
    h = hashlib.sha256()
    for g in gates:
        bits = (g.detach().cpu() > 0.5).to(torch.uint8).numpy()
        h.update(np.packbits(bits).tobytes())
        h.update(len(bits).to_bytes(4, "little"))
    return h.hexdigest()


def live_search(
    assembler: GateAssembler,
    task: str,
    measure: LiveMeasurer,
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
        key = gates_key(row)
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


def predictor_evaluator(
    predict_latency_us: Callable[[np.ndarray], np.ndarray],
    predict_memory_bytes: Callable[[Sequence[torch.Tensor]], np.ndarray],
    counts_fn: Callable[[Sequence[torch.Tensor]], np.ndarray],
) -> BatchEvaluator:
    """Build a :class:`BatchEvaluator` from a latency model on counts and a memory model on gates."""

    def evaluate(gates: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        counts = counts_fn(gates)
        return predict_latency_us(counts), predict_memory_bytes(gates)

    return evaluate



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


def generate_for_device(
    factory: Any,
    task: str,
    device: str,
    budget: Budget,
    *,
    live: bool = False,
    agent: str | None = None,
    token: str | None = None,
    method: str = "batched",
    out_dir: Path | None = None,
    profiles_root: Path | None = None,
    step: float = 0.01,
    measure_settings: Any = None,
    predictor: Any = None,
    chunk: int | None = None,
    runtime: str | None = None,
) -> tuple[Any, dict]:
    """Search, extract and (optionally) save; returns (compact model, report dict).

    runtime: the agent runtime candidates are measured with (default: the device profile's, else torchscript).

    predictor: an already loaded ``DevicePredictor`` (a long-running service loads it once); default: load
    the device's profile for this supernet.
    chunk: limits per batched assembler pass (``None`` = all limits in one pass); the answer is the same.
    """
    from host.extraction import extract
    from host.profiling.device_profile import load_predictor

    t0 = time.perf_counter()
    net = factory.models.supernet
    layout = net.gate_layout()
    task_name = factory.space.task(task).name if hasattr(factory, "space") else task
    assemble = factory_assembler(factory)
    if predictor is None:
        try:
            predictor = load_predictor(device, layout, root=profiles_root)
        except ConfigError:
            if not live:
                raise
    stat = predictor.entry.get("latency_statistic", "p10") if predictor is not None else "p10"
    live_measurer = None
    agent_measurer = None
    if agent is not None or live:
        if agent is None:
            raise ConfigError("--live measures candidates on the device: give its agent with --agent HOST:PORT")
        from host.profiling.build import ExtractingBuilder
        from host.profiling.measurers import AgentMeasurer, LiveDeviceMeasurer
        from host.profiling.plan import MeasureSettings

        agent_measurer = AgentMeasurer(agent, token=token)
        runtime = runtime or (predictor.runtime if predictor is not None else "torchscript")
        if measure_settings is None and predictor is not None and isinstance(predictor.entry.get("measure"), dict):
            known = MeasureSettings.__dataclass_fields__
            measure_settings = MeasureSettings(**{k: v for k, v in predictor.entry["measure"].items() if k in known})
        live_measurer = LiveDeviceMeasurer(ExtractingBuilder(net, runtime), agent_measurer, net.input_shape,
                                           measure_settings or MeasureSettings(), stat=stat)
    try:
        result: SearchResult
        if live:
            start = None
            if predictor is not None:
                try:
                    start = batched_search(assemble, task_name, predictor, budget, step=step, device=device).grid_index
                except SearchError:
                    start = 0
            result = live_search(assemble, task_name, live_measurer, budget, step=step, start_index=start, device=device)
        elif method == "algorithm1":
            result = algorithm1(assemble, task_name, predictor, budget, step=step, device=device)
        elif method == "batched":
            result = batched_search(assemble, task_name, predictor, budget, step=step, device=device, chunk=chunk)
        else:
            raise ConfigError(f"unknown search method {method!r}; use batched or algorithm1")
        t_search = time.perf_counter()
        meta = {"task": task_name, "activation_limit": result.limit, "device": device, "budget": {
            "latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb}, "search": result.method}
        compact = extract(net, result.gates, meta=meta)
        if out_dir is not None:
            from host.artifact import save_compact

            save_compact(compact, out_dir, meta=meta)
        t_extract = time.perf_counter()
        report: dict[str, Any] = {
            "task": task_name,
            "device": device,
            "budget": {"latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb},
            "search": result.summary(),
            "limit": round(result.limit, 6),
            "activation_ratio": round(result.activation_ratio, 6),
            "seconds_search": round(t_search - t0, 4),
            "seconds_extract": round(t_extract - t_search, 4),
            "out": str(out_dir) if out_dir is not None else None,
        }
        counts = np.array([[int(g.sum().item()) for g in result.gates]])
        if predictor is not None:  # exact structural figures without building the spec on the meta device
            report["param_bytes"] = int(round(float(predictor.structure.param_bytes(counts)[0])))
            report["peak_activation_bytes"] = int(round(float(predictor.structure.peak_activation_bytes(counts)[0])))
        else:
            report["param_bytes"] = compact.spec.param_bytes()
            report["peak_activation_bytes"] = compact.spec.peak_activation_bytes()
        if predictor is not None:
            lat, mem = predictor(_batch(result.gates))
            report["predicted"] = {"latency_ms": round(float(lat[0]) / 1000, 4), "memory_mb": round(float(mem[0]) / 1e6, 4),
                                   "latency_statistic": stat}
        if live_measurer is not None:
            if live:
                lat_m, mem_m = result.latency_us, result.memory_bytes
            else:
                lat_m, mem_m = live_measurer(result.gates)
            report["measured"] = {"latency_ms": round(lat_m / 1000, 4), "memory_mb": round(mem_m / 1e6, 4),
                                  "latency_statistic": stat, "agent": agent,
                                  "fits": bool(budget.fits([lat_m], [mem_m])[0]),
                                  "measurements": live_measurer.measurements,
                                  "bytes_sent": live_measurer.bytes_sent}
        report["seconds"] = round(time.perf_counter() - t0, 4)
        return compact, report
    finally:
        if agent_measurer is not None:
            agent_measurer.close()


def _batch(gates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [g.reshape(1, -1) for g in gates]
