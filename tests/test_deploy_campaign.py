"""A profiling campaign on two deployed devices at once (local + ssh); one device goes down mid-way.

Both devices come from the inventory and are reached through ``DeviceSession`` tunnels (``nnf profile``
without ``--agent``). The ssh device is taken down (its agent killed and its sshd stopped) while the campaign
runs: the local device's queue still finishes, the command reports the lost device and how to resume, and
re-running the same command after the device is back completes it without losing or repeating a measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.cli import main
from tests.support.deploy_helpers import DEVICE_PYTHON, count_measurements, write_inventory
from tests.support.sshd import SshServer, find_sshd

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 6
pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    exe = find_sshd()
    if exe is None or os.geteuid() != 0:
        pytest.skip("needs Debian's sshd and root (scripts/test.sh installs openssh-server)")
    srv = SshServer(tmp_path / "sshd", exe).start()
    yield srv
    srv.stop()


def test_two_device_campaign_one_device_lost_then_both_resume(sshd: SshServer, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path / "devices.toml", {
        "here": {"transport": "local", "python": DEVICE_PYTHON, "workdir": str(tmp_path / "here" / "nnf")},
        "box": {"transport": "ssh", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), "python": DEVICE_PYTHON,
                "workdir": str(tmp_path / "box" / "nnf"), "connect_timeout_s": 3.0},
    })
    camp = tmp_path / "campaigns"
    stores = {d: camp / d / "resnet_tiny-torchscript.sqlite" for d in ("here", "box")}
    cmd = [sys.executable, "-m", "host", "profile", "--device", "here", "--device", "box", "--inventory", str(inv),
           "--backbone", "resnet_tiny", "--samples", str(SAMPLES), "--reference-every", "0", "--warmup", "1",
           "--repeats", "3", "--min-time-s", "0", "--campaigns-dir", str(camp), "--no-progress", "--json"]
    for dev in ("here", "box"):
        assert main(["deploy", dev, "--inventory", str(inv), "--json"]) == 0
    box_pid = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pid"]
    try:
        prof = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and prof.poll() is None and count_measurements(stores["box"])[0] < 2:
                time.sleep(0.2)
            lost_at = count_measurements(stores["box"])[0]
            assert 2 <= lost_at < SAMPLES, "the ssh device made no progress (or finished) before it was lost"
            # the device goes down: agent killed, sshd gone (connections and listener)
            os.kill(box_pid, 9)
            sshd.stop()
            out, err = prof.communicate(timeout=400)
        finally:
            if prof.poll() is None:
                prof.kill()
                prof.communicate()
        assert prof.returncode == 2, (out, err)
        assert "box" in err and "re-run the same command to resume" in err, err
        assert count_measurements(stores["here"]) == (SAMPLES, SAMPLES)  # the other device's queue finished regardless
        n_box, distinct_box = count_measurements(stores["box"])
        assert n_box == distinct_box and lost_at <= n_box < SAMPLES

        # the device is back (same address, agent not running: the session restarts it); resume
        sshd.start()
        done = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr
        summary = {d["device"]: d for d in json.loads(done.stdout.strip().splitlines()[-1])["devices"]}
        assert summary["here"]["already_done"] == SAMPLES and summary["here"]["measured_now"] == 0
        assert summary["box"]["already_done"] == n_box and summary["box"]["measured_now"] == SAMPLES - n_box
        for path in stores.values():
            assert count_measurements(path) == (SAMPLES, SAMPLES)  # nothing lost, nothing measured twice
    finally:
        for dev in ("here", "box"):
            if dev == "box" and sshd.proc is None:
                sshd.start()
            main(["undeploy", dev, "--inventory", str(inv), "--json"])
