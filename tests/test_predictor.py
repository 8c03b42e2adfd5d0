"""Predictor fitting on synthetic data with known coefficients: the fit must recover them."""

from __future__ import annotations

import numpy as np
import pytest

from host.errors import ConfigError, SpecError
from host.gates import GatedLayer, GateLayout
from host.profiling.predictor import LatencyModel, LatencySchema, MemoryModel, accuracy, active_counts


def _layout() -> GateLayout:
    layers = (
        GatedLayer("b1.conv1", 16, 10, 100, (8, 8), "conv"),
        GatedLayer("b1.conv2", 24, 10, 100, (8, 8), "conv", inputs_from=("b1.conv1",)),
        GatedLayer("b2.conv1", 32, 10, 100, (4, 4), "conv"),
        GatedLayer("b2.conv2", 32, 10, 100, (4, 4), "conv", inputs_from=("b2.conv1",)),
    )
    return GateLayout(backbone="resnet", config="synthetic", layers=layers)


def _counts(layout: GateLayout, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, d + 1, size=n) for d in layout.module_counts], axis=1).astype(float)


@pytest.mark.parametrize("variant", ["linear", "improved"])
def test_recovers_known_coefficients(variant: str) -> None:
    layout = _layout()
    schema = LatencySchema.named(variant)
    names = schema.feature_names(layout)
    rng = np.random.default_rng(1)
    true = rng.uniform(0.5, 5.0, size=len(names))
    true[0] = 300.0  # bias
    counts = _counts(layout, 400, seed=2)
    y = schema.features(layout, counts) @ true
    model = LatencyModel(layout, schema).fit(counts, y)
    np.testing.assert_allclose(model.coef, true, rtol=1e-6, atol=1e-6)
    got = model.coefficients()
    assert got["bias"] == pytest.approx(300.0, rel=1e-6)
    assert set(got) == set(names)


def test_nnls_keeps_coefficients_non_negative_and_linear_misses_interactions() -> None:
    layout = _layout()
    counts = _counts(layout, 600, seed=3)
    # Ground truth with a strong interaction term: the linear baseline cannot express it.
    y = 100 + 2 * counts[:, 0] + 0.5 * counts[:, 0] * counts[:, 1] + 3 * counts[:, 2] + 0.2 * counts[:, 2] * counts[:, 3]
    y = y + 40 * (counts[:, 3] > 0)
    test_counts = _counts(layout, 200, seed=4)
    y_test = (
        100 + 2 * test_counts[:, 0] + 0.5 * test_counts[:, 0] * test_counts[:, 1] + 3 * test_counts[:, 2]
        + 0.2 * test_counts[:, 2] * test_counts[:, 3] + 40 * (test_counts[:, 3] > 0)
    )
    lin = LatencyModel(layout, LatencySchema.named("linear")).fit(counts, y)
    imp = LatencyModel(layout, LatencySchema.named("improved")).fit(counts, y)
    assert np.all(lin.coef >= 0) and np.all(imp.coef >= 0)
    acc_lin = accuracy(lin.predict(test_counts), y_test, 0.10)
    acc_imp = accuracy(imp.predict(test_counts), y_test, 0.10)
    assert acc_imp["mape"] < 1e-6
    assert acc_lin["mape"] > 0.02  # the baseline really is worse here


def test_noisy_fit_is_close() -> None:
    layout = _layout()
    schema = LatencySchema.named("linear")
    counts = _counts(layout, 2000, seed=5)
    true = np.array([500.0, 3.0, 1.0, 2.0, 4.0])
    rng = np.random.default_rng(6)
    y = (schema.features(layout, counts) @ true) * rng.normal(1.0, 0.02, size=len(counts))
    model = LatencyModel(layout, schema).fit(counts, y)
    np.testing.assert_allclose(model.coef, true, rtol=0.05)


