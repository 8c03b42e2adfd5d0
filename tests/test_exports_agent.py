"""The profiling agent runs every export format: real gRPC on loopback, artifacts from `export_artifact`.

Each artifact is uploaded as is, the agent picks its runtime from the bytes (no hint), and the input
shapes/dtypes come from the export's sidecar, as a profiling campaign would do it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from host.client import AgentClient, ProfileRequest, TensorSpec
from host.errors import ArtifactError
from host.exports import FORMATS, export_artifact, read_sidecar, sidecar_path
from host.extraction import extract
from host.gates import random_gates
from host.supernets import build_supernet
from tests.support.agent_servers import agent_server
from tests.support.helpers import randomize_norms

QUICK = {"warmup_runs": 2, "repeats": 5, "min_time_s": 0.0}
AGENT_RUNTIME = {"torchscript": "torchscript", "torch-export": "torch_export", "onnx": "onnxruntime",
                 "tflite": "litert"}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("agent")
    # torch.export archives are pickle-bearing: this trusted test agent enables them explicitly
    with agent_server(d / "cache", device_lock_path=d / "device.lock", allow_pickle_formats=True) as (addr, _), \
            AgentClient(addr, timeout_s=60, retries=2, backoff_s=0.05, seed=0) as client:
        yield client


@pytest.fixture(scope="module")
def compact():
    net = randomize_norms(build_supernet("resnet_tiny")).eval()
    gates = random_gates(net.gate_layout(), 0.5, generator=torch.Generator().manual_seed(0))
    gates[1] = torch.zeros_like(gates[1])
    return extract(net, gates)


def _profile(agent: AgentClient, out: Path):
    side = read_sidecar(out)
    inputs = [TensorSpec(tuple(i["shape"]), i["dtype"]) for i in side["inputs"]]
    up = agent.upload(out)
    assert up.sha256 == side["sha256"]
    return agent.profile(ProfileRequest(up.sha256, inputs=inputs, threads=1, **QUICK)), side


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("torch-export", marks=pytest.mark.slow), "onnx",
                                 pytest.param("tflite", marks=pytest.mark.tflite)])
def test_agent_profiles_each_export_format(agent: AgentClient, compact, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"model{FORMATS[fmt].suffix}"
    export_artifact(compact, fmt, out, verify_samples=2)
    result, side = _profile(agent, out)
    assert result.runtime == AGENT_RUNTIME[fmt]  # sniffed by the agent from the artifact bytes
    assert result.median_latency_us > 0 and len(result.samples_ns) >= 5
    assert tuple(result.inputs[0].shape) == tuple(side["inputs"][0]["shape"]) == (1, 3, 32, 32)


@pytest.mark.tflite
@pytest.mark.slow
def test_agent_profiles_int8_tflite_with_int8_inputs(agent: AgentClient, compact, tmp_path: Path) -> None:
    out = tmp_path / "model.int8.tflite"
    export_artifact(compact, "tflite", out, int8=True, calibration_samples=8, verify_samples=2)
    result, side = _profile(agent, out)
    assert side["inputs"][0]["dtype"] == "int8"
    assert result.runtime == "litert" and result.inputs[0].dtype == "int8"


def test_read_sidecar_detects_a_changed_artifact(compact, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    export_artifact(compact, "torchscript", out, verify_samples=2)
    assert read_sidecar(out)["format"] == "torchscript"
    out.write_bytes(out.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        read_sidecar(out)
    side = sidecar_path(out)
    side.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ArtifactError, match="not an NN-Factory export sidecar"):
        read_sidecar(out)
    side.unlink()
    with pytest.raises(ArtifactError, match="was not written by `nnf export`"):
        read_sidecar(out)


def test_profile_model_takes_input_shapes_from_the_sidecar(agent: AgentClient, compact, tmp_path: Path,
                                                          capsys) -> None:
    """A TorchScript file records no input shape; `nnf profile-model` reads it from FILE.json."""
    from host.cli import main

    out = tmp_path / "model.pt"
    export_artifact(compact, "torchscript", out, verify_samples=2)
    rc = main(["profile-model", str(out), "--agent", agent.address, "--repeats", "3", "--warmup-runs", "1",
               "--min-time-s", "0", "--json"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and res["runtime"] == "torchscript" and res["inputs"][0]["shape"] == [1, 3, 32, 32]
