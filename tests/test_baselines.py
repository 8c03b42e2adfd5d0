"""The paper's baselines on a tiny config: Retrain, Prune&Tune (Torch-Pruning), and the side-by-side comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from host.baselines.data import adapter_for
from host.baselines.models import ScenarioBudget, counts_of, gated_module
from host.baselines.prune_tune import (
    PruneTuneConfig,
    UnifiedConfig,
    build_unified,
    fold_task,
    load_unified,
    prune_to_budget,
    prune_tune,
    save_unified,
    train_unified,
)
from host.baselines.retrain import RetrainConfig, l1_kept_gates, retrain, size_uniform, uniform_counts
from host.baselines.train import TrainSettings
from host.errors import ConfigError, SearchError, SpecError
from host.supernets import build_supernet
from host.tasks import load_space

pytest.importorskip("torch_pruning")

TINY = TrainSettings(steps=2, batch_size=8, warmup_steps=1)


class LinearPredictor:
    """A device profile stand-in: latency = 500 µs + 20 µs per active module; memory = 30 MB + 4 B/param-ish."""

    runtime = "torchscript"
    entry = {"latency_statistic": "p10", "measure": {"repeats": 3, "warmup_runs": 1, "min_time_s": 0.0}}

    def __init__(self, layout) -> None:
        self.layout = layout

    def predict_counts(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        return 500.0 + 20.0 * c.sum(axis=1), 30e6 + 1e3 * c.sum(axis=1)


@pytest.fixture(scope="module")
def space():
    return load_space("numvqa")


@pytest.fixture(scope="module")
def adapter(space):
    return adapter_for(space)


@pytest.fixture()
def supernet():
    torch.manual_seed(0)
    return build_supernet("resnet_numvqa").eval()


def total_latency_ms(counts: list[int]) -> float:
    return (500.0 + 20.0 * sum(counts)) / 1000.0


# ---- data ---------------------------------------------------------------------------------------------


def test_test_set_depends_on_task_and_seed_only(space, adapter):
    a = adapter.test_set(space.task("exactly one 3"), 20, seed=7)
    b = adapter_for(space).test_set(space.task("exactly one 3"), 20, seed=7)
    c = adapter.test_set(space.task("at least two 5"), 20, seed=7)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert int(a.targets.sum()) == 10  # balanced
    assert not torch.equal(a.inputs, c.inputs)


def test_adapter_refuses_unknown_family(space):
    from dataclasses import replace

    with pytest.raises(ConfigError, match="no data adapter for task family"):
        adapter_for(replace(space, family="attributed_detection"))


# ---- Retrain ------------------------------------------------------------------------------------------


def test_size_uniform_takes_the_widest_width_that_fits(supernet):
    layout = supernet.gate_layout()
    pred = LinearPredictor(layout)
    budget = ScenarioBudget(latency_ms=total_latency_ms(uniform_counts(layout, 0.4)) + 1e-6)
    size = size_uniform(layout, pred, budget)
    assert size.fraction == pytest.approx(0.4)
    assert size.counts == uniform_counts(layout, 0.4)
    assert size.predicted_latency_ms <= budget.latency_ms
    wider = uniform_counts(layout, 0.41)
    assert total_latency_ms(wider) > budget.latency_ms
    with pytest.raises(SearchError, match="no uniform width"):
        size_uniform(layout, pred, ScenarioBudget(latency_ms=0.5))


def test_retrain_from_a_backbone_keeps_its_strongest_filters_and_trains(supernet, space, adapter):
    layout = supernet.gate_layout()
    pred = LinearPredictor(layout)
    init = build_supernet("resnet_numvqa").eval()
    budget = ScenarioBudget(latency_ms=total_latency_ms(uniform_counts(layout, 0.25)))
    gates = l1_kept_gates(init, uniform_counts(layout, 0.25))
    model = retrain(supernet, adapter, space.task("exactly one 3"), budget, pred,
                    RetrainConfig(init="pretrained", train=TINY), init_net=init)
    assert counts_of(model.compact) == uniform_counts(layout, 0.25)
    assert model.train.steps == 2 and model.train.images == 16 and model.seconds > 0
    name = layout.layers[0].name
    kept = torch.nonzero(gates[0]).flatten()
    assert model.compact.spec.kept[name] == kept.tolist()
    w_init = gated_module(init, name).weight[kept]
    w_now = gated_module(model.compact.net, name).weight
    assert w_now.shape == w_init.shape and not torch.equal(w_now, w_init)  # started there, then trained
    x = torch.rand(4, 1, 56, 56)
    assert model.compact(x).shape == (4, 2)


def test_retrain_from_scratch_and_time_cap(supernet, space, adapter):
    layout = supernet.gate_layout()
    cfg = RetrainConfig(init="scratch", train=TrainSettings(steps=50, batch_size=8, time_cap_s=1e-9))
    model = retrain(supernet, adapter, space.task("exactly one 3"), ScenarioBudget(latency_ms=5.0),
                    LinearPredictor(layout), cfg)
    assert model.train.stopped_by == "time_cap" and model.train.steps == 0
    assert model.compact.spec.meta["init"] == "scratch"


# ---- Prune&Tune ---------------------------------------------------------------------------------------


def test_prune_to_budget_prunes_only_gated_layers_and_fits(supernet, space):
    layout = supernet.gate_layout()
    pred = LinearPredictor(layout)
    unified = build_unified(supernet, space, init_net=supernet)
    full = [layer.modules for layer in layout.layers]
    budget = ScenarioBudget(latency_ms=total_latency_ms(full) * 0.6)
    pruned, kept, info = prune_to_budget(unified, pred, budget, PruneTuneConfig(scan_step=0.1, tolerance=0.02))
    counts = [len(kept[layer.name]) for layer in layout.layers]
    assert total_latency_ms(counts) <= budget.latency_ms
    assert info["counts"] == counts and 0 < info["pruning_ratio"] < 1
    assert all(1 <= c <= d for c, d in zip(counts, full, strict=True))
    gated = {layer.name for layer in layout.layers}
    before = dict(unified.trunk.named_modules())
    for name, mod in pruned.trunk.named_modules():
        if isinstance(mod, torch.nn.Conv2d) and name not in gated:
            assert mod.out_channels == before[name].out_channels, name  # stem, block outputs untouched
    # the pruned unified model answers every task like the folded compact model of that task
    task = space.task("exactly two 0")
    compact = fold_task(pruned, kept, space.encode([task])[0], supernet, {"task": task.name})
    x = torch.rand(6, 1, 56, 56)
    with torch.no_grad():
        ref = pruned(x, space.encode([task]).expand(6, -1))
        assert torch.allclose(compact(x), ref, atol=1e-5)
    assert counts_of(compact) == counts
    for layer in layout.layers:
        assert compact.spec.kept[layer.name] == kept[layer.name].tolist()
    with pytest.raises(SearchError, match="cannot meet"):
        prune_to_budget(unified, pred, ScenarioBudget(latency_ms=0.6), PruneTuneConfig(scan_step=0.25))


def test_prune_to_budget_falls_back_to_uniform_pruning_when_global_cannot_meet_it(supernet, space):
    from host.baselines.models import gated_module

    layout = supernet.gate_layout()
    unified = build_unified(supernet, space, init_net=supernet)
    with torch.no_grad():  # the widest layer's modules all look unimportant: at high global ratios DepGraph
        gated_module(unified.trunk, layout.layers[-1].name).weight.mul_(1e-3)  # keeps that layer whole
    budget = ScenarioBudget(latency_ms=total_latency_ms([45]))  # 45 modules: global pruning gets no lower than 47
    _, kept, info = prune_to_budget(unified, LinearPredictor(layout), budget,
                                    PruneTuneConfig(scan_step=0.05, tolerance=0.02))
    counts = [len(kept[layer.name]) for layer in layout.layers]
    assert info["pruning"] == "uniform per layer" and total_latency_ms(counts) <= budget.latency_ms
    assert all(c >= 1 for c in counts)


def test_unified_training_save_load_and_prune_tune(supernet, space, adapter, tmp_path):
    layout = supernet.gate_layout()
    cfg = UnifiedConfig(train=TINY)
    unified, log = train_unified(supernet, space, adapter, cfg)
    assert log.steps == 2
    path = save_unified(unified, log, cfg, space, tmp_path / "u")
    again, meta = load_unified(path, supernet, space)
    assert meta["train_log"]["steps"] == 2
    x, enc = torch.rand(3, 1, 56, 56), space.encode(["exactly one 3"] * 3)
    with torch.no_grad():
        assert torch.equal(again(x, enc), unified(x, enc))
    meta_file = path / "unified.json"
    bad = json.loads(meta_file.read_text())
    bad["space"]["fingerprint"] = "0" * 64
    meta_file.write_text(json.dumps(bad))
    with pytest.raises(SpecError, match="another task space"):
        load_unified(path, supernet, space)
    budget = ScenarioBudget(latency_ms=total_latency_ms([layer.modules for layer in layout.layers]) * 0.5)
    model = prune_tune(unified, supernet, adapter, space.task("exactly one 3"), budget, LinearPredictor(layout),
                       PruneTuneConfig(finetune=TINY, scan_step=0.1, tolerance=0.05))
    assert total_latency_ms(model.counts) <= budget.latency_ms
    assert model.train.steps == 2 and model.sizing["seconds_prune"] > 0
    assert model.compact(torch.rand(2, 1, 56, 56)).shape == (2, 2)


# ---- the comparison, end to end on a real agent (loopback) ----------------------------------------------


@pytest.fixture()
def agent_addr(tmp_path):
    from tests.support.agent_servers import agent_server

    with agent_server(tmp_path / "agent-cache") as (addr, _):
        yield addr


@pytest.mark.slow  # trains both baselines end to end
def test_comparison_end_to_end(tmp_path, agent_addr):
    from host.baselines.compare import Comparison, ComparisonSettings, budgets_from_profile, scenarios_for
    from host.baselines.device import load_device
    from host.generate import ModelFactory

    factory = ModelFactory.load(space="numvqa")
    layout = factory.models.supernet.gate_layout()
    pred = load_device("dev-xeon-2c", layout)  # the shipped profile: NN-Factory's search needs a real one
    settings = ComparisonSettings(
        device="test-device", init="generator",
        retrain=RetrainConfig(train=TINY),
        unified=UnifiedConfig(train=TINY),
        prune_tune=PruneTuneConfig(finetune=TINY, scan_step=0.2, tolerance=0.1),
        test_per_task=20,
    )
    logs: list[str] = []
    cmp = Comparison(factory, settings, tmp_path / "work", predictor=pred, log=logs.append)
    budgets = budgets_from_profile(pred, layout, [0.6])
    scenarios = scenarios_for(["exactly one 3"], budgets)
    cmp.train(scenarios)
    assert cmp.record(scenarios[0], "retrain") is not None and cmp.record(scenarios[0], "prune_tune") is not None
    n_logs = len(logs)
    cmp.train(scenarios)  # cached: nothing retrained
    assert len(logs) == n_logs
    # other retrain settings on the same work dir: that baseline's record is not reused, the other one is
    from dataclasses import replace

    other = Comparison(factory, replace(settings, retrain=RetrainConfig(train=replace(TINY, steps=TINY.steps + 1))),
                       tmp_path / "work", predictor=pred, log=logs.append)
    assert other.record(scenarios[0], "retrain") is None
    assert other.record(scenarios[0], "prune_tune") is not None
    result = cmp.measure(scenarios, agent_addr, train_missing=False)
    row = result["scenarios"][0]
    assert row["budget_ms"] == budgets[0] and row["task"] == "exactly one 3"
    for method in ("nnfactory", "retrain", "prune_tune"):
        entry = row[method]
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["measured_latency_ms"] > 0 and entry["measured_memory_mb"] > 0
        assert entry["seconds"] > 0
        assert entry["bound_latency_ms"] <= budgets[0] + 1e-6  # every method was sized to the same budget
        assert isinstance(entry["meets_budget"], bool)
    assert set(result["mean"]) == {"nnfactory", "retrain", "prune_tune"}
    assert set(result["customize_seconds"]) == {"nnfactory", "retrain", "prune_tune"}
    assert result["one_time_seconds"]["prune_tune_unified_training"] > 0
    assert result["baseline_init"]["init"] == "generator"
    json.dumps(result)  # the benchmark writes it as JSON


def test_benchmark_rejects_unknown_task(tmp_path):
    from host.baselines.compare import Comparison, ComparisonSettings, Scenario
    from host.generate import ModelFactory

    factory = ModelFactory.load(space="numvqa")
    cmp = Comparison(factory, ComparisonSettings(device="x"), Path(tmp_path),
                     predictor=LinearPredictor(factory.models.supernet.gate_layout()))
    with pytest.raises(ConfigError, match="unknown task"):
        cmp.check_scenarios([Scenario("exactly seven 3", ScenarioBudget(2.0))])


def test_attrod_detector_baselines_fold_exactly_and_score_map():
    """The same baselines on the AttrOD detector (CenterNet): task embedding at the neck's BatchNorm."""
    pytest.importorskip("pycocotools")
    from host.tasks import get_family

    space = load_space("attrod")
    adapter = adapter_for(space)
    assert adapter.metric == "map50"
    supernet = get_family(space.family).objective(space).build_supernet("centernet_attrod").eval()
    layout = supernet.gate_layout()
    pred = LinearPredictor(layout)
    full = [layer.modules for layer in layout.layers]
    budget = ScenarioBudget(latency_ms=total_latency_ms(full) * 0.6)
    task = space.task(space.names("seen")[0])
    tiny = TrainSettings(steps=1, batch_size=4, warmup_steps=1)
    unified, _ = train_unified(supernet, space, adapter, UnifiedConfig(train=tiny))
    pruned, kept, _info = prune_to_budget(unified, pred, budget, PruneTuneConfig(scan_step=0.25, tolerance=0.1))
    compact = fold_task(pruned, kept, space.encode([task])[0], supernet, {"task": task.name})
    test = adapter.test_set(task, 6, seed=3)
    with torch.no_grad():
        ref = pruned(test.inputs, space.encode([task]).expand(len(test.inputs), -1))
        assert torch.allclose(compact(test.inputs), ref, atol=1e-5)
    assert total_latency_ms(counts_of(compact)) <= budget.latency_ms
    assert 0.0 <= adapter.score(compact, test) <= 1.0
    model = retrain(supernet, adapter, task, budget, pred, RetrainConfig(train=tiny), init_net=supernet)
    assert model.train.steps == 1 and counts_of(model.compact) == model.counts


