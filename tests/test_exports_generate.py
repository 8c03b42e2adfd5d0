"""`nnf generate --format`: the generated model is exported, verified on its own task's images.

Uses a 4-step training run as the checkpoint (its accuracy is near chance; what is checked is the
plumbing: real task inputs from the task space, labels, accuracy of both models and the drop).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.cli import main
from host.exports import read_sidecar


@pytest.fixture(scope="module")
def run_dir(tiny_numvqa_run):
    return tiny_numvqa_run  # tests/conftest.py: built once per session


@pytest.mark.slow  # int8 calibration and task accuracy (~5 s)
def test_generate_format_onnx_int8_reports_task_accuracy(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model"
    rc = main(["generate", "--space", "numvqa", "--task", "exactly two 0", "--activation-limit", "0.3",
               "--out", str(out), "--checkpoint", str(run_dir), "--format", "onnx", "--int8",
               "--calibration", "8", "--json"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    exported = json.loads(lines[0])["export"]
    assert exported["path"] == str(out / "model.int8.onnx") and exported["precision"] == "int8"
    v = exported["verification"]
    assert "task space 'numvqa', task 'exactly two 0', test split" in v["input_source"]
    assert v["samples"] == 32 and v["tolerance"] is None
    assert v["accuracy_reference"] is not None and v["accuracy_artifact"] is not None
    assert v["accuracy_drop"] == pytest.approx(v["accuracy_reference"] - v["accuracy_artifact"])
    side = read_sidecar(out / "model.int8.onnx")
    assert side["source"]["task"] == "exactly two 0" and side["source"]["config"] == "resnet_numvqa"
    assert side["source"]["limit"] == 0.3 and side["source"]["gates_fingerprint"]
    assert "val split" in side["int8"]["calibration_source"] and side["int8"]["calibration_samples"] == 8
    assert side["inputs"][0]["shape"] == [1, 1, 56, 56]


def test_generate_format_human_output_and_bad_combination(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model"
    base = ["generate", "--task", "exactly one 3", "--activation-limit", "0.5", "--out", str(out),
            "--checkpoint", str(run_dir)]
    assert main([*base, "--format", "torch-export"]) == 0
    text = capsys.readouterr().out
    assert f"exported to       {out / 'model.pt2'}" in text and "torch.export.load" in text
    assert read_sidecar(out / "model.pt2")["verification"]["passed"] is True
    assert main([*base, "--format", "torchscript", "--int8"]) == 2
    assert "int8 quantisation is not offered for format 'torchscript'" in capsys.readouterr().err
    assert main([*base, "--int8"]) == 2
    assert "need --format" in capsys.readouterr().err


@pytest.mark.tflite
@pytest.mark.slow
def test_generate_format_tflite_for_a_phone(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "phone"
    assert main(["generate", "--task", "exactly two 0", "--activation-limit", "0.3", "--out", str(out),
                 "--checkpoint", str(run_dir), "--format", "tflite", "--json"]) == 0
    exported = json.loads(capsys.readouterr().out.strip())["export"]
    assert exported["path"] == str(out / "model.tflite")
    assert exported["verification"]["passed"] is True
    assert exported["verification"]["accuracy_drop"] is not None


def test_generate_for_a_device_budget_with_format(numvqa_run, tmp_path: Path, capsys) -> None:
    """The device-budget path (`--device --latency-ms`) exports the model it picked, too."""
    run, profiles, _ = numvqa_run
    base = ["generate", "--space", "numvqa", "--task", "exactly one 0", "--checkpoint", str(run),
            "--profiles-dir", str(profiles), "--device", "synthetic-dev", "--latency-ms", "2.2", "--json"]
    out = tmp_path / "dev"
    assert main([*base, "--out", str(out), "--format", "torchscript"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["export"]["path"] == str(out / "model.pt") and report["runtime"] == "torchscript"
    assert read_sidecar(out / "model.pt")["source"]["gates_fingerprint"]
    # the profile is TorchScript's: an ONNX model's budget cannot be priced with it (refused, nothing written)
    onnx = tmp_path / "onnx"
    assert main([*base, "--out", str(onnx), "--format", "onnx"]) == 2
    assert "not on 'onnx'" in capsys.readouterr().err and not onnx.exists()
    # flag mistakes fail before any generation work: nothing is written
    bad = tmp_path / "bad"
    assert main([*base, "--out", str(bad), "--format", "torch-export", "--int8"]) == 2
    assert "int8 quantisation is not offered" in capsys.readouterr().err and not bad.exists()
