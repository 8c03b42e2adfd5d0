"""Search: Algorithm 1 and the batched search agree; live bisection finds the same limit with few probes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from host.errors import ConfigError, SearchError
from host.gates import GatedLayer, GateLayout
from host.profiling.budget import Budget, algorithm1, batched_search, limit_grid, live_search
from host.profiling.build import gates_sha256
from host.profiling.predictor import LatencyModel, LatencySchema, active_counts
from tests.support.campaign_fakes import synthetic_entry

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
    for chunk in (1, 7, 25, 100, 1000):  # chunked batches stop at the first batch holding a miss
        before = asm.calls
        c = batched_search(asm, task, ev, budget, chunk=chunk)
        assert c.grid_index == a.grid_index
        assert all(torch.equal(x, y) for x, y in zip(a.gates, c.gates, strict=True))
        assert asm.calls - before == c.assembler_calls == min(a.grid_index + 1, 99) // chunk + 1


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
        measured.append(gates_sha256(gates))
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


# ---- device-budget generation on a real supernet with a profile fitted on a known law ------------


class _Space:
    def task(self, name: str):
        class T:
            pass

        t = T()
        t.name = name
        return t


class _Factory:
    """Duck-typed ModelFactory: the resnet_tiny supernet and a deterministic fake assembler."""

    def __init__(self) -> None:
        from host.supernets import build_supernet

        torch.manual_seed(0)
        self.models = type("M", (), {})()
        self.models.supernet = build_supernet("resnet_tiny").eval()
        self.space = _Space()
        self.layout = self.models.supernet.gate_layout()

    def gates(self, tasks, limits):
        g = torch.Generator().manual_seed(sum(map(ord, tasks[0])))
        out = []
        for d in self.layout.module_counts:
            rank = torch.randperm(d, generator=g)
            k = torch.floor(torch.as_tensor(limits).reshape(-1, 1) * d)
            out.append((rank.reshape(1, -1) < k).float())
        return type("R", (), {"gates": out})()


@pytest.fixture(scope="module")
def device_profiles(tmp_path_factory):
    from host.profiling.device_profile import write_profile_entry
    from host.profiling.predictor import MemoryModel, StructureModel

    fac = _Factory()
    layout = fac.layout
    schema = LatencySchema.named("improved")
    coef = np.zeros(len(schema.feature_names(layout)))
    coef[0] = 500.0
    coef[1 : 1 + layout.num_layers] = 10.0
    lat = LatencyModel(layout, schema, coef=coef)
    mem = MemoryModel(coef=np.array([2e6, 1.0, 1.0, 0.0]))
    entry = synthetic_entry(layout, lat, mem, StructureModel.calibrate(fac.models.supernet), latency_margin=0.05)
    root = tmp_path_factory.mktemp("profiles")
    write_profile_entry("tiny-dev", {"cpu_model": "synthetic"}, entry, root)
    return fac, root


def test_generate_for_device_predictor_mode(device_profiles, tmp_path) -> None:
    from host.artifact import load_compact
    from host.profiling.budget import factory_assembler, generate_for_device
    from host.profiling.device_profile import load_predictor

    fac, root = device_profiles
    budget = Budget(latency_ms=1.2)  # 500 µs + 10 µs per module: ~70 of 120 modules
    compact, report = generate_for_device(fac, "two even", "tiny-dev", budget, out_dir=tmp_path / "m", profiles_root=root)
    pred = load_predictor("tiny-dev", fac.layout, root=root)
    want = batched_search(factory_assembler(fac), "two even", pred.guarded(), budget)
    assert report["limit"] == pytest.approx(want.limit) and 0.3 < report["limit"] < 1.0
    # the 5 % margin is applied: the raw prediction alone would allow a larger model
    raw = batched_search(factory_assembler(fac), "two even", pred, budget)
    assert raw.limit > report["limit"] and report["margin"]["latency"] == 0.05
    p = report["predicted"]
    assert p["latency_bound_ms"] <= 1.2 and p["latency_ms"] == pytest.approx(p["latency_bound_ms"] / 1.05, rel=1e-3)
    assert "measured" not in report and report["percentile"] == "p90" and report["runtime"] == "torchscript"
    assert report["drift_check"]["status"] == "skipped"
    meta = load_compact(tmp_path / "m").spec.meta
    assert meta["percentile"] == "p90" and meta["margin"]["latency"] == 0.05 and meta["drift_check"]["status"] == "skipped"
    assert load_compact(tmp_path / "m").spec.gates_fingerprint == compact.spec.gates_fingerprint
    _, rep_a1 = generate_for_device(fac, "two even", "tiny-dev", budget, method="algorithm1", profiles_root=root)
    assert rep_a1["limit"] == report["limit"] and rep_a1["search"]["rounds"] > 1


def test_generate_for_device_bad_inputs(device_profiles) -> None:
    from host.profiling.budget import generate_for_device

    fac, root = device_profiles
    with pytest.raises(SearchError, match="smallest reachable"):
        generate_for_device(fac, "x", "tiny-dev", Budget(latency_ms=0.1), profiles_root=root)
    with pytest.raises(ConfigError, match="no device profile for 'tiny-de'.*tiny-dev"):
        generate_for_device(fac, "x", "tiny-de", Budget(latency_ms=1.0), profiles_root=root)
    with pytest.raises(ConfigError, match="--agent"):
        generate_for_device(fac, "x", "tiny-dev", Budget(latency_ms=1.0), live=True, profiles_root=root)
    with pytest.raises(ConfigError, match="runtime 'torchscript', not on 'onnx'.*--runtime onnx"):
        generate_for_device(fac, "x", "tiny-dev", Budget(latency_ms=1.0), runtime="onnxruntime", profiles_root=root)
    with pytest.raises(ConfigError, match="--drift-check on needs the agent"):
        generate_for_device(fac, "x", "tiny-dev", Budget(latency_ms=1.0), drift_check="on", profiles_root=root)


# ---- nnf generate --device on a (briefly) trained NumVQA checkpoint, with a real agent for --live ----


# numvqa_run: tests/conftest.py (session-scoped, shared with the export tests)


def _gen(run, profiles, out, *extra):
    from host.cli import main

    return main(["generate", "--space", "numvqa", "--task", "exactly one 0", "--checkpoint", str(run),
                 "--profiles-dir", str(profiles), "--out", str(out), "--json", *extra])


def test_cli_generate_device_budget(numvqa_run, tmp_path, capsys) -> None:
    import json as _json

    run, profiles, layout = numvqa_run
    rc = _gen(run, profiles, tmp_path / "a", "--device", "synthetic-dev", "--latency-ms", "2.2")
    assert rc == 0
    rep = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["predicted"]["latency_ms"] <= 2.2 and rep["activation_ratio"] <= rep["limit"]
    assert rep["search"]["method"] == "batched" and (tmp_path / "a" / "spec.json").is_file()
    rc = _gen(run, profiles, tmp_path / "b", "--device", "synthetic-dev", "--latency-ms", "2.2", "--search", "algorithm1")
    rep1 = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and rep1["limit"] == rep["limit"] and rep1["search"]["rounds"] > 1
    rc = _gen(run, profiles, tmp_path / "c", "--device", "synthetic-dev", "--latency-ms", "0.5")
    err = capsys.readouterr().err
    assert rc == 2 and "smallest reachable" in err and not (tmp_path / "c").exists()
    rc = _gen(run, profiles, tmp_path / "d", "--device", "nosuch", "--latency-ms", "2")
    assert rc == 2 and "no device profile for 'nosuch'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_generate_live_on_a_real_agent(numvqa_run, tmp_path, capsys) -> None:
    import json as _json

    from agent.launch import local_agent

    run, profiles, _ = numvqa_run

    with local_agent(cache_dir=tmp_path / "cache", no_auth=True, extra_args=["--device-lock", "none"]) as agent:
        addr = agent.address
        rc = _gen(run, profiles, tmp_path / "live", "--device", "synthetic-dev", "--latency-ms", "1000", "--live",
                  "--agent", addr)
        rep = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 0 and rep["search"]["measured"] and rep["measured"]["fits"]
        assert rep["limit"] == 1.0  # a 1 s budget fits the full model: found with few measurements
        assert 1 <= rep["measured"]["measurements"] <= 4 and rep["measured"]["latency_ms"] > 0
        rc = _gen(run, profiles, tmp_path / "none", "--device", "synthetic-dev", "--latency-ms", "0.001", "--live",
                  "--agent", addr)
        assert rc == 2 and "smallest reachable" in capsys.readouterr().err


def test_factory_assembler_matches_factory_gates(numvqa_run) -> None:
    from host.generate import ModelFactory
    from host.profiling.budget import factory_assembler

    run, _, _ = numvqa_run
    factory = ModelFactory.load(space="numvqa", checkpoint=run)
    assemble = factory_assembler(factory)
    grid = limit_grid(0.01)
    for task in factory.space.names("seen")[:3] + factory.space.names("unseen")[:1]:
        fast = assemble(task, grid)
        ref = factory.gates([task] * len(grid), grid).gates
        assert all(torch.equal(a, b) for a, b in zip(fast, ref, strict=True))
        one = assemble(task, grid[17:18])
        assert all(torch.equal(a[0], b[17]) for a, b in zip(one, ref, strict=True))


@pytest.mark.slow
def test_cli_generate_checks_drift_on_a_real_agent(numvqa_run, tmp_path, capsys) -> None:
    """Predicted generation with the device's agent at hand re-measures the profile's reference subnets first:
    proceed, rescale (recorded in the model's spec) or refuse (no model written)."""
    import json as _json
    import shutil
    import subprocess

    from host.artifact import read_spec
    from host.gates import random_gates
    from host.profiling.build import ExtractingBuilder
    from host.profiling.measurers import AgentMeasurer, CandidateMeasurer
    from host.profiling.plan import MeasureSettings
    from host.profiling.store import pack_gates
    from host.supernets import build_supernet

    run, profiles, layout = numvqa_run
    root = Path(__file__).resolve().parents[1]
    agent = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--port", "0", "--cache-dir", str(tmp_path / "cache")],
                             cwd=str(root), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = agent.stdout.readline()
        addr = "127.0.0.1:" + dict(kv.split("=", 1) for kv in line.split()[1:])["port"]
        net = build_supernet(layout.config)
        g = torch.Generator().manual_seed(5)
        refs = [random_gates(layout, r, generator=g) for r in (1.0, 0.5, 0.25)]
        settings = MeasureSettings(warmup_runs=2, repeats=20, min_time_s=0.05)
        mine = tmp_path / "profiles"
        shutil.copytree(profiles, mine)
        path = mine / "synthetic-dev.json"

        def write(scale: list[float], level: float, shape: float) -> None:
            """Profile the references as measured now, times ``scale`` (fresh, so the VM's drift between the
            test's measurement and the CLI's stays small), with the given tolerances."""
            with AgentMeasurer(addr) as m:
                cm = CandidateMeasurer(ExtractingBuilder(net), m, net.input_shape, settings, stat="p50")
                measured = [cm.measure(r) for r in refs]
            data = _json.loads(path.read_text())
            entry = data["profiles"][f"{layout.config}/torchscript"]
            entry["measure"] = {"threads": 1, "warmup_runs": 2, "repeats": 20, "min_time_s": 0.05, "deadline_s": 60.0}
            entry["references"] = {
                "ratios": [1.0, 0.5, 0.25], "gates": [pack_gates(r) for r in refs],
                "latency_us": {p: [x.latency(p) * s for x, s in zip(measured, scale, strict=True)]
                               for p in ("p50", "p90", "p99")},
                "peak_bytes": [float(x.peak_bytes) for x in measured], "rounds": 3,
                "tolerance": {p: {"level": level, "shape": shape} for p in ("p50", "p90", "p99")} | {"memory": 0.5}}
            path.write_text(_json.dumps(data))

        def attempt(out: str, scale: list[float], level: float, shape: float, expect: str) -> tuple[int, dict]:
            """Timings on a shared VM can jump 1.5-2x between two measurements a second apart (seen in CI):
            up to three tries, each against a fresh measurement, for the outcomes that depend on a level."""
            for _ in range(3):
                shutil.rmtree(tmp_path / out, ignore_errors=True)
                write(scale, level, shape)
                rc = _gen(run, mine, tmp_path / out, "--device", "synthetic-dev", "--latency-ms", "1000",
                          "--percentile", "50", "--agent", addr)
                rep = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
                if rep.get("drift_check", {}).get("status") == expect:  # a refusal (> 2x jump) has none: retry
                    break
            return rc, rep

        # as measured a moment ago: proceed (generous level: only the wiring is under test here; judge()'s
        # thresholds have their own tests)
        rc, rep = attempt("ok", [1.0, 1.0, 1.0], level=0.6, shape=0.6, expect="proceed")
        assert rc == 0 and rep["drift_check"]["status"] == "proceed" and len(rep["drift_check"]["latency_ratios"]) == 3
        assert rep["drift_check"]["percentile"] == "p50"
        assert rep["measured"]["fits"] and rep["measured"]["measurements"] == 1  # the chosen model (references apart)
        assert read_spec(tmp_path / "ok")[1]["meta"]["drift_check"]["status"] == "proceed"

        # the device got ~1.5x slower, uniformly: rescaled, and the factor recorded in the spec
        rc, rep = attempt("slow", [1 / 1.5] * 3, level=0.1, shape=0.6, expect="rescaled")
        d = rep["drift_check"]
        assert rc == 0 and d["status"] == "rescaled" and 1.1 < d["latency_factor"] <= 2.0, d
        assert read_spec(tmp_path / "slow")[1]["meta"]["drift_check"]["latency_factor"] == d["latency_factor"]

        # the small reference 50x slower, the others not: refused whatever the VM does, and no model written
        write([1.0, 1.0, 0.02], level=0.1, shape=0.3)
        rc = _gen(run, mine, tmp_path / "no", "--device", "synthetic-dev", "--latency-ms", "1000", "--percentile", "50",
                  "--agent", addr)
        err = capsys.readouterr().err
        assert rc == 2 and "drift check on synthetic-dev" in err and "--live" in err and not (tmp_path / "no").exists()
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        agent.stdout.close()
