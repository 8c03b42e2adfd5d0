"""Device inventory parsing, agent packaging, and the ``local`` transport deploy (no ssh/adb needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from host.cli import main
from host.deploy.inventory import load_inventory, parse_inventory
from host.deploy.package import build_agent_package, scan_requirements
from host.errors import ConfigError, DeployError
from tests.support.deploy_helpers import DEVICE_PYTHON, write_inventory

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[devices.jetson]
transport = "ssh"
host = "192.168.1.40"
user = "nvidia"
key_file = "~/.ssh/id_ed25519"
runtime = "torch"
threads = 4
affinity = [4, 5, 6, 7]

[devices.phone]
transport = "adb"
serial = "192.168.1.23:5555"
runtime = "litert"
workdir = "/data/local/tmp/nnf-agent"

[devices.usbphone]
transport = "adb"
serial = "R58M12345"

[devices.here]
"""


def test_parse_good_inventory() -> None:
    inv = parse_inventory(GOOD)
    assert sorted(inv.devices) == ["here", "jetson", "phone", "usbphone"]
    j = inv.get("jetson")
    assert (j.transport, j.port, j.user, j.threads, j.affinity) == ("ssh", 22, "nvidia", 4, (4, 5, 6, 7))
    assert j.address == "nvidia@192.168.1.40:22"
    assert inv.get("phone").adb_over_tcp and not inv.get("usbphone").adb_over_tcp
    assert inv.get("here").transport == "local"
    assert json.loads(json.dumps(j.to_json()))["affinity"] == [4, 5, 6, 7]
    # old runtime spellings ("torch", "litert") are stored under their current names
    assert (j.runtime, j.runtime_family) == ("torchscript", "torch")
    assert (inv.get("phone").runtime, inv.get("phone").runtime_family) == ("tflite", "litert")
    assert inv.get("here").runtime_family == "auto"


