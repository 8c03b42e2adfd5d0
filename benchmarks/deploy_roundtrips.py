"""How long deploying and reaching the agent takes per transport, on this machine (not a timed test).

Transports: ``local`` (subprocesses), ``ssh`` (Debian's sshd on a loopback port, needs root) and ``adb``
(the ADB device emulator from tests/support on a loopback port). For each: first deploy (copy + start +
health check), redeploy of the same release (nothing copied), opening a session (tunnel), one
upload+profile of a small ONNX model through the tunnel, a remote ``true`` round trip, and undeploy.
Loopback peers measure protocol/process overhead, not network latency.

    python benchmarks/deploy_roundtrips.py [--json] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.client import TensorSpec
from host.deploy import deployer
from host.deploy.inventory import Device
from host.deploy.session import DeviceSession
from host.deploy.transport import connect
from tests.support.deploy_helpers import onnx_mlp


def measure(dev: Device, model: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    t = connect(dev)
    out["connect_s"] = time.perf_counter() - t0
    rtt = []
    for _ in range(5):
        t0 = time.perf_counter()
        t.check("true", "round trip")
        rtt.append(time.perf_counter() - t0)
    out["command_roundtrip_s"] = statistics.median(rtt)
    t0 = time.perf_counter()
    rep = deployer.deploy(t)
    out["deploy_s"] = time.perf_counter() - t0
    out["deploy_copied_bytes"] = rep.copied_bytes
    t0 = time.perf_counter()
    rep2 = deployer.deploy(t)
    out["redeploy_s"] = time.perf_counter() - t0
    out["redeploy_copied_bytes"] = rep2.copied_bytes
    t0 = time.perf_counter()
    with DeviceSession(dev) as s, s.client() as c:
        out["session_open_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = c.upload_and_profile(model, inputs=[TensorSpec((1, 64))], repeats=5, warmup_runs=1)
        out["upload_profile_s"] = time.perf_counter() - t0
        out["model_median_latency_us"] = res.median_latency_us
    t0 = time.perf_counter()
    deployer.undeploy(t)
    out["undeploy_s"] = time.perf_counter() - t0
    t.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nnf-deploy-bench-"))
    model = onnx_mlp(root / "mlp.onnx")
    results: dict[str, dict[str, float]] = {}
    py = sys.executable
    results["local"] = measure(Device(name="local", transport="local", python=py, runtime="onnx",
                                      workdir=str(root / "local" / "nnf")), model)
    from tests.support.sshd import SshServer, find_sshd

    if find_sshd() and os.geteuid() == 0:
        srv = SshServer(root / "sshd", find_sshd() or "").start()
        try:
            results["ssh"] = measure(Device(
                name="ssh", transport="ssh", host="127.0.0.1", port=srv.port, user=srv.user,
                key_file=str(srv.client_key), known_hosts=str(srv.known_hosts), python=py, runtime="onnx",
                workdir=str(root / "ssh" / "nnf")), model)
        finally:
            srv.stop()
    from adb_shell.auth.keygen import keygen

    from tests.support.adb_emulator import AdbEmulator

    keygen(str(root / "adbkey"))
    emu = AdbEmulator(root / "phone", authorized_keys=[(root / "adbkey.pub").read_bytes()]).start()
    try:
        results["adb"] = measure(Device(name="adb", transport="adb", serial=emu.serial, adb_key=str(root / "adbkey"),
                                        python=py, runtime="onnx", workdir=str(root / "phone" / "nnf")), model)
    finally:
        emu.stop()
    keys = ["connect_s", "command_roundtrip_s", "deploy_s", "redeploy_s", "redeploy_copied_bytes", "session_open_s",
            "upload_profile_s", "undeploy_s"]
    print(f"{'':<24}" + "".join(f"{k:>10}" for k in results))
    for k in keys:
        print(f"{k:<24}" + "".join(f"{results[t][k]:>10.3f}" for t in results))
    print(f"{'package bytes':<24}" + "".join(f"{results[t]['deploy_copied_bytes']:>10.0f}" for t in results))
    import _util  # benchmarks/ is on sys.path when run as a script

    _util.emit({"transports": results}, args.json)  # with --json: also benchmarks/results/deploy_roundtrips.json
    return 0


if __name__ == "__main__":
    sys.exit(main())
