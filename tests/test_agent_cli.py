"""`nnf agent start --local`, `nnf profile-model`, `nnf agent info/stop` end to end (real subprocess agent)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host.cli import main
from tests.support import agent_artifacts as A

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_start_profile_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = A.onnx_matmul(tmp_path / "m.onnx")
    (tmp_path / "token").write_text("tok-123\n")
    (tmp_path / "token").chmod(0o600)  # the agent refuses a token file others can read
    env = {k: v for k, v in os.environ.items() if k != "NNF_AGENT_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "host", "agent", "start", "--local", "--json",
                           "--token-file", str(tmp_path / "token"), "--cache-dir", str(tmp_path / "cache"),
                           "--state-dir", str(tmp_path / "state"),
                           "--device-lock", str(tmp_path / "device.lock")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    started = json.loads(proc.stdout.strip().splitlines()[-1])
    assert started["auth"] and started["pid"] > 0 and started["address"].startswith("127.0.0.1:")
    try:
        args = ["profile-model", str(model), "--agent", started["address"], "--token-file", str(tmp_path / "token"),
                "--repeats", "5", "--warmup-runs", "1", "--min-time-s", "0", "--json"]
        assert main(args) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["runtime"] == "onnxruntime" and out["median_latency_us"] > 0 and out["samples_count"] >= 5
        assert not out["upload"]["skipped"]
        assert main(args) == 0  # second time: the agent has it already
        assert json.loads(capsys.readouterr().out.strip())["upload"]["skipped"]
        # wrong token -> clear error and exit code 2
        (tmp_path / "bad").write_text("nope")
        assert main(["agent", "info", "--agent", started["address"], "--token-file", str(tmp_path / "bad")]) == 2
        assert "token" in capsys.readouterr().err
        # no runtime from an unknown suffix
        odd = tmp_path / "m.bin"
        odd.write_bytes(model.read_bytes())
        assert main(["profile-model", str(odd), "--agent", started["address"]]) == 2
        assert "--runtime" in capsys.readouterr().err
    finally:
        assert main(["agent", "stop", "--pid", str(started["pid"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["stopped"]
    assert main(["agent", "stop", "--pid", str(os.getpid())]) == 2  # refuses to kill a non-agent process


def test_serve_prints_port_and_stops_cleanly(tmp_path: Path) -> None:
    """The launcher contract: one NNF_AGENT_LISTENING line on stdout, --port-file, SIGTERM -> exit 0."""
    import signal

    from host.client import AgentClient

    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--port", "0", "--cache-dir", str(tmp_path / "c"),
                             "--port-file", str(port_file), "--device-lock", "none", "--no-auth"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        fields = dict(kv.split("=", 1) for kv in line.split()[1:])
        assert line.startswith("NNF_AGENT_LISTENING ") and fields["host"] == "127.0.0.1"
        assert int(fields["pid"]) == proc.pid and int(port_file.read_text()) == int(fields["port"])
        with AgentClient(f"127.0.0.1:{fields['port']}") as c:
            c.wait_ready(30)
            assert c.health() == "SERVING"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # also closes the pipes
    assert proc.returncode == 0, err
