"""Exactness of extraction for every backbone, and the compact model's storage and bad inputs."""

import json

import pytest
import torch

from host.artifact import SPEC_FILE, WEIGHTS_FILE, load_compact, save_compact
from host.compact import SPEC_VERSION
from host.errors import ArtifactError, ConfigError, GateError, SpecError
from host.extraction import extract
from host.gates import random_gates
from host.supernets import build_supernet
from tests.support.helpers import randomize_norms

BACKBONES = ["resnet_tiny", "bottleneck_tiny", "mobilenetv2_tiny", "vit_tiny", "resnet_numvqa"]
RATIOS = [0.05, 0.25, 0.5, 0.9]


def _net(name):
    return randomize_norms(build_supernet(name), seed=hash(name) % 1000).eval()


def _assert_exact(net, gates, x):
    compact = extract(net, gates)
    with torch.no_grad():
        want = net(x, gates)
        got = compact(x)
    assert (got - want).abs().max().item() <= 1e-4
    return compact


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_compact_equals_gated_supernet(name, ratio):
    net = _net(name)
    x = torch.randn(2, *net.input_shape)
    gen = torch.Generator().manual_seed(int(ratio * 1000))
    gates = random_gates(net.gate_layout(), ratio, generator=gen, per_layer_jitter=0.3)
    compact = _assert_exact(net, gates, x)
    assert compact.spec.activation_ratio == pytest.approx(
        sum(float(g.sum()) for g in gates) / net.gate_layout().total_modules)


@pytest.mark.parametrize("name", BACKBONES)
def test_all_zero_and_all_one_layers(name):
    """Whole branches off (only the kept constants remain), whole layers on, and mixtures."""
    net = _net(name)
    layout = net.gate_layout()
    x = torch.randn(2, *net.input_shape)
    zeros = [torch.zeros(d) for d in layout.module_counts]
    ones = layout.ones()
    _assert_exact(net, zeros, x)
    c = _assert_exact(net, ones, x)
    assert c.spec.params() == sum(p.numel() for p in net.parameters())
    alternating = [zeros[i] if i % 2 else ones[i] for i in range(layout.num_layers)]
    _assert_exact(net, alternating, x)
    alternating2 = [ones[i] if i % 2 else zeros[i] for i in range(layout.num_layers)]
    _assert_exact(net, alternating2, x)


def test_bottleneck_with_only_conv1_off_keeps_the_propagated_constant():
    net = _net("bottleneck_tiny")
    layout = net.gate_layout()
    gates = layout.ones()
    gates[0] = torch.zeros(layout.module_counts[0])  # conv1 off, conv2 on: relu(bn2 shift) flows via conv3
    x = torch.randn(2, *net.input_shape)
    compact = _assert_exact(net, gates, x)
    assert "stages.0.0.branch_const" in compact.net.state_dict()


def test_compact_is_physically_smaller_and_independent_of_the_supernet():
    net = _net("resnet_tiny")
    gates = random_gates(net.gate_layout(), 0.25, generator=torch.Generator().manual_seed(0))
    compact = extract(net, gates)
    assert compact.net.stages[0][0].conv1.weight.shape[0] == int(gates[0].sum())
    assert compact.spec.params() < sum(p.numel() for p in net.parameters()) * 0.6
    assert compact.spec.macs() < extract(net, net.gate_layout().ones()).spec.macs() * 0.6
    x = torch.randn(1, 3, 32, 32)
    before = compact(x)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    torch.testing.assert_close(compact(x), before)


def test_costs_are_computed_from_the_spec():
    net = build_supernet("resnet18")
    compact = extract(net, net.gate_layout().ones())
    assert compact.spec.params() == 11_689_512
    assert 1.80e9 < compact.spec.macs() < 1.83e9
    assert compact.spec.peak_activation_bytes() == 64 * 112 * 112 * 4  # stem output


