"""Exports of compact-model-like modules, checked in the runtimes a device would use.

The plain modules in ``tests.support.plain_models`` carry the compact models' op vocabulary including zero-width
blocks (a constant added to the residual). Each export is loaded back by its independent runtime
(torch.jit.load, torch.export.load, onnxruntime, ai_edge_litert) and compared with PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from host.errors import ArtifactError, ConfigError, MissingExtraError, SpecError
from host.exports import (
    FLOAT_ATOL,
    FORMATS,
    ONNX_OPSET,
    InputSet,
    export_artifact,
    load_runner,
    sidecar_path,
    verify_export,
)
from host.extraction import extract
from host.gates import random_gates
from host.supernets import build_supernet
from tests.support.helpers import randomize_norms
from tests.support.plain_models import PLAIN_MODELS

FAST_FORMATS = ("torchscript", "torch-export", "onnx")
TINY_CONFIGS = {"resnet_tiny": "resnet", "bottleneck_tiny": "resnet", "mobilenetv2_tiny": "mobilenetv2",
                "vit_tiny": "vit"}


def compact_model(config: str, zero_layer: int = 1, seed: int = 0):
    """A compact model extracted from ``config`` at ~50 % gates, gated layer ``zero_layer`` all off."""
    net = randomize_norms(build_supernet(config), seed=seed).eval()
    gates = random_gates(net.gate_layout(), 0.5, generator=torch.Generator().manual_seed(seed))
    gates[zero_layer] = torch.zeros_like(gates[zero_layer])
    return extract(net, gates)


def _export(tmp_path: Path, name: str, fmt: str, **kw):
    build, shape = PLAIN_MODELS[name]
    model = build()
    out = tmp_path / f"{name}{FORMATS[fmt].suffix}"
    result = export_artifact(model, fmt, out, input_shape=shape, verify_samples=kw.pop("verify_samples", 6), **kw)
    return model, shape, out, result


def _independent_check(model: torch.nn.Module, shape: tuple[int, ...], out: Path, seed: int = 123) -> float:
    """Load the artifact afresh in its runtime and compare on new inputs (not the export's own check)."""
    runner = load_runner(out)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.inference_mode():
        for _ in range(3):
            x = torch.randn(1, *shape, generator=gen)
            worst = max(worst, float(np.abs(runner(x.numpy()) - model(x).numpy()).max()))
    return worst


def _assert_exported(tmp_path: Path, model: torch.nn.Module, shape: tuple[int, ...], out: Path, result) -> None:
    assert out.is_file() and Path(result.path) == out
    assert result.verification is not None and result.verification.passed
    assert result.verification.max_abs_diff <= FLOAT_ATOL
    assert _independent_check(model, shape, out) <= FLOAT_ATOL
    # nothing but the artifact and its sidecar is left behind (no temp dirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, out.name + ".json"])


@pytest.mark.parametrize("fmt", FAST_FORMATS)
@pytest.mark.parametrize("config", list(TINY_CONFIGS))
def test_compact_model_export_matches_pytorch(tmp_path: Path, config: str, fmt: str) -> None:
    """Every backbone's tiny compact model (one block zero-width) in every PyTorch/ONNX format."""
    compact = compact_model(config)
    out = tmp_path / f"{config}{FORMATS[fmt].suffix}"
    result = export_artifact(compact, fmt, out, verify_samples=6)
    _assert_exported(tmp_path, compact, compact.spec.input_shape, out, result)
    side = json.loads(sidecar_path(out).read_text())
    assert side["source"]["backbone"] == TINY_CONFIGS[config]
    assert side["source"]["config"] == config
    assert side["source"]["gates_fingerprint"] == compact.spec.gates_fingerprint
    assert 0 in side["source"]["widths"].values()  # the zero-width block made it through


@pytest.mark.tflite
def test_tflite_compact_vit_with_zero_width_ffn(tmp_path: Path) -> None:
    """Default-run TFLite check: ViT (explicit attention, class token, an FFN with no neurons left)."""
    compact = compact_model("vit_tiny")
    out = tmp_path / "vit.tflite"
    result = export_artifact(compact, "tflite", out, verify_samples=6)
    assert result.verification.runtime == "ai_edge_litert.interpreter"
    _assert_exported(tmp_path, compact, compact.spec.input_shape, out, result)
    side = json.loads(sidecar_path(out).read_text())
    assert side["inputs"][0]["shape"] == [1, 3, 32, 32] and side["inputs"][0]["dtype"] == "float32"
    assert "litert-torch" in side["exporter"]["versions"]


@pytest.mark.tflite
@pytest.mark.slow
@pytest.mark.parametrize("config", ["resnet_tiny", "bottleneck_tiny", "mobilenetv2_tiny"])
def test_tflite_compact_cnn_backbones(tmp_path: Path, config: str) -> None:
    compact = compact_model(config)
    out = tmp_path / f"{config}.tflite"
    result = export_artifact(compact, "tflite", out, verify_samples=6)
    _assert_exported(tmp_path, compact, compact.spec.input_shape, out, result)


@pytest.mark.parametrize("name", list(PLAIN_MODELS))
def test_plain_module_onnx_export(tmp_path: Path, name: str) -> None:
    """Hand-built modules of the same op vocabulary (independent of the extraction code)."""
    model, shape, out, result = _export(tmp_path, name, "onnx")
    _assert_exported(tmp_path, model, shape, out, result)


@pytest.mark.tflite
@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLAIN_MODELS))
def test_plain_module_tflite_export(tmp_path: Path, name: str) -> None:
    model, shape, out, result = _export(tmp_path, name, "tflite")
    _assert_exported(tmp_path, model, shape, out, result)


