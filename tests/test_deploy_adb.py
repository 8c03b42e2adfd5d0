"""The ADB device emulator against adb-shell and Debian's adb client, and deploying the agent over adb.

The emulator (tests/support/adb_emulator.py) speaks the ADB wire protocol on a loopback port and runs
commands in a sandbox directory; the deployed agent runs with this machine's Python.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.cli import main
from host.deploy import deployer
from host.deploy.inventory import Device
from host.deploy.session import DeviceSession
from host.deploy.transport import connect
from host.errors import DeployError, NNFactoryError
from tests.support.adb_emulator import AdbEmulator
from tests.support.deploy_helpers import DEVICE_PYTHON, onnx_mlp, write_inventory

pytestmark = [pytest.mark.adb, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def adb_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adb_shell.auth.keygen import keygen

    key = tmp_path_factory.mktemp("adbkey") / "adbkey"
    keygen(str(key))
    return key


@pytest.fixture
def emulator(tmp_path: Path, adb_key: Path) -> Iterator[AdbEmulator]:
    emu = AdbEmulator(tmp_path / "phone", authorized_keys=[Path(str(adb_key) + ".pub").read_bytes()]).start()
    yield emu
    emu.stop()


def adb_device(emu: AdbEmulator, key: Path, **kw: object) -> Device:
    base: dict[str, object] = {"transport": "adb", "serial": emu.serial, "adb_key": str(key), "python": DEVICE_PYTHON,
                               "workdir": str(emu.sandbox / "nnf-agent"), "runtime": "onnx"}
    base.update(kw)
    return Device(name="phone", **base)  # type: ignore[arg-type]


class EchoServer:
    """A loopback TCP echo server (the far end of a ``tcp:<port>`` forward)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_adb_shell_library_against_emulator(emulator: AdbEmulator, adb_key: Path, tmp_path: Path) -> None:
    from adb_shell.adb_device import AdbDeviceTcp
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_cryptography import CryptographySigner

    dev = AdbDeviceTcp("127.0.0.1", emulator.port, default_transport_timeout_s=5)
    assert dev.connect(rsa_keys=[CryptographySigner(str(adb_key))], auth_timeout_s=2)
    assert dev.shell("echo hello; echo oops >&2") == "hello\noops\n"  # v1 shell: merged streams
    assert dev.shell("pwd").strip() == str(emulator.sandbox)
    payload = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(payload)
    dev.push(str(tmp_path / "in.bin"), "data/local/tmp/in.bin")
    assert (emulator.sandbox / "data/local/tmp/in.bin").read_bytes() == payload
    dev.pull("data/local/tmp/in.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == payload
    mode, size, _ = dev.stat("data/local/tmp/in.bin")
    assert size == len(payload) and mode & 0o170000 == 0o100000
    assert {bytes(f.filename) for f in dev.list("data/local/tmp")} >= {b"in.bin"}
    dev.close()
    assert "shell:echo hello; echo oops >&2" in emulator.services_opened

    # a key the device never authorized: the phone "shows a prompt" that nobody accepts
    keygen(str(tmp_path / "stranger"))
    dev2 = AdbDeviceTcp("127.0.0.1", emulator.port, default_transport_timeout_s=3)
    with pytest.raises(Exception):  # noqa: B017 - adb-shell raises a timeout/transport error type
        dev2.connect(rsa_keys=[CryptographySigner(str(tmp_path / "stranger"))], auth_timeout_s=1, read_timeout_s=2)
    dev2.close()
    assert emulator.rejected_keys == 1


@pytest.fixture
def adb_client(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """Debian's adb with a private server port and a temporary $HOME (so its keys are temporary)."""
    exe = shutil.which("adb")
    if exe is None:
        pytest.skip("Debian's adb client is not installed (scripts/test.sh installs it)")
    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HOME=str(home), ANDROID_ADB_SERVER_PORT=str(port))
    env.pop("ADB_VENDOR_KEYS", None)
    base = [exe, "-P", str(port)]
    subprocess.run([*base, "start-server"], env=env, check=True, capture_output=True, timeout=60)
    try:
        yield base, env, home
    finally:
        subprocess.run([*base, "kill-server"], env=env, check=False, capture_output=True, timeout=60)


def run_adb(client: tuple[list[str], dict[str, str], Path], *args: str) -> subprocess.CompletedProcess[str]:
    base, env, _ = client
    return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_debian_adb_client_against_emulator(adb_client: tuple[list[str], dict[str, str], Path],
                                            tmp_path: Path) -> None:
    _, _, home = adb_client
    pub = (home / ".android" / "adbkey.pub").read_bytes()  # the adb server made its key on start
    emu = AdbEmulator(tmp_path / "phone", authorized_keys=[pub]).start()
    echo = EchoServer()
    try:
        r = run_adb(adb_client, "connect", emu.serial)
        assert r.returncode == 0 and f"connected to {emu.serial}" in r.stdout, r.stdout + r.stderr
        r = run_adb(adb_client, "devices", "-l")
        assert f"{emu.serial}" in r.stdout and "device product:nnf_emu model:NNF_ADB_Emulator" in r.stdout
        # shell v2: separate stderr and the exit code
        r = run_adb(adb_client, "-s", emu.serial, "shell", "echo out; echo err >&2; exit 3")
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        assert any(s.startswith("shell,v2,") for s in emu.services_opened)
        payload = os.urandom(200_000)
        (tmp_path / "p.bin").write_bytes(payload)
        dst = str(emu.sandbox / "sdcard" / "p.bin")
        r = run_adb(adb_client, "-s", emu.serial, "push", str(tmp_path / "p.bin"), dst)
        assert r.returncode == 0 and "1 file pushed" in r.stdout, r.stdout + r.stderr
        assert Path(dst).read_bytes() == payload
        r = run_adb(adb_client, "-s", emu.serial, "pull", dst, str(tmp_path / "back.bin"))
        assert r.returncode == 0 and (tmp_path / "back.bin").read_bytes() == payload
        r = run_adb(adb_client, "-s", emu.serial, "push", str(tmp_path / "p.bin"), "/etc/nnf-test.bin")
        assert r.returncode != 0 and "Permission denied" in (r.stdout + r.stderr)  # outside the sandbox
        # adb forward -> the emulator's tcp:<port> service -> a loopback server
        r = run_adb(adb_client, "-s", emu.serial, "forward", "tcp:0", f"tcp:{echo.port}")
        assert r.returncode == 0, r.stderr
        local = int(r.stdout.strip())
        with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
            s.sendall(b"ping through adb")
            got = b""
            while len(got) < 16:
                got += s.recv(64)
        assert got == b"ping through adb"
        assert f"tcp:{echo.port}" in emu.services_opened
    finally:
        run_adb(adb_client, "disconnect", emu.serial)
        echo.close()
        emu.stop()


@pytest.mark.slow  # a full deploy/profile/undeploy per adb protocol version (~5 s each); the fast tier deploys in
# test_agent_deployed_over_adb_reached_with_debian_adb_forward
@pytest.mark.parametrize("features", [("shell_v2", "stat_v2", "fixed_push_mkdir"), ()], ids=["shell_v2", "shell_v1"])
def test_deploy_profile_undeploy_over_adb(tmp_path: Path, adb_key: Path, features: tuple[str, ...],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    emu = AdbEmulator(tmp_path / "phone", authorized_keys=[Path(str(adb_key) + ".pub").read_bytes()],
                      features=features).start()
    dev = adb_device(emu, adb_key)
    table = {k: v for k, v in dev.to_json().items() if k not in ("name", "address", "env")}
    inv = write_inventory(tmp_path / "devices.toml", {"phone": {k: v for k, v in table.items()
                                                                if v is not None and v != []}})
    model = onnx_mlp(tmp_path / "mlp.onnx")
    args = ["--inventory", str(inv)]
    try:
        with connect(dev) as t:
            res = t.run("echo a; echo b >&2; exit 4")
            assert res.exit_code == 4 and "a" in res.stdout
        assert main(["deploy", "phone", *args, "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["started"] and first["copied_bytes"] > 0
        assert main(["deploy", "phone", *args, "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["copied_bytes"] == 0 and not again["started"]
        assert main(["devices", "profile", "phone", str(model), "--input", "1x64", "--repeats", "5", *args,
                     "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert prof["runtime"] == "onnxruntime" and prof["samples"] >= 5 and prof["median_latency_us"] > 0
        assert any(s.startswith("tcp:") for s in emu.services_opened)
        assert main(["logs", "phone", "--lines", "5", *args]) == 0
        assert "NNF_AGENT_LISTENING" in capsys.readouterr().out
    finally:
        assert main(["undeploy", "phone", *args, "--json"]) == 0
        emu.stop()
    assert json.loads(capsys.readouterr().out)["removed"]
    assert not (emu.sandbox / "nnf-agent").exists()


def test_agent_deployed_over_adb_reached_with_debian_adb_forward(
        adb_client: tuple[list[str], dict[str, str], Path], tmp_path: Path) -> None:
    """Deploy with our transport, then reach the agent through `adb forward` of the real adb client."""
    from host.client import AgentClient, TensorSpec

    _, _, home = adb_client
    key = home / ".android" / "adbkey"  # the same key for both clients
    emu = AdbEmulator(tmp_path / "phone", authorized_keys=[Path(str(key) + ".pub").read_bytes()]).start()
    dev = adb_device(emu, key)
    try:
        with connect(dev) as t:
            rep = deployer.deploy(t)
            token = deployer.remote_status(t).token
        assert run_adb(adb_client, "connect", emu.serial).returncode == 0
        r = run_adb(adb_client, "-s", emu.serial, "forward", "tcp:0", f"tcp:{rep.port}")
        assert r.returncode == 0, r.stderr
        with AgentClient(f"127.0.0.1:{int(r.stdout.strip())}", token=token) as client:
            res = client.upload_and_profile(onnx_mlp(tmp_path / "mlp.onnx"), inputs=[TensorSpec((1, 64))],
                                            repeats=3, warmup_runs=1)
        assert res.median_latency_us > 0
    finally:
        run_adb(adb_client, "disconnect", emu.serial)
        with connect(dev) as t:
            deployer.undeploy(t)
        emu.stop()


@pytest.mark.slow  # a dropped connection, then resume
def test_adb_connection_dropped_then_resumed(emulator: AdbEmulator, adb_key: Path, tmp_path: Path) -> None:
    from host.client import TensorSpec

    dev = adb_device(emulator, adb_key)
    model = onnx_mlp(tmp_path / "mlp.onnx")
    with connect(dev) as t:
        deployer.deploy(t)
    try:
        with DeviceSession(dev) as session, session.client(retries=6, backoff_s=0.2) as client:
            lat = []
            for i in range(4):
                if i == 2:
                    emulator.drop_connections()  # cable pulled / Wi-Fi dropped
                lat.append(client.upload_and_profile(model, inputs=[TensorSpec((1, 64))], repeats=3,
                                                     warmup_runs=1).median_latency_us)
            assert session.reconnects >= 1 and all(x > 0 for x in lat)
    finally:
        with connect(dev) as t:
            deployer.undeploy(t)


def test_adb_bad_inputs(emulator: AdbEmulator, adb_key: Path, tmp_path: Path) -> None:
    from adb_shell.auth.keygen import keygen

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(DeployError, match=f"device 'phone': cannot reach adb at 127.0.0.1:{dead}"):
        connect(adb_device(emulator, adb_key, serial=f"127.0.0.1:{dead}"))
    keygen(str(tmp_path / "stranger"))
    with pytest.raises(DeployError, match="did not accept this host's adb key.*allow USB debugging"):
        connect(adb_device(emulator, tmp_path / "stranger", connect_timeout_s=3.0))
    with pytest.raises(DeployError, match="adb_key .* does not exist"):
        connect(adb_device(emulator, tmp_path / "nokey"))
    # a USB serial: needs adb-shell's USB extra (libusb) or a plugged-in device; either way a clear message
    with pytest.raises(NNFactoryError, match=r"\[adb-usb\]'|no USB adb device with serial 'R58NOSUCH'"):
        connect(adb_device(emulator, adb_key, serial="R58NOSUCH"))
    # missing Python on the phone (no Termux): named, with what to do
    with connect(adb_device(emulator, adb_key, python="/data/data/com.termux/files/usr/bin/python")) as t, \
            pytest.raises(DeployError, match="not found.*Termux"):
        deployer.deploy(t)
    assert not (emulator.sandbox / "nnf-agent").exists()
