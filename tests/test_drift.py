"""Drift checks: the decision rule, and the fingerprint measured on a real local agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.errors import ConfigError, DriftError
from host.profiling.drift import DriftCheck, apply, judge

ROOT = Path(__file__).resolve().parents[1]
TOL = {"p90": {"level": 0.05, "shape": 0.04}, "memory": 0.05}


def test_within_tolerance_proceeds() -> None:
    c = judge([1.02, 0.99, 1.03], [1.0, 1.01, 0.99], TOL, "p90")
    assert c.status == "proceed" and c.latency_factor == 1.0 and c.memory_factor == 1.0


def test_uniform_slowdown_is_rescaled_by_one_factor() -> None:
    c = judge([1.50, 1.52, 1.47], [1.0, 1.0, 1.0], TOL, "p90")  # the live benchmark's 0.90 -> 1.38 ms, uniformly
    assert c.status == "rescaled" and c.latency_factor == pytest.approx(1.4965, rel=1e-3) and c.memory_factor == 1.0
    assert "rescaled by latency x1.497" in c.message
    m = judge([1.0, 1.0, 1.0], [1.2, 1.21, 1.19], TOL, "p90")  # memory moved uniformly: memory rescaled
    assert m.status == "rescaled" and m.latency_factor == 1.0 and m.memory_factor == pytest.approx(1.2, rel=1e-2)


def test_uneven_or_huge_changes_are_refused_with_advice() -> None:
    uneven = judge([1.0, 1.3, 1.6], [1.0, 1.0, 1.0], TOL, "p90")  # the small subnets slowed down, the full did not
    assert uneven.status == "refused" and "unevenly" in uneven.message and "--live" in uneven.message
    huge = judge([3.0, 3.05, 2.98], [1.0, 1.0, 1.0], TOL, "p90")
    assert huge.status == "refused" and "beyond" in huge.message and "re-profile" in huge.message
    mem = judge([1.0, 1.0, 1.0], [1.0, 1.5, 1.0], TOL, "p90")
    assert mem.status == "refused" and "peak memory" in mem.message
    with pytest.raises(ConfigError):
        judge([], [], TOL, "p90")


def test_apply_rescales_refuses_or_keeps() -> None:
    class P:
        device = "dev"

        def rescaled(self, latency: float, memory: float):
            return ("rescaled", latency, memory)

    p = P()
    assert apply(DriftCheck("proceed", "ok"), p) is p
    assert apply(DriftCheck.skipped("no agent"), p) is p
    assert apply(DriftCheck("rescaled", "x", latency_factor=1.3), p) == ("rescaled", 1.3, 1.0)
    with pytest.raises(DriftError, match="drift check on dev: nope"):
        apply(DriftCheck("refused", "nope"), p)


def _start_agent(cache: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--port", "0", "--cache-dir", str(cache)],
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("NNF_AGENT_LISTENING"), line
    return proc, "127.0.0.1:" + dict(kv.split("=", 1) for kv in line.split()[1:])["port"]


@pytest.mark.slow
def test_profile_fit_and_fingerprint_on_a_real_agent(tmp_path: Path) -> None:
    """A small real campaign (with reference rounds), fitted; `nnf devices fingerprint` re-measures the
    references on the same agent and compares; a doctored profile is refused (exit 1)."""
    agent, addr = _start_agent(tmp_path / "cache")
    camp, profiles = tmp_path / "camp", tmp_path / "profiles"
    try:
        prof = subprocess.run(
            [sys.executable, "-m", "host", "profile", "--device", "cpu-test", "--agent", addr, "--backbone",
             "resnet_tiny", "--samples", "8", "--reference-every", "4", "--warmup", "2", "--repeats", "20",
             "--min-time-s", "0.05", "--campaigns-dir", str(camp), "--no-progress"],
            cwd=str(ROOT), capture_output=True, text=True, timeout=600)
        assert prof.returncode == 0, prof.stderr
        hint = [ln for ln in prof.stdout.splitlines() if ln.startswith("next: ")]
        assert hint == [f"next: nnf fit --device cpu-test --backbone resnet_tiny --runtime torchscript "
                        f"--campaigns-dir {camp}"]
        assert "mix measured     stratified" in prof.stdout  # no generator for resnet_tiny: uniform + stratified
        fit = subprocess.run(
            [sys.executable, "-m", "host", *hint[0].removeprefix("next: nnf ").split(), "--profiles-dir", str(profiles),
             "--test", "3"], cwd=str(ROOT), capture_output=True, text=True, timeout=300)
        assert fit.returncode == 0, fit.stderr
        assert "warning: 3 held-out subnets are too few for a 99% margin" in fit.stderr
        assert "margin    +" in fit.stdout and "next: nnf devices fingerprint cpu-test" in fit.stdout
        cmd = [sys.executable, "-m", "host", "devices", "fingerprint", "cpu-test", "--agent", addr, "--profiles-dir",
               str(profiles), "--json"]
        fp = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=300)
        assert fp.returncode in (0, 1), fp.stderr
        out = json.loads(fp.stdout.strip().splitlines()[-1])
        assert out["status"] in ("proceed", "rescaled", "refused") and len(out["latency_ratios"]) == 3
        assert all(0.2 < r < 5 for r in out["latency_ratios"]) and out["percentile"] == "p90"
        assert out["seconds"] < 60 and out["config"] == "resnet_tiny"
        # a profile that claims the device was 10x faster: refused, exit code 1
        path = profiles / "cpu-test.json"
        data = json.loads(path.read_text())
        refs = data["profiles"]["resnet_tiny/torchscript"]["references"]
        refs["latency_us"]["p90"] = [v / 10 for v in refs["latency_us"]["p90"]]
        path.write_text(json.dumps(data))
        bad = subprocess.run(cmd[:-1], cwd=str(ROOT), capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and "refused" in bad.stdout and "re-profile" in bad.stdout, bad.stdout + bad.stderr
        assert np.isfinite(out["latency_factor"])
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        agent.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inventory_device_profile_fingerprint_and_live_generation(tmp_path: Path) -> None:
    """An inventory device needs no --agent anywhere: `nnf profile`, `nnf devices fingerprint` and
    `nnf generate --live` open its tunnel and read its token themselves; --live prints each measurement."""
    from tests.support.deploy_helpers import DEVICE_PYTHON, write_inventory

    inv = write_inventory(tmp_path / "devices.toml", {
        "here": {"transport": "local", "python": DEVICE_PYTHON, "workdir": str(tmp_path / "here" / "nnf")}})
    nnf = [sys.executable, "-m", "host"]
    run = lambda *a, **kw: subprocess.run([*nnf, *a], cwd=str(ROOT), capture_output=True, text=True,  # noqa: E731
                                          timeout=600, **kw)
    assert run("deploy", "here", "--inventory", str(inv), "--json").returncode == 0
    try:
        camp, profiles = tmp_path / "camp", tmp_path / "profiles"
        prof = run("profile", "--device", "here", "--inventory", str(inv), "--backbone", "resnet_tiny", "--samples",
                   "6", "--reference-every", "3", "--warmup-runs", "1", "--repeats", "10", "--min-time-s", "0.02",
                   "--campaigns-dir", str(camp), "--no-progress", "--json")
        assert prof.returncode == 0, prof.stderr
        assert json.loads(prof.stdout.strip().splitlines()[-1])["devices"][0]["measured_now"] == 6 + 9
        fit = run("fit", "--device", "here", "--campaigns-dir", str(camp), "--profiles-dir", str(profiles),
                  "--test", "2", "--json")
        assert fit.returncode == 0, fit.stderr
        fp = run("devices", "fingerprint", "here", "--inventory", str(inv), "--profiles-dir", str(profiles), "--json")
        assert fp.returncode in (0, 1), fp.stderr
        out = json.loads(fp.stdout.strip().splitlines()[-1])
        assert out["agent"].startswith("127.0.0.1:") and len(out["latency_ratios"]) == 3
        live = run("generate", "--space", "numvqa", "--task", "exactly one 0", "--device", "here", "--inventory",
                   str(inv), "--latency-ms", "1000", "--live", "--out", str(tmp_path / "m"))
        assert live.returncode == 0, live.stderr
        assert "measured" in live.stdout and live.stderr.count("live: limit ") >= 1, live.stderr  # progress
        assert "activation limit  1" in live.stdout  # a 1 s budget fits the full model
    finally:
        run("undeploy", "here", "--inventory", str(inv), "--json")