def test_training_stops_at_its_cpu_cap_not_at_waiting_time():
    from host.baselines.train import run_training

    w = torch.nn.Parameter(torch.ones(4))

    def step(gen: torch.Generator) -> tuple[torch.Tensor, int, int]:
        sum(i * i for i in range(20000))  # a little CPU work per step
        return (w * torch.rand(4, generator=gen)).sum(), 0, 1

    log = run_training(step, [w], [], TrainSettings(steps=10_000, batch_size=2, cpu_cap_s=0.05), stream="t")
    assert log.stopped_by == "cpu_cap" and 0 < log.steps < 10_000 and log.cpu_seconds >= 0.05
    assert "cpu_cap_s" in TrainSettings(steps=1, cpu_cap_s=1.0).to_json()
    assert "cpu_cap_s" not in TrainSettings(steps=1).to_json()  # settings recorded before it existed stay equal


def test_benchmark_budget_fractions_per_space() -> None:
    """`benchmarks/baselines.py --budget-fractions`: one list for every space, or one per named space."""
    import importlib.util

    from host.errors import ConfigError

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"
    spec = importlib.util.spec_from_file_location("_nnf_bench_baselines", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.fractions_for("0.45,0.6", "attrod") == [0.45, 0.6]
    assert bench.fractions_for("numvqa=0.45,0.6;attrod=0.7,0.85", "attrod") == [0.7, 0.85]
    assert bench.fractions_for(bench.DEFAULT_FRACTIONS, "numvqa") == [0.45, 0.6]  # the shipped results' budgets
    with pytest.raises(ConfigError, match="no fractions for space 'other'"):
        bench.fractions_for("numvqa=0.45", "other")
    for bad in ("0.45,x", "numvqa=", "attrod=1.5"):
        with pytest.raises(ConfigError, match="not a list of fractions"):
            bench.fractions_for(bad, "attrod")