def test_memory_model_recovers_bias_and_scales() -> None:
    rng = np.random.default_rng(7)
    params = rng.uniform(1e5, 5e7, size=300)
    act = rng.uniform(1e4, 1e7, size=300)
    mem = 20e6 + 1.3 * params + 1.6 * act
    layers = rng.integers(0, 9, size=300)
    mem = mem + 5e5 * layers
    model = MemoryModel().fit(params, act, mem, layers)
    np.testing.assert_allclose(model.coef, [20e6, 1.3, 1.6, 5e5], rtol=1e-6)
    again = MemoryModel.from_json(model.to_json())
    np.testing.assert_allclose(again.predict(params[:5], act[:5], layers[:5]), mem[:5], rtol=1e-9)
    plain = MemoryModel(active_layers=False).fit(params, act, mem - 5e5 * layers)
    np.testing.assert_allclose(plain.coef, [20e6, 1.3, 1.6, 0.0], rtol=1e-6)
    old = MemoryModel.from_json({"coefficients": {"bias": 1.0, "param_bytes": 2.0, "peak_activation_bytes": 3.0}})
    np.testing.assert_allclose(old.coef, [1.0, 2.0, 3.0, 0.0])


def test_json_round_trip_and_layout_mismatch() -> None:
    layout = _layout()
    counts = _counts(layout, 100, seed=8)
    y = 50 + counts.sum(axis=1)
    model = LatencyModel(layout, LatencySchema.named("improved")).fit(counts, y)
    again = LatencyModel.from_json(layout, model.to_json())
    np.testing.assert_allclose(again.predict(counts), model.predict(counts))
    other = GateLayout("resnet", "other", layout.layers[:2])
    with pytest.raises(SpecError, match="another supernet"):
        LatencyModel.from_json(other, model.to_json())


def test_active_counts_and_bad_input() -> None:
    import torch

    layout = _layout()
    gates = [torch.zeros(3, d) for d in layout.module_counts]
    gates[1][1, :5] = 1
    c = active_counts(layout, gates)
    assert c.shape == (3, 4) and c[1, 1] == 5 and c.sum() == 5
    with pytest.raises(ConfigError):
        active_counts(layout, gates[:2])
    with pytest.raises(ConfigError, match="unknown latency predictor variant"):
        LatencySchema.named("quadratic")
    with pytest.raises(ConfigError, match="> 0"):
        LatencyModel(layout).fit(counts=_counts(layout, 5, 0), latency_us=np.zeros(5))
    acc = accuracy(np.array([105.0, 80.0]), np.array([100.0, 100.0]), 0.1)
    assert acc["within"] == 0.5 and acc["mape"] == pytest.approx(0.125)


@pytest.mark.parametrize("config", ["resnet_tiny", pytest.param("bottleneck_tiny", marks=pytest.mark.slow), "vit_tiny"])
def test_structure_model_is_exact_against_compact_specs(config: str) -> None:
    import torch

    from host.extraction import extract
    from host.gates import random_gates
    from host.profiling.predictor import StructureModel
    from host.supernets import build_supernet

    torch.manual_seed(0)
    net = build_supernet(config).eval()
    layout = net.gate_layout()
    model = StructureModel.calibrate(net)
    assert model.max_rel_error < 1e-9
    g = torch.Generator().manual_seed(1)
    gates = [random_gates(layout, r, generator=g, per_layer_jitter=0.5) for r in (0.05, 0.3, 0.7)]
    specs = [extract(net, x).spec for x in gates]
    counts = np.array([[int(t.sum()) for t in x] for x in gates])
    np.testing.assert_allclose(model.param_bytes(counts), [s.param_bytes() for s in specs], rtol=1e-9)
    np.testing.assert_allclose(model.peak_activation_bytes(counts), [s.peak_activation_bytes() for s in specs], rtol=1e-12)
    again = StructureModel.from_json(layout, model.to_json())
    np.testing.assert_allclose(again.param_bytes(counts), model.param_bytes(counts))
