"""Resource-aware architecture search (DESIGN.md §5, the paper's Algorithm 1).

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
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from host.errors import ConfigError, SearchError
from host.gates import activation_ratio


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
            cache[key] = measure(row)
            new_measurements += 1
        lat, mem = cache[key]
        ok = bool(budget.fits(np.array([lat]), np.array([mem]))[0])
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
