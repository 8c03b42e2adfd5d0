"""Deploying the real agent through a real OpenSSH server (Debian's sshd on a loopback port).

The "device" is this machine reached over ssh: its Python (``sys.executable``) has the agent's
requirements, the workdir is a temp directory. Each test uses its own workdir; the sshd is shared.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.cli import main
from host.deploy import deployer
from host.deploy.inventory import Device
from host.deploy.session import DeviceSession
from host.deploy.transport import connect
from host.errors import DeployError
from tests.support.deploy_helpers import DEVICE_PYTHON, onnx_mlp, write_inventory
from tests.support.sshd import SshServer, find_sshd

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    exe = find_sshd()
    if exe is None:
        pytest.skip("OpenSSH server not installed (scripts/test.sh installs openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the sshd fixture runs sshd as root (privilege separation needs it)")
    srv = SshServer(tmp_path_factory.mktemp("sshd"), exe).start()
    yield srv
    srv.stop()


def process_gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (PID 1 of a container may not reap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def ssh_device(srv: SshServer, tmp_path: Path, **kw: object) -> Device:
    base: dict[str, object] = {
        "transport": "ssh", "host": "127.0.0.1", "port": srv.port, "user": srv.user,
        "key_file": str(srv.client_key), "known_hosts": str(srv.known_hosts), "python": DEVICE_PYTHON,
        "workdir": str(tmp_path / "device" / "nnf-agent"), "runtime": "onnx", "connect_timeout_s": 10.0,
    }
    base.update(kw)
    return Device(name="box", **base)  # type: ignore[arg-type]


@pytest.mark.slow  # full CLI round over ssh (~10 s); the other ssh tests stay fast
def test_deploy_profile_redeploy_undeploy_cli(sshd: SshServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    dev = ssh_device(sshd, tmp_path)
    table = {k: v for k, v in dev.to_json().items() if k not in ("name", "address", "env")}
    table = {k: v for k, v in table.items() if v is not None and v != []}
    inv = write_inventory(tmp_path / "devices.toml", {"box": table})
    model = onnx_mlp(tmp_path / "mlp.onnx")
    args = ["--inventory", str(inv)]
    try:
        assert main(["deploy", "box", *args, "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["started"] and first["copied_bytes"] == first["package_bytes"] > 0
        workdir = Path(first["workdir"])
        assert (workdir / "releases" / first["release_id"] / "agent" / "__init__.py").is_file()
        assert oct((workdir / "run").stat().st_mode & 0o777) == "0o700"
        assert oct((workdir / "run" / "token").stat().st_mode & 0o777) == "0o600"

        # same release again: nothing copied, the running agent is kept
        assert main(["deploy", "box", *args, "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["copied_bytes"] == 0 and not again["started"] and again["pid"] == first["pid"]

        assert main(["devices", "check", "box", *args, "--json"]) == 0
        check = json.loads(capsys.readouterr().out)
        assert check["deployable"] and check["agent_running"] and check["agent_release"] == first["release_id"]

        # the agent listens on the device's loopback only; the token is required
        token = (workdir / "run" / "token").read_text()
        assert token and token not in " ".join(Path(f"/proc/{first['pid']}/cmdline").read_text().split("\0"))

        assert main(["devices", "profile", "box", str(model), "--input-shape", "1x64", "--repeats", "10",
                     "--warmup-runs", "2", *args, "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert prof["runtime"] == "onnxruntime" and prof["samples"] >= 10 and prof["median_latency_us"] > 0
        assert prof["peak_bytes"] > 0

        assert main(["logs", "box", *args]) == 0
        assert "NNF_AGENT_LISTENING" in capsys.readouterr().out
    finally:
        assert main(["undeploy", "box", *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stopped"] and out["removed"]
    assert not workdir.exists()
    assert process_gone(first["pid"])


def test_unknown_host_key_refused_then_accepted_on_opt_in(sshd: SshServer, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    dev = ssh_device(sshd, tmp_path, known_hosts=str(kh))
    with pytest.raises(DeployError, match="host key of .*127.0.0.1:.* is unknown.*--accept-new-host-key"):
        connect(dev)
    with pytest.raises(DeployError, match="does not exist"):
        connect(ssh_device(sshd, tmp_path, known_hosts=str(tmp_path / "missing")))
    with connect(dev, accept_new_host_key=True) as t:
        assert t.run("echo ok").stdout == "ok\n"
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in kh.read_text()
    with connect(dev) as t:  # recorded: now verified without the flag
        assert t.run("true").exit_code == 0


def test_changed_host_key_refused(sshd: SshServer, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    other = (sshd.root / "other_key.pub").read_text().split()
    kh.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(DeployError, match="does NOT match"):
        connect(ssh_device(sshd, tmp_path, known_hosts=str(kh)), accept_new_host_key=True)


def test_wrong_key_refused(sshd: SshServer, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="authentication to .* failed"):
        connect(ssh_device(sshd, tmp_path, key_file=str(sshd.other_key)))
    with pytest.raises(DeployError, match="key_file .* does not exist"):
        connect(ssh_device(sshd, tmp_path, key_file=str(tmp_path / "nokey")))


def test_unreachable_host(sshd: SshServer, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens once the socket closes
    with pytest.raises(DeployError, match="device 'box': cannot reach .* sshd is running"):
        connect(ssh_device(sshd, tmp_path, port=dead_port, connect_timeout_s=3.0))


def test_missing_python_and_requirements_leave_nothing(sshd: SshServer, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    dev = ssh_device(sshd, tmp_path, python="/nonexistent/python3")
    with connect(dev) as t, pytest.raises(DeployError, match="'/nonexistent/python3' not found.*set python"):
        deployer.deploy(t)
    # a Python without the agent's packages: every missing module is named, with the pip command
    system_python = "/usr/bin/python3"
    has_grpc = subprocess.run([system_python, "-c", "import grpc"], capture_output=True, check=False).returncode == 0
    if os.path.exists(system_python) and not has_grpc:
        dev = ssh_device(sshd, tmp_path, python=system_python)
        with connect(dev) as t, pytest.raises(DeployError) as exc:
            deployer.deploy(t)
        msg = str(exc.value)
        assert "missing Python modules" in msg and "grpc" in msg and "pip install" in msg and "grpcio" in msg
        assert "runtime 'onnx' is not installed" in msg
    assert not (tmp_path / "device").exists()
    # `devices check` reports the same problems and exits 1
    inv = write_inventory(tmp_path / "devices.toml", {"box": {
        "transport": "ssh", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
        "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), "python": "/nonexistent/python3"}})
    assert main(["devices", "check", "box", "--inventory", str(inv), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["reachable"] and not rep["deployable"] and "not found" in rep["problems"][0]


def test_port_in_use_leaves_nothing(sshd: SshServer, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        dev = ssh_device(sshd, tmp_path, agent_port=port)
        with connect(dev) as t, pytest.raises(DeployError, match=f"port {port} is already in use.*agent_port = 0"):
            deployer.deploy(t)
    assert not (tmp_path / "device").exists()


def test_disk_full_is_reported_and_cleaned(sshd: SshServer, tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                         check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()}")
    try:
        dev = ssh_device(sshd, tmp_path, workdir=str(mnt / "nnf-agent"))
        with connect(dev) as t, pytest.raises(DeployError, match="not enough disk space .* free some space"):
            deployer.deploy(t)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.slow  # a dropped connection mid-campaign, then resume
def test_dropped_connection_mid_campaign_then_resumed(sshd: SshServer, tmp_path: Path) -> None:
    from host.client import TensorSpec

    dev = ssh_device(sshd, tmp_path)
    model = onnx_mlp(tmp_path / "mlp.onnx")
    with connect(dev) as t:
        deployer.deploy(t)
    try:
        results = []
        with DeviceSession(dev) as session, session.client(retries=6, backoff_s=0.2) as client:
            for i in range(6):
                if i == 2:
                    assert sshd.kill_connections() >= 1  # every ssh connection drops
                if i == 4:  # the device reboots: the agent dies and sshd restarts
                    os.kill(session.state.pid or 0, 9)
                    sshd.restart()
                res = client.upload_and_profile(model, inputs=[TensorSpec((1, 64))], repeats=3, warmup_runs=1)
                results.append(res.median_latency_us)
            assert session.reconnects >= 2 and session.agent_restarts == 1
        assert len(results) == 6 and all(r > 0 for r in results)

        # without restart_agent the session says what happened and what to do
        with connect(dev) as t:
            pid = deployer.remote_status(t).agent.pid
        os.kill(pid or 0, 9)
        with pytest.raises(DeployError, match="not running .*rebooted.*nnf deploy box"):
            DeviceSession(dev, restart_agent=False)
    finally:
        with connect(dev) as t:
            deployer.undeploy(t)
