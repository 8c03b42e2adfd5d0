"""An aarch64 device in the loop: the emulated Debian arm64 device of ``scripts/arm64_device.sh``.

Its own OpenSSH server (an aarch64 sshd), its own Python 3.11 with PyPI's aarch64 wheels of grpcio, numpy,
onnxruntime and ai-edge-litert, run by qemu-user through binfmt_misc. The host deploys the (architecture-
independent) agent package onto it over ssh and measures tiny ONNX and TFLite models there. Emulated vector
maths is ~300x slower than native, so these tests check function, never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from host.cli import main
from host.deploy import deployer
from host.deploy.session import DeviceSession
from host.deploy.transport import connect
from host.errors import DeployError
from tests.support.agent_artifacts import tflite
from tests.support.arm64 import DEVICE_PYTHON, Arm64Device, mounts_under
from tests.support.deploy_helpers import onnx_mlp, write_inventory

pytestmark = [pytest.mark.arm64, pytest.mark.timeout(900), pytest.mark.xdist_group("arm64")]  # one device, one worker


def test_the_device_is_an_aarch64_userland_with_its_own_sshd(arm64_device: Arm64Device) -> None:
    with connect(arm64_device.device()) as t:
        res = t.check(f"uname -m; {DEVICE_PYTHON} -c 'import platform, sys; print(platform.machine(), "
                      f"sys.version_info[:2])'; id -un; cat /proc/cpuinfo; ls /dev", "probing the device")
    lines = res.stdout.splitlines()
    assert lines[0] == "aarch64"
    assert lines[1] == "aarch64 (3, 11)"
    assert lines[2] == "device"  # a normal user, as on a Jetson: not root
    assert "CPU implementer\t: 0x00" in res.stdout and "CPU part\t: 0x051" in res.stdout
    assert "GenuineIntel" not in res.stdout and "AuthenticAMD" not in res.stdout
    # a private /dev: a handful of nodes, never the host's disks
    assert "null" in lines and "urandom" in lines and not any(n.startswith(("vd", "sd", "nvme")) for n in lines)
    # the sshd serving us runs inside the root, as an aarch64 binary
    sshd_pids = [p for p in arm64_device.processes()
                 if b"/usr/sbin/sshd" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
    assert sshd_pids, "no sshd process inside the device root"
    mounts = mounts_under(arm64_device.root)
    assert f"{arm64_device.root}/dev" in mounts and f"{arm64_device.root}/proc/cpuinfo" in mounts
    fstypes = {line.split()[1]: line.split()[2] for line in Path("/proc/mounts").read_text().splitlines()}
    assert fstypes[f"{arm64_device.root}/dev"] == "tmpfs"  # not the host's devtmpfs


@pytest.mark.slow  # deploy + two runtimes under emulation (~25 s); the fast tier keeps the device checks
def test_check_deploy_profile_onnx_and_tflite_then_undeploy(arm64_device: Arm64Device, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path / "devices.toml", {"arm64": arm64_device.table(workdir="nnf-agent-cli")})
    args = ["--inventory", str(inv)]
    home_before = sorted(os.listdir(arm64_device.home))

    assert main(["devices", "check", "arm64", *args, "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["machine"] == "aarch64" and check["python"][:2] == [3, 11] and check["deployable"]
    assert set(check["runtimes"]) == {"onnx", "litert"} and check["missing"] == []
    assert check["runtimes_missing"] == {"torch": f"{DEVICE_PYTHON} -m pip install torch"}
    assert not check["agent_running"]
    assert main(["devices", "check", "arm64", *args]) == 0
    text = capsys.readouterr().out
    assert "aarch64" in text and "runtime torch not installed" in text

    onnx_model = onnx_mlp(tmp_path / "mlp.onnx", n=32)
    tflite_model = tflite(tmp_path / "conv.tflite")
    try:
        assert main(["deploy", "arm64", *args, "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["started"] and rep["copied_bytes"] > 0 and rep["python"][:2] == [3, 11]
        assert rep["runtimes"]["onnx"] == ["onnxruntime"] and rep["runtimes"]["torch"] == []

        # the agent's own account of the device: aarch64, and honest about what emulation hides
        with DeviceSession(arm64_device.device(workdir="nnf-agent-cli")) as session, session.client() as client:
            info = client.device_info()  # type: ignore[attr-defined]
        assert info.machine == "aarch64" and info.python_version.startswith("3.11")
        assert info.os_release == os.uname().release  # the (host) kernel the userland runs on...
        assert info.extra["kernel_arch"] == os.uname().machine  # ...and the device says so
        assert "aarch64 userland on a" in info.extra["emulation"]
        assert info.cpu_model.endswith("QEMU emulated CPU (implementer 0x00, part 0x051)")
        assert info.extra["temperature"].startswith("unknown")
        assert {r.name for r in info.runtimes} >= {"onnxruntime", "litert"}
        assert info.logical_cores == os.cpu_count()

        assert main(["devices", "profile", "arm64", str(onnx_model), "--input-shape", "1x32", "--repeats", "3",
                     "--warmup-runs", "1", "--min-time-s", "0", *args, "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert prof["runtime"] == "onnxruntime" and prof["samples"] >= 3 and prof["median_latency_us"] > 0
        assert prof["peak_bytes"] > 0

        assert main(["devices", "profile", "arm64", str(tflite_model), "--input-shape", "1x16x16x3", "--repeats", "3",
                     "--warmup-runs", "1", "--min-time-s", "0", *args, "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert prof["runtime"] == "litert" and prof["samples"] >= 3 and prof["median_latency_us"] > 0

        assert main(["logs", "arm64", *args]) == 0
        assert "NNF_AGENT_LISTENING" in capsys.readouterr().out
        agent_pid = rep["pid"]  # a host pid too: the device shares this machine's process table
        assert os.readlink(f"/proc/{agent_pid}/root") == str(arm64_device.root)
    finally:
        assert main(["undeploy", "arm64", *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stopped"] and out["removed"]
    assert sorted(os.listdir(arm64_device.home)) == home_before  # nothing left behind
    assert not Path(f"/proc/{agent_pid}").exists() or "\nState:\tZ" in Path(f"/proc/{agent_pid}/status").read_text()
    # only the agent's machine-wide measurement lock ($TMPDIR/nnf-agent-device-<uid>.lock, shared by every
    # agent of the user, so never deleted by one of them) may remain
    leftover = arm64_device.run("ls -A /tmp /var/tmp").stdout.split()
    assert not [n for n in leftover if ("nnf" in n or n.startswith("tmp"))
                and not (n.startswith("nnf-agent-device-") and n.endswith(".lock"))], leftover


def test_missing_runtime_on_the_device_is_named_with_the_fix(arm64_device: Arm64Device) -> None:
    with connect(arm64_device.device(runtime="torchscript", workdir="nnf-agent-torch")) as t:
        with pytest.raises(DeployError, match=r"runtime 'torchscript' is not installed .*pip install torch"):
            deployer.deploy(t)
        assert t.run('[ -e "$HOME/nnf-agent-torch" ]').exit_code == 1


def test_script_status_reports_the_device(arm64_device: Arm64Device) -> None:
    res = subprocess.run(["bash", "scripts/arm64_device.sh", "status", "--dir", str(arm64_device.dir)],
                         capture_output=True, text=True, check=False, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr
    assert f"127.0.0.1:{arm64_device.port}" in res.stdout and f"{arm64_device.root}/proc/cpuinfo" in res.stdout


@pytest.mark.slow  # brings a second device up and down (~10 s from the cached root)
def test_a_device_left_by_a_killed_run_is_swept_at_the_next_start(tmp_path: Path) -> None:
    from tests.support.arm64 import OWNER, device_up, sweep_stale, unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    run = tmp_path / "pytest-of-x" / "pytest-1" / "arm640"
    run.mkdir(parents=True)
    where = run / "device"
    gen = device_up(where)
    device = next(gen)  # up, as the fixture would; then the run "dies" without its teardown
    assert mounts_under(device.root) and device.processes()
    assert sweep_stale(tmp_path / "pytest-of-x") == []  # its owner (this process) still runs: left alone
    (run / OWNER).write_text("1 0")  # pid 1 did not start at tick 0: the owner is gone
    assert sweep_stale(tmp_path / "pytest-of-x") == [where]
    assert mounts_under(run) == [] and not where.exists()
    gen.close()  # the generator's own teardown finds nothing left and says so
