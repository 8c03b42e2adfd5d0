"""The gated detector: mAP@0.5 wiring (pycocotools COCOeval), targets and decoding, exact extraction,
exports in their runtimes, the device-profile structure model, and a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from host.cli import main
from host.detection import Detections, coco_map50, decode, detection_loss, make_targets
from host.errors import ConfigError
from host.exports import FLOAT_ATOL, export_artifact, load_runner
from host.extraction import extract
from host.gates import random_gates
from host.generate import ModelFactory, evaluate_generated
from host.profiling.predictor import StructureModel
from host.supernets import build_supernet
from host.training import TrainConfig, Trainer
from tests.support.helpers import randomize_norms

NONE = torch.zeros(0, dtype=torch.long)


def _dets(boxes, scores, classes) -> Detections:
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                      torch.tensor(classes, dtype=torch.long))


def test_coco_map50_known_answers():
    gt_b = [torch.tensor([[10.0, 10, 20, 20]]), torch.tensor([[30.0, 30, 10, 10]])]
    gt_c = [torch.tensor([0]), torch.tensor([0])]
    perfect = [_dets([[10, 10, 20, 20]], [0.9], [0]), _dets([[30, 30, 10, 10]], [0.7], [0])]
    assert coco_map50(gt_b, gt_c, perfect, 2)["map50"] == pytest.approx(1.0)
    # One hit ranked first, one false positive, one object missed: precision 1 up to recall 0.5, then
    # nothing; COCO's 101-point interpolation gives 51/101.
    half = [_dets([[10, 10, 20, 20], [40, 40, 10, 10]], [0.9, 0.8], [0, 0]), _dets([], [], [])]
    r = coco_map50(gt_b, gt_c, half, 2)
    assert r["map50"] == pytest.approx(51 / 101) and r["per_class"] == {0: pytest.approx(51 / 101), 1: None}
    # The false positive ranked first instead: precision 1/2 at recall 1/2 -> 51 points at 0.5.
    r = coco_map50(gt_b, gt_c, [_dets([[10, 10, 20, 20], [40, 40, 10, 10]], [0.8, 0.9], [0, 0]),
                                _dets([], [], [])], 2)
    assert r["map50"] == pytest.approx(0.5 * 51 / 101)
    # IoU just below 0.5 is a miss; the right box of the wrong category too.
    shifted = [_dets([[20.5, 10, 20, 20]], [0.9], [0]), _dets([[30, 30, 10, 10]], [0.9], [1])]
    assert coco_map50(gt_b, gt_c, shifted, 2)["map50"] == pytest.approx(0.0)
    # Two categories: mean over those with ground truth.
    two_c = [torch.tensor([0]), torch.tensor([1])]
    r = coco_map50(gt_b, two_c, [_dets([[10, 10, 20, 20]], [0.9], [0]), _dets([], [], [])], 3)
    assert r["map50"] == pytest.approx(0.5) and r["per_class"] == {0: pytest.approx(1.0), 1: 0.0, 2: None}
    assert coco_map50([torch.zeros(0, 4)], [NONE], [_dets([], [], [])], 2)["map50"] is None
    with pytest.raises(ConfigError):
        coco_map50(gt_b, gt_c, perfect[:1], 2)


def test_targets_decode_back_to_the_boxes():
    boxes = torch.tensor([[[10.0, 12, 20, 24], [30, 5, 8, 16], [0, 0, 0, 0]]])
    classes, pos = torch.tensor([[0, 1, 0]]), torch.tensor([[True, True, False]])
    t = make_targets(boxes, classes, pos, 2, (16, 16), 4)
    assert t.heatmap.amax(dim=(2, 3)).tolist() == [[1.0, 1.0]]
    out = torch.zeros(1, 6, 16, 16)
    out[:, :2] = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    reg = torch.zeros(1, 4, 256)
    for n in range(2):
        reg[0, :2, t.index[0, n]] = t.size[0, n]
        reg[0, 2:, t.index[0, n]] = t.offset[0, n]
    out[:, 2:] = reg.view(1, 4, 16, 16)
    d = decode(out, 2, 4, max_dets=2)[0]
    order = d.classes.argsort()  # equal scores: any order
    assert torch.allclose(d.boxes[order], boxes[0, :2], atol=1e-5) and d.classes[order].tolist() == [0, 1]
    loss, parts = detection_loss(out, t, 2)
    assert parts["size"] == 0 and parts["off"] == 0 and loss < 0.01
    bad = out.clone()
    bad[:, :2] = -bad[:, :2]
    assert detection_loss(bad, t, 2)[0] > 10 * loss
    with pytest.raises(ConfigError, match="detector output"):
        decode(out, 3, 4)


@pytest.mark.parametrize("config", ["centernet_tiny", "centernet_attrod"])
def test_detector_extraction_is_exact(config):
    net = randomize_norms(build_supernet(config), seed=1).eval()
    layout = net.gate_layout()
    assert [x.name for x in layout.layers[-2:]] == ["heatmap.hidden", "box.hidden"]
    x = torch.rand(3, *net.input_shape)
    gen = torch.Generator().manual_seed(0)
    cases = [random_gates(layout, r, generator=gen, per_layer_jitter=0.3) for r in (0.05, 0.3, 0.7)]
    zero_heads = random_gates(layout, 0.5, generator=gen)
    zero_heads[-1] = torch.zeros_like(zero_heads[-1])  # box head off: its bias everywhere
    zero_heads[0] = torch.zeros_like(zero_heads[0])  # a residual branch off
    cases += [zero_heads, layout.ones(), [torch.zeros(d) for d in layout.module_counts]]
    for gates in cases:
        compact = extract(net, gates)
        with torch.no_grad():
            ref, out = net(x, gates=gates), compact(x)
        assert out.shape == (3, 8, net.input_shape[1] // 4, net.input_shape[2] // 4)
        assert (out - ref).abs().max() < 1e-5
        assert compact.spec.params() == sum(p.numel() for p in compact.parameters())
    assert extract(net, cases[1]).spec.macs() < extract(net, layout.ones()).spec.macs()


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export", pytest.param("onnx", marks=pytest.mark.slow),
                                 pytest.param("tflite", marks=pytest.mark.tflite)])
def test_detector_exports_match_in_their_runtimes(tmp_path: Path, fmt: str):
    net = randomize_norms(build_supernet("centernet_tiny"), seed=2).eval()
    gates = random_gates(net.gate_layout(), 0.5, generator=torch.Generator().manual_seed(3))
    gates[-2] = torch.zeros_like(gates[-2])  # heatmap head all off: a constant map
    compact = extract(net, gates)
    suffix = {"torchscript": ".pt", "torch-export": ".pt2", "onnx": ".onnx", "tflite": ".tflite"}[fmt]
    out = tmp_path / f"det{suffix}"
    result = export_artifact(compact, fmt, out, verify_samples=4)
    assert result.verification.passed and result.verification.max_abs_diff <= FLOAT_ATOL
    side = json.loads((tmp_path / f"det{suffix}.json").read_text())
    assert side["source"]["backbone"] == "centernet" and side["outputs"][0]["shape"] == [1, 8, 8, 8]
    runner = load_runner(out)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert abs(runner(x.numpy()) - compact(x).numpy()).max() <= FLOAT_ATOL


@pytest.mark.tflite
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_detector_int8_keeps_both_heads_ranges(tmp_path: Path, fmt: str):
    """Heatmap logits (~ -8) and box sizes (~ +5) live in one output tensor; int8 must keep both."""
    net = randomize_norms(build_supernet("centernet_tiny"), seed=4).eval()
    with torch.no_grad():
        net.heatmap.out.bias.fill_(-8.0)
        net.box.out.bias.fill_(5.0)
    compact = extract(net, random_gates(net.gate_layout(), 0.6, generator=torch.Generator().manual_seed(1)))
    out = tmp_path / ("det.int8.onnx" if fmt == "onnx" else "det.int8.tflite")
    export_artifact(compact, fmt, out, int8=True, calibration_samples=16, verify_samples=4)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.from_numpy(load_runner(out)(x.numpy()))
    with torch.no_grad():
        ref = compact(x)
    assert ref[:, 4:6].min() > 3 and ref[:, :4].max() < -5
    assert (y - ref)[:, 4:6].abs().max() < 0.5 and (y - ref)[:, :4].abs().max() < 0.5


@pytest.mark.slow  # detector campaign artifacts (~4 s)
def test_detector_profiling_artifacts_and_structure_model():
    """What a profiling campaign builds for the detector, and the device profile's structure model (exact
    param bytes and peak activation from active counts)."""
    from host.profiling.build import ExtractingBuilder

    net = build_supernet("centernet_tiny")
    model = StructureModel.calibrate(net, seed=0)
    assert model.max_rel_error < 1e-6
    gates = random_gates(net.gate_layout(), 0.4, generator=torch.Generator().manual_seed(5), per_layer_jitter=0.4)
    built = ExtractingBuilder(net, "torchscript")(gates)
    exact = ExtractingBuilder(net, "torchscript", exact_costs=True)(gates)
    assert built.data[:2] == b"PK" and (built.param_bytes, built.peak_activation_bytes) == (
        exact.param_bytes, exact.peak_activation_bytes)


@pytest.mark.slow  # trains a detector, then generates and evaluates
def test_training_generation_and_eval(tmp_path: Path, capsys):
    """Pre-training and joint steps on AttrOD scenes, resumed exactly; generation and mAP evaluation."""
    kw = dict(space="attrod", backbone="centernet_tiny", steps=4, pretrain_steps=2, batch_size=4,
              checkpoint_every=2, eval_every=4, eval_per_task=2, curriculum_steps=1, warmup_steps=1)
    full = Trainer(TrainConfig(**kw), tmp_path / "full", progress=False)
    summary = full.run()
    assert summary["step"] == 4 and summary["phase"] == "joint"
    assert {"hm", "size", "off", "gl"} <= set(summary["last"])
    hist = summary["history_tail"][-1]
    assert 0 <= hist["seen_map50"] <= 1 and 0 <= hist["unseen_map50"] <= 1 and hist["seen_ratio"] <= 0.3
    part = Trainer(TrainConfig(**kw), tmp_path / "part", progress=False)
    part.run(stop_after=2)  # interrupted at the end of pre-training
    Trainer(TrainConfig(**kw), tmp_path / "part", resume=True, progress=False).run()
    a = ModelFactory.load(space="attrod", checkpoint=tmp_path / "full" / "step-0000004").models
    b = ModelFactory.load(space="attrod", checkpoint=tmp_path / "part" / "step-0000004").models
    for k, v in a.supernet.state_dict().items():
        assert torch.equal(v, b.supernet.state_dict()[k]), k
    factory = ModelFactory.load(space="attrod", checkpoint=tmp_path / "full")
    compact, s = factory.generate("crimson+lime+3", 0.3, tmp_path / "model")
    assert s["activation_ratio"] <= 0.3 and s["task"] == "crimson/lime 3" and (tmp_path / "model" / "spec.json").is_file()
    res = evaluate_generated(factory, [0.3, 0.5], tasks=["crimson 3", "bronze 9"], per_task=3)
    assert res["metric"] == "map50" and set(res["per_limit"]["0.3"]) == {"crimson 3", "bronze 9"}
    assert res["seen"]["0.3"]["tasks"] == 1 and res["unseen"]["0.5"]["max_activation_ratio"] <= 0.5
    assert main(["eval", "--space", "attrod", "--checkpoint", str(tmp_path / "full"), "--limits", "0.3",
                 "--tasks", "crimson 3", "--per-task", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "map50" and "crimson 3" in out["per_limit"]["0.3"]
    warm = Trainer(TrainConfig(**{**kw, "pretrain_steps": 0, "steps": 1}), tmp_path / "warm", progress=False,
                   warm_from=tmp_path / "full")
    assert warm.fresh_tensors == []  # every supernet and assembler tensor came from the checkpoint
    assert warm.run()["step"] == 1
    with pytest.raises(ConfigError, match="detect"):
        Trainer(TrainConfig(**{**kw, "backbone": "resnet_tiny"}), tmp_path / "bad", progress=False)