def test_sidecar_records_source_shapes_versions_and_hash(tmp_path: Path) -> None:
    _, shape, out, result = _export(
        tmp_path, "vit", "onnx", source={"task": "exactly two 0", "limit": 0.3, "gates_fingerprint": "abc123"}
    )
    side = json.loads(sidecar_path(out).read_text())
    assert side["schema"] == "nnf-export" and side["version"] == 1
    assert side["format"] == "onnx" and side["artifact"] == out.name and side["precision"] == "float32"
    assert side["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
    assert side["size_bytes"] == out.stat().st_size
    assert side["inputs"] == [{"name": "input", "shape": [1, *shape], "dtype": "float32"}]
    assert side["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
    assert side["source"]["task"] == "exactly two 0" and side["source"]["limit"] == 0.3
    assert side["source"]["gates_fingerprint"] == "abc123"
    assert side["exporter"]["opset"] == ONNX_OPSET
    assert {"torch", "onnx", "onnxruntime"} <= set(side["exporter"]["versions"])
    assert side["verification"]["passed"] is True and side["verification"]["samples"] == 6


def test_onnx_has_fixed_opset_and_static_shapes(tmp_path: Path) -> None:
    import onnx

    _, shape, out, _ = _export(tmp_path, "mobilenetv2", "onnx")
    model = onnx.load(str(out))
    assert {o.domain: o.version for o in model.opset_import}[""] == ONNX_OPSET
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, *shape]


def test_onnx_int8_reports_agreement_and_accuracy(tmp_path: Path) -> None:
    build, shape = PLAIN_MODELS["resnet_bottleneck"]
    model = build()
    gen = torch.Generator().manual_seed(7)
    calib = InputSet(torch.randn(16, *shape, generator=gen), None, "test calibration")
    x = torch.randn(12, *shape, generator=gen)
    with torch.inference_mode():
        labels = model(x).argmax(-1)  # labels = the float model's answers: accuracy_reference == 1
    out = tmp_path / "m.int8.onnx"
    result = export_artifact(model, "onnx", out, input_shape=shape, int8=True, calibration=calib,
                             verify=InputSet(x, labels, "test inputs"))
    v = result.verification
    assert result.precision == "int8" and v.tolerance is None and v.passed is None
    assert v.accuracy_reference == 1.0 and v.accuracy_drop == pytest.approx(1.0 - v.accuracy_artifact)
    assert 0 < v.max_abs_diff < 0.1  # quantised: not bit-exact, but close on a small model
    assert v.top1_agreement >= 0.75
    side = json.loads(sidecar_path(out).read_text())
    assert side["int8"]["calibration_samples"] == 16 and side["int8"]["calibration_source"] == "test calibration"
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


@pytest.mark.tflite
@pytest.mark.slow
def test_tflite_int8_has_int8_io_and_agrees(tmp_path: Path) -> None:
    _, shape, out, result = _export(tmp_path, "mobilenetv2", "tflite", int8=True, calibration_samples=16)
    runner = load_runner(out)
    assert runner.quantized_io
    side = json.loads(sidecar_path(out).read_text())
    assert side["inputs"][0]["dtype"] == "int8" and side["inputs"][0]["quantization"]["scale"] > 0
    assert result.verification.top1_agreement >= 0.75
    assert result.verification.max_abs_diff < 0.1


def test_verify_export_detects_a_different_model(tmp_path: Path) -> None:
    _, shape, out, _ = _export(tmp_path, "resnet_basic", "torchscript")
    other = PLAIN_MODELS["resnet_basic"][0](seed=1)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    report = verify_export(out, other, x)
    assert report.passed is False and report.max_abs_diff > FLOAT_ATOL


def test_export_that_fails_verification_writes_nothing(tmp_path: Path) -> None:
    class Noisy(torch.nn.Module):
        """Output depends on a random draw at run time: no export can match it."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)) + torch.rand(1, 1)

    out = tmp_path / "noisy.pt2"
    with pytest.raises(ArtifactError, match="differs from the PyTorch model"):
        export_artifact(Noisy(), "torch-export", out, input_shape=(1, 8, 8), verify_samples=3)
    assert list(tmp_path.iterdir()) == []


def test_torchscript_trace_check_catches_data_dependent_control_flow(tmp_path: Path) -> None:
    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)) * (2.0 if float(x.sum()) > 0 else -2.0)

    xs = torch.cat([torch.ones(1, 1, 4, 4), -torch.ones(1, 1, 4, 4)])
    with pytest.raises(ArtifactError):
        export_artifact(Branchy(), "torchscript", tmp_path / "b.pt", input_shape=(1, 4, 4),
                        verify=InputSet(xs, None, "signs"))
    assert list(tmp_path.iterdir()) == []


def test_runner_rejects_corrupt_artifact(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ArtifactError, match="cannot load"):
        load_runner(bad)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_runner(tmp_path / "missing.tflite")


def test_bad_format_and_combinations(tmp_path: Path) -> None:
    build, shape = PLAIN_MODELS["resnet_basic"]
    with pytest.raises(ConfigError, match="unknown export format 'onxx'.*Did you mean 'onnx'"):
        export_artifact(build(), "onxx", tmp_path / "m.onnx", input_shape=shape)
    with pytest.raises(ConfigError, match="int8 quantisation is not offered for format 'torchscript'"):
        export_artifact(build(), "torchscript", tmp_path / "m.pt", input_shape=shape, int8=True)
    with pytest.raises(ConfigError, match="must end in '.tflite'"):
        export_artifact(build(), "tflite", tmp_path / "m.onnx", input_shape=shape)
    with pytest.raises(ConfigError, match="input shape"):
        export_artifact(build(), "onnx", tmp_path / "m.onnx")

    class Spec:
        backbone = "efficientdet"
        input_shape = (3, 32, 32)

    model = build()
    model.spec = Spec()
    with pytest.raises(ConfigError, match="backbone 'efficientdet' is not supported.*resnet, mobilenetv2, vit"):
        export_artifact(model, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fmt", "module", "pip"),
    [("onnx", "onnx", "[onnx]'"), ("onnx", "onnxscript", "[onnx]'"), ("tflite", "litert_torch", "[tflite]'")],
)
def test_missing_extra_names_the_pip_install(tmp_path: Path, monkeypatch, fmt: str, module: str, pip: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    build, shape = PLAIN_MODELS["resnet_basic"]
    with pytest.raises(MissingExtraError, match=r"python -m pip install torch==\S+ -e '.*" + re.escape(pip)):
        export_artifact(build(), fmt, tmp_path / f"m{FORMATS[fmt].suffix}", input_shape=shape, verify_samples=2)
    assert list(tmp_path.iterdir()) == []


def test_missing_runtime_names_the_pip_install(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the runtime import fails before the file is read")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"onnxruntime.*pip install torch==\S+ -e '.*\[onnx\]'"):
        load_runner(out)


def test_not_a_compact_model_dir(tmp_path: Path) -> None:
    from host.exports.model_dir import export_model_dir

    with pytest.raises(SpecError, match="does not exist"):
        export_model_dir(tmp_path / "nope", "onnx")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SpecError, match="is a file"):
        export_model_dir(f, "onnx")
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(SpecError, match="no spec.json"):
        export_model_dir(d, "onnx")
    (d / "spec.json").write_text("{not json")
    with pytest.raises(SpecError, match="no model.safetensors"):
        export_model_dir(d, "onnx")
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(SpecError, match="not valid JSON"):
        export_model_dir(d, "onnx")


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    from host.cli import main

    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    assert "not a compact model directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "onnx", "--calibration", "8"]) == 2
    assert "--calibration only applies with --int8" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "coreml"]) == 2
    assert "unknown runtime/format 'coreml'" in capsys.readouterr().err


@pytest.mark.slow  # every format through the CLI (~7 s)
def test_cli_exports_a_saved_compact_model_dir(tmp_path: Path, capsys) -> None:
    """`nnf export MODEL_DIR --json` on a dir written by save_compact: artifact, sidecar, provenance."""
    from host.artifact import save_compact
    from host.cli import main

    compact = compact_model("resnet_numvqa")
    model_dir = save_compact(compact, tmp_path / "gen", meta={"task": "exactly two 0", "limit": 0.3})
    assert main(["export", str(model_dir), "--format", "onnx", "--verify-samples", "4", "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout, exporter chatter went to stderr
    result = json.loads(lines[0])
    out = model_dir / "model.onnx"
    assert result["path"] == str(out) and result["format"] == "onnx" and result["precision"] == "float32"
    assert result["verification"]["passed"] is True and result["verification"]["samples"] == 4
    side = json.loads(sidecar_path(out).read_text())
    assert side["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    src = side["source"]
    assert src["task"] == "exactly two 0" and src["limit"] == 0.3 and src["config"] == "resnet_numvqa"
    assert src["gates_fingerprint"] == compact.spec.gates_fingerprint
    assert src["model_dir"] == str(model_dir.resolve())
    assert side["inputs"][0]["shape"] == [1, 1, 56, 56]
    # the artifact agrees with the model loaded back from the dir, in onnxruntime
    from host.artifact import load_compact

    x = torch.rand(2, 1, 56, 56, generator=torch.Generator().manual_seed(5))
    assert verify_export(out, load_compact(model_dir), x).passed

    # human output, int8 to an explicit --out
    q_out = tmp_path / "phone" / "m.int8.onnx"
    assert main(["export", str(model_dir), "--format", "onnx", "--int8", "--calibration", "8",
                 "--verify-samples", "4", "--out", str(q_out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {q_out}" in text and "int8" in text and "top-1 agreement" in text
    assert json.loads(sidecar_path(q_out).read_text())["int8"]["calibration_samples"] == 8


def test_cli_rejects_a_dir_that_is_not_a_compact_model(tmp_path: Path, capsys) -> None:
    from host.cli import main

    (tmp_path / "spec.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "not an NN-Factory compact-model spec" in err
    assert not (tmp_path / "model.pt").exists()


def test_generate_hooks_export_the_generated_dir(tmp_path: Path) -> None:
    """The flags `nnf generate` borrows (--format/--int8/--calibration) and the export it runs afterwards."""
    import argparse

    from host.artifact import save_compact
    from host.commands.export import add_format_arguments, export_after_generate

    parser = argparse.ArgumentParser()
    add_format_arguments(parser)
    model_dir = save_compact(compact_model("vit_tiny"), tmp_path / "gen")
    assert export_after_generate(parser.parse_args([]), model_dir) is None
    out = export_after_generate(parser.parse_args(["--format", "torchscript"]), model_dir)
    assert out["path"] == str(model_dir / "model.pt") and out["verification"]["passed"]
    assert (model_dir / "model.pt.json").is_file()
    with pytest.raises(ConfigError, match="need --format"):
        export_after_generate(parser.parse_args(["--int8"]), model_dir)
    with pytest.raises(ConfigError, match="int8 quantisation is not offered for format 'torchscript'"):
        export_after_generate(parser.parse_args(["--format", "torchscript", "--int8"]), model_dir)


def test_inputs_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    build, shape = PLAIN_MODELS["resnet_basic"]
    wrong = InputSet(torch.zeros(2, 3, 56, 56), None, "wrong channels")
    with pytest.raises(ConfigError, match=r"verification inputs have shape \(3, 56, 56\).*takes \(1, 56, 56\)"):
        export_artifact(build(), "onnx", tmp_path / "m.onnx", input_shape=shape, verify=wrong)
    with pytest.raises(ConfigError, match="calibration inputs have shape"):
        export_artifact(build(), "onnx", tmp_path / "m.onnx", input_shape=shape, int8=True, calibration=wrong)
