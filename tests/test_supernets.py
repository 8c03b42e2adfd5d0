import pytest
import torch

from host.errors import ConfigError, GateError
from host.gates import activation_ratio, random_gates
from host.supernets import build_supernet, list_configs

SMALL = ["resnet_tiny", "bottleneck_tiny", "mobilenetv2_tiny", "vit_tiny", "resnet_numvqa"]


def test_registry_lists_full_and_small_configs():
    names = list_configs()
    for n in ["resnet18", "resnet34", "resnet50", "mobilenetv2", "vit_s16", *SMALL]:
        assert n in names


@pytest.mark.parametrize("name,params", [("resnet18", 11_689_512), ("resnet50", 25_557_032), ("mobilenetv2", 3_504_872)])
def test_full_size_shapes_match_reference_parameter_counts(name, params):
    with torch.device("meta"):
        net = build_supernet(name)
    assert sum(p.numel() for p in net.parameters()) == params


def test_gate_layouts_follow_the_design():
    assert build_supernet("resnet18").gate_layout().module_counts == [64, 64, 128, 128, 256, 256, 512, 512]
    r50 = build_supernet("bottleneck_tiny").gate_layout()
    names = [layer.name for layer in r50.layers]
    assert names[:2] == ["stages.0.0.conv1", "stages.0.0.conv2"]
    assert r50.layers[1].inputs_from == ("stages.0.0.conv1",)
    numvqa = build_supernet("resnet_numvqa").gate_layout()
    assert numvqa.total_modules == 480 and numvqa.num_layers == 8
    vit = build_supernet("vit_tiny").gate_layout()
    assert [layer.kind for layer in vit.layers] == ["ffn", "ffn"] and vit.module_counts == [64, 64]
    mb = build_supernet("mobilenetv2_tiny").gate_layout()
    assert all(layer.kind == "expand" for layer in mb.layers)
    assert mb.num_layers == 5  # the t=1 block is not gated


def test_per_module_costs_add_up_to_the_macs_removed():
    """Switching off one module of a BasicBlock conv1 removes exactly macs_per_module MACs."""
    from host.extraction import extract

    net = build_supernet("resnet_tiny").eval()
    layout = net.gate_layout()
    full = extract(net, layout.ones()).spec
    gates = layout.ones()
    gates[2][0] = 0
    less = extract(net, gates).spec
    assert full.macs() - less.macs() == layout.layers[2].macs_per_module
    assert full.params() - less.params() == layout.layers[2].params_per_module


@pytest.mark.parametrize("name", SMALL)
def test_forward_with_per_sample_gates(name):
    net = build_supernet(name).eval()
    layout = net.gate_layout()
    x = torch.randn(3, *net.input_shape)
    gates = [torch.rand(3, d) for d in layout.module_counts]
    out = net(x, gates)
    assert out.shape == (3, net.config.num_classes)
    # each row equals running that sample alone with its own gates
    for i in range(3):
        alone = net(x[i : i + 1], [g[i] for g in gates])
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    # all-ones gates equal no gates
    torch.testing.assert_close(net(x, layout.ones(3)), net(x), atol=0, rtol=0)


def test_soft_gates_are_differentiable():
    net = build_supernet("resnet_tiny")
    gates = [torch.rand(2, d, requires_grad=True) for d in net.gate_layout().module_counts]
    net(torch.randn(2, 3, 32, 32), gates).sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in gates)


def test_wrong_gate_shapes_are_rejected_with_clear_errors():
    net = build_supernet("resnet_tiny")
    layout = net.gate_layout()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(GateError, match="expected 4 gate tensors"):
        net(x, layout.ones()[:3])
    bad = layout.ones()
    bad[1] = torch.ones(layout.module_counts[1] + 1)
    with pytest.raises(GateError, match=r"stages\.1\.0\.conv1.*shape"):
        net(x, bad)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ConfigError, match="resnet18"):
        build_supernet("resnet19")
    with pytest.raises(ConfigError, match="unknown field"):
        build_supernet("resnet_tiny", depth=3)


def test_random_gates_and_activation_ratio():
    layout = build_supernet("resnet_numvqa").gate_layout()
    g = random_gates(layout, 0.25, generator=torch.Generator().manual_seed(1))
    assert abs(float(activation_ratio(g)) - 0.25) < 0.01
    jit = random_gates(layout, 0.5, per_layer_jitter=0.5, generator=torch.Generator().manual_seed(2))
    per_layer = [float(x.mean()) for x in jit]
    assert max(per_layer) - min(per_layer) > 0.2  # layers vary independently
    assert layout.fingerprint() == build_supernet("resnet_numvqa").gate_layout().fingerprint()
    assert layout.fingerprint() != build_supernet("resnet_tiny").gate_layout().fingerprint()


def test_mlp_head_and_specs_from_before_it():
    from host.supernets import config_from_dict
    from host.supernets.resnet import MLPHead

    net = build_supernet("resnet_numvqa")
    assert isinstance(net.fc, MLPHead) and net.fc.fc1.out_features == 128 and net.fc.fc2.out_features == 2
    # the head is ungated: the gate layout is that of the gated convs alone
    assert all(layer.name.startswith("stages.") for layer in net.gate_layout().layers)
    x = torch.rand(3, 1, 56, 56)
    with torch.no_grad():
        net.eval()
        manual = net.fc.fc2(torch.relu(net.fc.fc1(torch.flatten(net.pool(_features(net, x)), 1))))
        assert torch.allclose(net(x), manual, atol=1e-6)
    # a spec written before head_hidden existed rebuilds the standard linear classifier
    cfg = dict(net.config_dict())
    del cfg["head_hidden"]
    old = config_from_dict("resnet", cfg)
    assert old.head_hidden == 0
    assert isinstance(build_supernet("resnet_numvqa", head_hidden=0).fc, torch.nn.Linear)


def _features(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    for blocks in net.stages:
        for block in blocks:
            x = block(x)
    return x
