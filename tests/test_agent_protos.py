"""The committed protocol stubs (agent/_proto) must equal what scripts/gen_protos.sh generates now."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (dev extra) not installed")
def test_committed_stubs_match_proto(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(out)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    committed = ROOT / "agent" / "_proto"
    gen_files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    have_files = sorted(p.relative_to(committed) for p in committed.rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
    assert gen_files == have_files, "stub file set drifted: run bash scripts/gen_protos.sh"
    drifted = [str(f) for f in gen_files if not filecmp.cmp(out / f, committed / f, shallow=False)]
    assert not drifted, f"stubs out of date ({drifted}): run bash scripts/gen_protos.sh and commit"


def test_stubs_import_as_agent_package() -> None:
    from agent._proto.nnfactory.agent.v1 import agent_pb2, agent_pb2_grpc

    assert agent_pb2.DESCRIPTOR.package == "nnfactory.agent.v1"
    assert hasattr(agent_pb2_grpc, "ProfilingAgentStub")
    # room for the later "fill weights on device" option: reserved numbers and an options map
    from google.protobuf import descriptor_pb2

    req = descriptor_pb2.DescriptorProto()
    agent_pb2.ProfileRequest.DESCRIPTOR.CopyToProto(req)
    assert "options" in {f.name for f in req.field}
    assert any(r.start <= 16 < r.end for r in req.reserved_range)


def test_agent_stays_light_and_standalone() -> None:
    """The agent's server imports neither host nor any runtime; no agent module uses pickle or torch.load."""
    code = ("import sys, agent.server, agent.cli, agent.store, agent.runtimes, agent.sysinfo; "
            "bad = [m for m in ('host', 'torch', 'onnxruntime', 'ai_edge_litert', 'tensorflow') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in (ROOT / "agent").glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path
