"""adb onto an ARM userland: the ADB device emulator runs its shell and sync services inside the aarch64 root.

The emulator (tests/support/adb_emulator.py, ``root=``) chroots every ``shell:`` command into the emulated
Debian arm64 device and stores pushed files there (``/data/local/tmp`` on the device), as a rooted phone's
adbd would. Deploying over adb then lands the agent on an aarch64 Python with aarch64 wheels.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from host.cli import main
from host.deploy.session import DeviceSession
from tests.support.adb_emulator import AdbEmulator
from tests.support.agent_artifacts import tflite
from tests.support.arm64 import DEVICE_PYTHON, Arm64Device
from tests.support.deploy_helpers import write_inventory

pytestmark = [pytest.mark.arm64, pytest.mark.adb, pytest.mark.timeout(900), pytest.mark.xdist_group("arm64")]


@pytest.fixture
def adb_key(tmp_path: Path) -> Path:
    from adb_shell.auth.keygen import keygen

    key = tmp_path / "adbkey"
    keygen(str(key))
    return key


@pytest.mark.slow  # adb deploy under emulation (~25 s)
def test_adb_deploy_lands_the_agent_on_the_arm_userland(arm64_device: Arm64Device, adb_key: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    emu = AdbEmulator("/data/local/tmp", root=arm64_device.root,
                      authorized_keys=[Path(str(adb_key) + ".pub").read_bytes()]).start()
    inv = write_inventory(tmp_path / "devices.toml", {"phone": {
        "transport": "adb", "serial": emu.serial, "adb_key": str(adb_key), "python": DEVICE_PYTHON,
        "runtime": "tflite", "workdir": "/data/local/tmp/nnf-agent", "start_timeout_s": 300.0}})
    args = ["--inventory", str(inv)]
    model = tflite(tmp_path / "conv.tflite")
    try:
        assert main(["devices", "check", "phone", *args, "--json"]) == 0
        check = json.loads(capsys.readouterr().out)
        assert check["machine"] == "aarch64" and check["deployable"]

        assert main(["deploy", "phone", *args, "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["started"] and rep["workdir"] == "/data/local/tmp/nnf-agent"
        # the files are in the device root, and the agent process runs chrooted there
        assert (arm64_device.root / "data/local/tmp/nnf-agent/releases" / rep["release_id"] / "agent").is_dir()
        assert os.readlink(f"/proc/{rep['pid']}/root") == str(arm64_device.root)

        from host.deploy.inventory import load_inventory

        with DeviceSession(load_inventory(inv).get("phone")) as session, session.client() as client:
            info = client.device_info()  # type: ignore[attr-defined]
        assert info.machine == "aarch64" and "emulation" in info.extra

        assert main(["devices", "profile", "phone", str(model), "--input-shape", "1x16x16x3", "--repeats", "3",
                     "--warmup-runs", "1", "--min-time-s", "0", *args, "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert prof["runtime"] == "litert" and prof["samples"] >= 3
        assert any(s.startswith("tcp:") for s in emu.services_opened)

        # Debian's real adb client sees the same ARM userland
        exe = shutil.which("adb")
        if exe is not None:
            home = tmp_path / "adbhome"
            home.mkdir()
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            env = dict(os.environ, HOME=str(home), ANDROID_ADB_SERVER_PORT=str(port))
            (home / ".android").mkdir()
            shutil.copy(adb_key, home / ".android" / "adbkey")
            shutil.copy(str(adb_key) + ".pub", home / ".android" / "adbkey.pub")
            base = [exe, "-P", str(port)]
            try:
                subprocess.run([*base, "start-server"], env=env, check=True, capture_output=True, timeout=60)
                r = subprocess.run([*base, "connect", emu.serial], env=env, capture_output=True, text=True,
                                   timeout=60, check=False)
                assert f"connected to {emu.serial}" in r.stdout, r.stdout + r.stderr
                r = subprocess.run([*base, "-s", emu.serial, "shell", "uname -m; pwd"], env=env,
                                   capture_output=True, text=True, timeout=60, check=False)
                assert (r.returncode, r.stdout) == (0, "aarch64\n/data/local/tmp\n"), r.stdout + r.stderr
            finally:
                subprocess.run([*base, "kill-server"], env=env, check=False, capture_output=True, timeout=60)
    finally:
        assert main(["undeploy", "phone", *args, "--json"]) == 0
        emu.stop()
    assert json.loads(capsys.readouterr().out)["removed"]
    assert not (arm64_device.root / "data/local/tmp/nnf-agent").exists()
