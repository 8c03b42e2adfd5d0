"""Search: Algorithm 1 and the batched search agree; live bisection finds the same limit with few probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from host.errors import ConfigError, SearchError
from host.gates import GatedLayer, GateLayout
from host.predictor import LatencyModel, LatencySchema, active_counts
from host.search import Budget, algorithm1, batched_search, gates_key, limit_grid, live_search

LAYOUT = GateLayout(
    "resnet",
    "fake",
    (
        GatedLayer("a", 16, 1, 1, (4, 4), "conv"),
        GatedLayer("b", 32, 1, 1, (4, 4), "conv"),
        GatedLayer("c", 64, 1, 1, (2, 2), "conv", inputs_from=("b",)),
    ),
)


class FakeAssembler:
    """Deterministic per row: each task ranks modules by a seeded score and keeps the top ``limit`` share."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, task: str, limits: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        g = torch.Generator().manual_seed(sum(map(ord, task)))
        out = []
        for d in LAYOUT.module_counts:
            score = torch.rand(d, generator=g)
            order = score.argsort(descending=True)
            rank = torch.empty(d, dtype=torch.long)
            rank[order] = torch.arange(d)
            k = torch.floor(limits.reshape(-1, 1) * d)
            out.append((rank.reshape(1, -1) < k).float())
        return out


def _evaluator():
    schema = LatencySchema.named("improved")
    names = schema.feature_names(LAYOUT)
    coef = np.linspace(5.0, 1.0, len(names))
    coef[0] = 1000.0
    model = LatencyModel(LAYOUT, schema, coef=coef)

    def evaluate(gates):
        counts = active_counts(LAYOUT, gates)
        return model.predict(counts), 1e6 + 4000.0 * counts.sum(axis=1)

    return evaluate


@pytest.mark.parametrize("task", ["one zero", "two even", "is there a 7"])
@pytest.mark.parametrize("latency_ms", [1.05, 1.3, 2.0, 3.5, 50.0])
def test_algorithm1_and_batched_agree(task: str, latency_ms: float) -> None:
    ev = _evaluator()
    budget = Budget(latency_ms=latency_ms, memory_mb=1.3)
    asm = FakeAssembler()
    a = algorithm1(asm, task, ev, budget)
    calls_a = asm.calls
    b = batched_search(asm, task, ev, budget)
    assert asm.calls - calls_a == 1
    assert a.grid_index == b.grid_index and a.limit == pytest.approx(b.limit)
    assert all(torch.equal(x, y) for x, y in zip(a.gates, b.gates, strict=True))
    assert a.rounds == min(a.grid_index + 2, 100)
    assert a.latency_us <= latency_ms * 1000 and a.memory_bytes <= 1.3e6
    assert a.activation_ratio <= a.limit + 1e-9


def test_first_miss_stops_even_if_later_limits_fit() -> None:
    base = _evaluator()

    def bumpy(gates):
        lat, mem = base(gates)
        counts = active_counts(LAYOUT, gates)
        lat = lat + np.where(counts.sum(axis=1) == 56, 1e6, 0.0)  # one limit spikes
        return lat, mem

    budget = Budget(latency_ms=50.0)
    a = algorithm1(FakeAssembler(), "x", bumpy, budget)
    b = batched_search(FakeAssembler(), "x", bumpy, budget)
    assert a.grid_index == b.grid_index < 99


def test_nothing_fits_reports_smallest_reachable() -> None:
    ev = _evaluator()
    with pytest.raises(SearchError, match=r"smallest reachable .* is 1\.\d+ ms"):
        batched_search(FakeAssembler(), "x", ev, Budget(latency_ms=0.5), device="cpu-test")
    with pytest.raises(SearchError, match="cpu-test"):
        algorithm1(FakeAssembler(), "x", ev, Budget(memory_mb=0.5), device="cpu-test")
    with pytest.raises(SearchError, match="smallest reachable"):
        live_search(FakeAssembler(), "x", lambda g: (5e6, 1e9), Budget(latency_ms=1.0))


def test_everything_fits_returns_full_limit() -> None:
    r = batched_search(FakeAssembler(), "x", _evaluator(), Budget(latency_ms=1e6))
    assert r.limit == pytest.approx(1.0) and r.activation_ratio == pytest.approx(1.0)


@pytest.mark.parametrize("start", [None, 0, 40, 99])
def test_live_search_matches_batched_with_few_measurements(start) -> None:
    ev = _evaluator()
    measured = []

    def measure(gates):
        measured.append(gates_key(gates))
        lat, mem = ev([g.reshape(1, -1) for g in gates])
        return float(lat[0]), float(mem[0])

    budget = Budget(latency_ms=2.0)
    want = batched_search(FakeAssembler(), "two even", ev, budget)
    cache: dict = {}
    got = live_search(FakeAssembler(), "two even", measure, budget, start_index=start, cache=cache)
    assert got.measured and got.grid_index == want.grid_index
    assert len(measured) == len(set(measured)) <= 14
    n_first = len(measured)
    again = live_search(FakeAssembler(), "two even", measure, budget, start_index=start, cache=cache)
    assert again.grid_index == want.grid_index and len(measured) == n_first  # all from the cache


def test_budget_and_grid_validation() -> None:
    with pytest.raises(ConfigError, match="latency budget"):
        Budget()
    with pytest.raises(ConfigError, match="positive"):
        Budget(latency_ms=-1)
    with pytest.raises(ConfigError):
        limit_grid(0)
    assert len(limit_grid(0.01)) == 100 and float(limit_grid(0.01)[-1]) == 1.0