@pytest.mark.parametrize(("text", "needle"), [
    ('[devices.a]\ntransport = "ssh"\nhots = "x"', "unknown key 'hots'. Did you mean 'host'"),
    ('[devices.a]\ntransport = "sssh"\nhost = "x"', "Did you mean 'ssh'"),
    ('[devices.a]\ntransport = "ssh"', "needs host"),
    ('[devices.a]\ntransport = "adb"', "needs serial"),
    ('[devices.a]\nruntime = "tensorrt"', "runtime must be one of"),
    ('[devices.a]\nport = 70000', "port must be in 0..65535"),
    ('[devices.a]\nthreads = 0', "threads must be >= 1"),
    ('[devices.a]\naffinity = "0-3"', "affinity must be a list"),
    ('[devices.a]\npassword = "hunter2"', "unknown key 'password'"),
    ('[devices.a]\nworkdir = "/"', "workdir must not be empty"),
    ('[device.a]\n', "unknown top-level key"),
    ('[devices.a\n', "not valid TOML"),
])
def test_bad_inventory(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        parse_inventory(text)
    assert needle in str(exc.value)


def test_unknown_device_and_missing_file(tmp_path: Path) -> None:
    inv = parse_inventory(GOOD)
    with pytest.raises(ConfigError, match="Did you mean 'jetson'"):
        inv.get("jetsn")
    with pytest.raises(ConfigError, match="--inventory"):
        load_inventory(tmp_path / "nope.toml")


def test_devices_cli_list_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "devices.toml"
    inv.write_text(GOOD)
    assert main(["devices", "list", "--inventory", str(inv), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in out["devices"]] == ["jetson", "phone", "usbphone", "here"]
    assert main(["devices", "show", "phone", "--inventory", str(inv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["serial"] == "192.168.1.23:5555"
    assert main(["devices", "show", "nope", "--inventory", str(inv)]) == 2
    assert "no device named 'nope'" in capsys.readouterr().err


def test_package_is_reproducible_and_agent_only() -> None:
    a, b = build_agent_package(), build_agent_package()
    assert a.data == b.data and a.sha256 == b.sha256
    assert a.release_id.startswith(a.version + "-")
    with tarfile.open(fileobj=BytesIO(a.data), mode="r:gz") as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert names and all(n.startswith("agent/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "agent/__init__.py" in names
    # the agent's import-time requirements are found from its own source
    assert {"grpc", "google.protobuf"} <= set(a.requirements)
    assert not any(r.startswith(("host", "torch")) for r in a.requirements)


def test_package_refuses_agent_importing_host(tmp_path: Path) -> None:
    pkg = tmp_path / "agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__version__ = "9.9"\n')
    (pkg / "bad.py").write_text("import numpy\nfrom host.errors import DeployError\n")
    with pytest.raises(DeployError, match="must never depend on the host"):
        build_agent_package(pkg)
    (pkg / "bad.py").write_text("import numpy\ntry:\n    import torch\nexcept ImportError:\n    torch = None\n")
    assert scan_requirements(pkg) == ("numpy",)  # torch is optional (inside try)


@pytest.mark.slow
def test_local_deploy_profile_undeploy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The `local` transport: same deploy path as ssh/adb, on this machine."""
    from host.client import AgentClient
    from tests.support.deploy_helpers import onnx_mlp

    workdir = tmp_path / "dev" / "nnf"
    inv = write_inventory(tmp_path / "devices.toml", {"here": {"transport": "local", "python": DEVICE_PYTHON,
                                                               "workdir": str(workdir), "runtime": "onnx"}})
    model = onnx_mlp(tmp_path / "mlp.onnx")
    try:
        assert main(["deploy", "here", "--inventory", str(inv), "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["copied_bytes"] > 0 and rep["started"]
        assert main(["devices", "profile", "here", str(model), "--input-shape", "1x64", "--repeats", "5",
                     "--inventory", str(inv), "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert prof["runtime"] == "onnxruntime" and prof["median_latency_us"] > 0 and prof["samples"] >= 5
        # `nnf tunnel` holds a port open for other programs (with --print-token for their credentials)
        tunnel = subprocess.Popen([sys.executable, "-m", "host", "tunnel", "here", "--inventory", str(inv), "--json",
                                   "--print-token", "--duration-s", "60"], cwd=str(ROOT), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert tunnel.stdout is not None
            info = json.loads(tunnel.stdout.readline())
            with AgentClient(info["address"], token=info["token"]) as client:
                assert client.device_info().agent_version
        finally:
            tunnel.terminate()
            tunnel.communicate(timeout=30)
    finally:
        assert main(["undeploy", "here", "--inventory", str(inv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"]
    assert not workdir.exists()


def test_transport_base_knows_no_implementation() -> None:
    """connect() resolves transports by name; the base module imports none of them (nor paramiko/adb)."""
    import subprocess
    import sys

    from host.deploy import inventory, transport

    assert set(transport.TRANSPORTS) == set(inventory.TRANSPORTS)
    code = ("import sys, host.deploy.transport as t; "
            "bad = [m for m in ('host.deploy.local', 'host.deploy.ssh', 'host.deploy.adb', 'paramiko', 'adb_shell') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with transport.connect(inventory.parse_inventory("[devices.here]\n").get("here")) as t:
        assert type(t).__module__ == "host.deploy.local" and t.check("echo ok", "echo").stdout == "ok\n"


def test_device_scripts_run_with_a_plain_python(tmp_path: Path) -> None:
    import hashlib
    import subprocess
    import sys

    from host.deploy.deployer import device_script

    f = tmp_path / "blob"
    f.write_bytes(b"abc")
    good, bad = hashlib.sha256(b"abc").hexdigest(), "0" * 64
    for sha, rc in ((good, 0), (bad, 1)):
        proc = subprocess.run([sys.executable, "-I", "-c", device_script("verify_sha256"), str(f), sha], timeout=60)
        assert proc.returncode == rc
    args = '{"required": ["json", "nonexistent_mod"], "runtimes": {"x": ["json"]}, "workdir": "%s", "port": 0}'
    out = subprocess.run([sys.executable, "-I", "-c", device_script("probe"), args % tmp_path], timeout=60,
                         capture_output=True, text=True).stdout
    assert out.startswith("NNF-PROBE ") and '"missing": ["nonexistent_mod"]' in out


def test_default_inventory_path(tmp_path: Path, monkeypatch) -> None:
    from host.deploy.inventory import default_inventory_path

    monkeypatch.delenv("NNF_INVENTORY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    assert default_inventory_path() == tmp_path / "cfg" / "nn-factory" / "devices.toml"
    with pytest.raises(ConfigError, match="devices.toml not found"):
        load_inventory()
    (tmp_path / "devices.toml").write_text("[devices.here]\n")
    assert default_inventory_path() == Path("devices.toml") and "here" in load_inventory().devices
    monkeypatch.setenv("NNF_INVENTORY", str(tmp_path / "other.toml"))
    assert default_inventory_path() == tmp_path / "other.toml"


def test_a_device_made_in_code_takes_any_runtime_spelling_or_says_what_is_wrong() -> None:
    from host.deploy.inventory import Device
    from host.errors import ConfigError

    assert Device(name="d", runtime="torch").runtime == "torchscript"
    assert Device(name="d", runtime="torch").runtime_family == "torch"
    assert Device(name="d", runtime="LiteRT").runtime == "tflite"
    with pytest.raises(ConfigError, match="device 'd': runtime must be one of"):
        Device(name="d", runtime="tensorrt")
