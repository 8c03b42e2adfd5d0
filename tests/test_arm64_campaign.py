"""Two kinds of device in one campaign: this x86-64 host and the emulated aarch64 device, both from the inventory.

``nnf profile --device here --device arm64 --runtime onnxruntime`` measures the same random subnets on both.
Mid-way the aarch64 device's sshd is killed (its agent, in its own session, keeps running): the host's queue
still finishes, the command names the lost device and how to resume, and the same command re-run after sshd
is back completes the device's queue without losing or repeating a measurement. Then a device profile is
fitted from the aarch64 campaign and ``nnf generate --device arm64 --live`` searches on the device itself.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.cli import main
from tests.support.arm64 import Arm64Device
from tests.support.deploy_helpers import DEVICE_PYTHON, count_measurements, write_inventory

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 6
pytestmark = [pytest.mark.arm64, pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.xdist_group("arm64")]


def test_host_and_arm64_campaign_resumed_after_the_device_sshd_is_killed(
        arm64_device: Arm64Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path / "devices.toml", {
        "here": {"transport": "local", "python": DEVICE_PYTHON, "workdir": str(tmp_path / "here" / "nnf")},
        "arm64": arm64_device.table(workdir="nnf-agent-campaign", connect_timeout_s=5.0),
    })
    camp = tmp_path / "campaigns"
    stores = {d: camp / d / "resnet_tiny-onnxruntime.sqlite" for d in ("here", "arm64")}
    cmd = [sys.executable, "-m", "host", "profile", "--device", "here", "--device", "arm64", "--inventory", str(inv),
           "--backbone", "resnet_tiny", "--runtime", "onnxruntime", "--samples", str(SAMPLES),
           "--reference-every", "0", "--warmup", "1", "--repeats", "2", "--min-time-s", "0",
           "--campaigns-dir", str(camp), "--no-progress", "--json"]
    for dev in ("here", "arm64"):
        assert main(["deploy", dev, "--inventory", str(inv), "--json"]) == 0
    capsys.readouterr()
    try:
        prof = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and prof.poll() is None and count_measurements(stores["arm64"])[0] < 2:
                time.sleep(0.2)
            lost_at = count_measurements(stores["arm64"])[0]
            assert 2 <= lost_at < SAMPLES, "the arm64 device made no progress (or finished) before sshd was killed"
            arm64_device.stop_sshd()  # every ssh connection drops and no new one is accepted
            out, err = prof.communicate(timeout=600)
        finally:
            if prof.poll() is None:
                prof.kill()
                prof.communicate()
        assert prof.returncode == 2, (out, err)
        assert "arm64" in err and "re-run the same command to resume" in err, err
        assert count_measurements(stores["here"]) == (SAMPLES, SAMPLES)  # the host's queue finished regardless
        n_dev, distinct = count_measurements(stores["arm64"])
        assert n_dev == distinct and lost_at <= n_dev < SAMPLES

        arm64_device.start_sshd()  # same port, same host key; the agent kept running meanwhile
        done = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        summary = {d["device"]: d for d in json.loads(done.stdout.strip().splitlines()[-1])["devices"]}
        assert summary["here"]["already_done"] == SAMPLES and summary["here"]["measured_now"] == 0
        assert summary["arm64"]["already_done"] == n_dev and summary["arm64"]["measured_now"] == SAMPLES - n_dev
        for path in stores.values():
            assert count_measurements(path) == (SAMPLES, SAMPLES)  # nothing lost, nothing measured twice
        with sqlite3.connect(str(stores["arm64"])) as c:
            info = json.loads(c.execute("SELECT value FROM meta WHERE key = 'device_info'").fetchone()[0])
        assert info["machine"] == "aarch64"
    finally:
        for dev in ("here", "arm64"):
            main(["undeploy", dev, "--inventory", str(inv), "--json"])


def test_generate_live_searches_on_the_arm64_device(arm64_device: Arm64Device, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path / "devices.toml", {"arm64": arm64_device.table(workdir="nnf-agent-live")})
    args = ["--inventory", str(inv)]
    assert main(["deploy", "arm64", *args, "--json"]) == 0
    capsys.readouterr()
    try:
        out = tmp_path / "model"
        assert main(["generate", "--space", "numvqa", "--task", "exactly two 0", "--device", "arm64", "--live",
                     "--runtime", "onnxruntime", "--warmup", "1", "--repeats", "2", "--memory-mb", "1000", "--profiles-dir", str(tmp_path / "profiles"),
                     "--out", str(out), *args, "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["device"] == "arm64" and rep["search"]["method"] == "live"
        assert rep["measured"]["measurements"] >= 1 and rep["measured"]["fits"]
        assert 0 < rep["measured"]["memory_mb"] <= 1000 and rep["measured"]["latency_ms"] > 0
        assert (out / "spec.json").is_file()
    finally:
        assert main(["undeploy", "arm64", *args, "--json"]) == 0