@pytest.mark.parametrize("name", BACKBONES)
def test_save_and_load_round_trip(tmp_path, name):
    net = _net(name)
    gates = random_gates(net.gate_layout(), 0.3, generator=torch.Generator().manual_seed(3), per_layer_jitter=0.3)
    compact = extract(net, gates, meta={"task": "t"})
    out = save_compact(compact, tmp_path / "m")
    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["version"] == SPEC_VERSION and spec["backbone"] == net.backbone
    assert spec["kept"] and spec["weights"]["sha256"]
    loaded = load_compact(out)
    x = torch.randn(2, *net.input_shape)
    torch.testing.assert_close(loaded(x), compact(x), atol=0, rtol=0)
    assert loaded.spec.gates_fingerprint == compact.spec.gates_fingerprint
    assert [g.tolist() for g in loaded.spec.gates()] == [g.tolist() for g in gates]
    assert not list(tmp_path.glob(".m*")), "no temp directories are left behind"


# ---- bad input ------------------------------------------------------------------------------------------


def test_wrong_length_and_non_binary_gates():
    net = build_supernet("resnet_tiny")
    layout = net.gate_layout()
    with pytest.raises(GateError, match="expected 4 gate tensors"):
        extract(net, layout.ones()[:-1])
    short = layout.ones()
    short[0] = torch.ones(layout.module_counts[0] - 1)
    with pytest.raises(GateError, match="shape"):
        extract(net, short)
    soft = layout.ones()
    soft[1][3] = 0.7
    with pytest.raises(GateError, match="must be hard"):
        extract(net, soft)
    with pytest.raises(GateError, match="one gate tensor per gated layer"):
        extract(net, layout.flatten(layout.ones()))
    with pytest.raises(ConfigError, match="full supernet"):
        extract(extract(net, layout.ones()).net, layout.ones())


def _saved(tmp_path):
    net = build_supernet("resnet_tiny")
    return save_compact(extract(net, net.gate_layout().ones()), tmp_path / "m")


def test_spec_from_a_newer_version_is_refused(tmp_path):
    d = _saved(tmp_path)
    spec = json.loads((d / SPEC_FILE).read_text())
    spec["version"] = SPEC_VERSION + 1
    (d / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(SpecError, match="newer NN-Factory"):
        load_compact(d)


def test_truncated_and_corrupt_weights_are_detected(tmp_path):
    d = _saved(tmp_path)
    w = d / WEIGHTS_FILE
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_compact(d)
    # without the recorded checksum the safetensors reader itself must still refuse it
    spec = json.loads((d / SPEC_FILE).read_text())
    del spec["weights"]["sha256"]
    (d / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_compact(d)


def test_not_a_model_dir_and_corrupt_spec(tmp_path):
    with pytest.raises(SpecError, match="not a compact model directory"):
        load_compact(tmp_path)
    d = _saved(tmp_path)
    (d / SPEC_FILE).write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_compact(d)
    (d / SPEC_FILE).write_text(json.dumps({"format": "nnfactory.compact-model", "version": 1, "backbone": "alexnet"}))
    with pytest.raises(ConfigError, match="unknown backbone"):
        load_compact(d)


def test_save_refuses_to_clobber_an_unrelated_directory(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    net = build_supernet("resnet_tiny")
    with pytest.raises(ArtifactError, match="holds no compact model"):
        save_compact(extract(net, net.gate_layout().ones()), other)
    assert (other / "cat.jpg").exists()


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    d = _saved(tmp_path)
    before = (d / WEIGHTS_FILE).read_bytes()
    import host.artifact as art

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(art, "write_json_atomic", boom)
    net = build_supernet("resnet_tiny")
    gates = random_gates(net.gate_layout(), 0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(OSError, match="disk full"):
        save_compact(extract(net, gates), d)
    assert (d / WEIGHTS_FILE).read_bytes() == before  # the old model is intact
    assert load_compact(d) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left
