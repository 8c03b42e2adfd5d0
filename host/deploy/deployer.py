"""Deploying, starting, stopping and removing the agent on a device, over any :class:`Transport`.

Layout on the device (``W`` = the device's ``workdir``; relative paths are under the remote ``$HOME``)::

    W/.nnf-workdir              marker: undeploy removes W only when this file is there
    W/releases/<release_id>/    one unpacked agent package (``agent/...``) + RELEASE.json; the release id is
                                ``<agent version>-<sha256[:12]>`` of the reproducible tarball
    W/cache/                    the agent's artifact cache (--cache-dir)
    W/run/ (mode 0700)          token (the agent's bearer token, 0600), agent.pid, agent.log (stdout+stderr)
    W/run/agent.json            what is running: release, pid, port (written after a successful start)

``deploy`` = probe the device's Python (version, the agent's import-time requirements, the runtime, free
disk, port) -> copy the tarball only if that release is not there yet (sha256 verified on the device) ->
unpack -> start ``python -m agent serve --host 127.0.0.1`` detached (``setsid nohup``, pidfile, log) ->
wait for its port -> health-check it through the tunnel. Every remote command's exit code is checked; on
any failure what this deploy created is removed again, so no partial deployment is left behind.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.protocol import LISTENING_PREFIX  # the line the agent prints once bound (the wire contract)
from host.deploy.inventory import Device
from host.deploy.package import (
    MIN_DEVICE_PYTHON,
    RUNTIME_MODULES,
    AgentPackage,
    build_agent_package,
    pip_name,
)
from host.deploy.transport import Transport
from host.errors import DeployError

MARKER = ".nnf-workdir"
LOG_TAIL_LINES = 20



def device_script(name: str) -> str:
    """The source of a script that runs on the device with its own Python (``host/deploy/device_scripts/``).

    Device scripts use only the standard library of the device's Python (>= 3.10) and print one result line.
    """
    return (Path(__file__).with_name("device_scripts") / f"{name}.py").read_text()


@dataclass
class ProbeResult:
    python_found: bool
    python: str
    python_version: tuple[int, ...] = ()
    missing: list[str] = field(default_factory=list)
    runtimes: dict[str, list[str]] = field(default_factory=dict)
    free_bytes: int = 0
    writable: bool = True
    existing_parent: str = ""
    port_free: bool | None = None
    machine: str = ""
    cpu_count: int | None = None

    def problems(self, device: Device) -> list[str]:
        """Everything that prevents the agent from running on this device, each with what to do."""
        py = device.python
        if not self.python_found:
            return [f"Python interpreter {py!r} not found; install Python >= "
                    f"{'.'.join(map(str, MIN_DEVICE_PYTHON))} (Android: Termux `pkg install python`) or set "
                    f"python = \"/path/to/python3\" in the inventory"]
        out = []
        if tuple(self.python_version[:2]) < MIN_DEVICE_PYTHON:
            out.append(f"{py} is Python {'.'.join(map(str, self.python_version))}; the agent needs >= "
                       f"{'.'.join(map(str, MIN_DEVICE_PYTHON))}")
        if self.missing:
            pkgs = " ".join(sorted({pip_name(m) for m in self.missing}))
            out.append(f"missing Python modules: {', '.join(self.missing)} (install on the device: "
                       f"{py} -m pip install {pkgs})")
        wanted = [device.runtime_family] if device.runtime != "auto" else list(RUNTIME_MODULES)
        if not any(self.runtimes.get(r) for r in wanted):
            alts = " or ".join(pip_name(m) for r in wanted for m in RUNTIME_MODULES[r][:1])
            out.append(f"runtime {device.runtime!r} is not installed (install on the device: {py} -m pip "
                       f"install {alts})")
        if not self.writable:
            out.append(f"{self.existing_parent} is not writable; choose another workdir")
        if self.port_free is False:
            out.append(f"port {device.agent_port} is already in use on the device's loopback; set "
                       f"agent_port = 0 (any free port) or another port in the inventory")
        return out


@dataclass
class AgentState:
    running: bool
    release: str | None = None
    pid: int | None = None
    port: int | None = None


@dataclass
class DeployReport:
    device: str
    release_id: str
    sha256: str
    package_bytes: int
    copied_bytes: int
    reused_release: bool
    started: bool
    pid: int
    port: int
    workdir: str
    python: list[int]
    runtimes: dict[str, list[str]]
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def q(s: str) -> str:
    return shlex.quote(s)


def _workdir_expr(device: Device) -> str:
    """Shell expression of the absolute workdir (relative paths are under the remote ``$HOME``)."""
    wd = device.workdir
    if wd.startswith("/"):
        return q(wd.rstrip("/"))
    wd = wd[2:] if wd.startswith("~/") else wd
    return '"$HOME"/' + q(wd.strip("/"))


@dataclass
class RemoteStatus:
    """Everything deploy/undeploy/sessions need to know about the device's workdir, read in ONE command
    (every remote command costs a round trip, ~0.3 s even to a loopback sshd)."""

    workdir: str
    exists: bool = False
    marker: bool = False
    nonempty: bool = False
    release_present: bool = False
    releases: tuple[str, ...] = ()
    token: str | None = None
    agent_json: dict[str, Any] = field(default_factory=dict)
    live_pid: int | None = None  # pid from the pidfile, alive and running our agent

    @property
    def agent(self) -> AgentState:
        info = self.agent_json
        if not info:
            return AgentState(running=False)
        pid, port = int(info.get("pid", 0)), int(info.get("port", 0))
        return AgentState(running=bool(pid) and pid == self.live_pid, release=info.get("release"),
                          pid=pid, port=port)


def remote_status(transport: Transport, release_id: str | None = None) -> RemoteStatus:
    """Read the workdir's state (see :class:`RemoteStatus`)."""
    rel = q(release_id or "-")
    script = (
        f"W={_workdir_expr(transport.device)}; printf 'workdir=%s\\n' \"$W\"; "
        "[ -d \"$W\" ] && echo exists=1; "
        f"[ -f \"$W/{MARKER}\" ] && echo marker=1; "
        "[ -n \"$(ls -A \"$W\" 2>/dev/null)\" ] && echo nonempty=1; "
        f"[ -f \"$W/releases/\"{rel}/RELEASE.json ] && echo release_present=1; "
        "[ -d \"$W/releases\" ] && printf 'releases=%s\\n' \"$(ls \"$W/releases\" | tr '\\n' ' ')\"; "
        "[ -s \"$W/run/token\" ] && printf 'token=%s\\n' \"$(cat \"$W/run/token\")\"; "
        "[ -s \"$W/run/agent.json\" ] && printf 'agent_json=%s\\n' \"$(cat \"$W/run/agent.json\")\"; "
        "p=$(cat \"$W/run/agent.pid\" 2>/dev/null); "
        "if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then "
        "printf 'pid=%s\\ncmdline=%s\\n' \"$p\" \"$(tr '\\000' ' ' < /proc/$p/cmdline 2>/dev/null)\"; fi; "
        "exit 0"
    )
    res = transport.check(script, "reading the agent's state on the device", timeout_s=60)
    kv: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            kv[key] = value
    workdir = kv.get("workdir", "")
    if not workdir.startswith("/") or workdir.rstrip("/") == "":
        raise DeployError(f"device {transport.device.name!r}: cannot resolve workdir {transport.device.workdir!r} "
                          f"(got {workdir!r}); set an absolute workdir in the inventory")
    st = RemoteStatus(workdir=workdir, exists="exists" in kv, marker="marker" in kv, nonempty="nonempty" in kv,
                      release_present="release_present" in kv, releases=tuple(kv.get("releases", "").split()),
                      token=kv.get("token") or None)
    if kv.get("agent_json"):
        with contextlib.suppress(json.JSONDecodeError):
            st.agent_json = json.loads(kv["agent_json"])
    cmdline = kv.get("cmdline", "")
    if kv.get("pid", "").isdigit() and "agent" in cmdline and workdir in cmdline:
        st.live_pid = int(kv["pid"])  # guards against a pid reused after a reboot
    return st


def probe(transport: Transport, workdir: str, requirements: tuple[str, ...]) -> ProbeResult:
    """Check the device's Python, the agent's requirements, runtimes, disk space and the agent port."""
    d = transport.device
    args = {"required": list(requirements), "runtimes": {k: list(v) for k, v in RUNTIME_MODULES.items()},
            "workdir": workdir, "port": d.agent_port}
    cmd = f"{q(d.python)} -c {q(device_script('probe'))} {q(json.dumps(args))}"
    res = transport.run(cmd, timeout_s=120)
    if res.exit_code == 127 or (res.exit_code != 0 and "not found" in res.stderr and "NNF-PROBE" not in res.stdout):
        return ProbeResult(python_found=False, python=d.python)
    m = re.search(r"^NNF-PROBE (\{.*\})$", res.stdout, re.M)
    if res.exit_code != 0 or m is None:
        raise DeployError(f"device {d.name!r}: probing {d.python} failed (exit code {res.exit_code}):\n"
                          f"{res.tail()}\nIs {d.python!r} a working Python 3 interpreter?")
    info = json.loads(m.group(1))
    return ProbeResult(
        python_found=True, python=d.python, python_version=tuple(info["python"]), missing=info["missing"],
        runtimes=info["runtimes"], free_bytes=int(info["free_bytes"]), writable=bool(info["writable"]),
        existing_parent=info["existing_parent"], port_free=info["port_free"], machine=info.get("machine", ""),
        cpu_count=info.get("cpu_count"),
    )


def log_tail(transport: Transport, workdir: str, lines: int = LOG_TAIL_LINES) -> str:
    res = transport.run(f"tail -n {int(lines)} {q(workdir + '/run/agent.log')} 2>/dev/null", timeout_s=30)
    return res.stdout.strip() if res.exit_code == 0 else ""


def stop_agent(transport: Transport, workdir: str, timeout_s: int = 10) -> bool:
    """Stop the agent recorded in ``W/run`` (TERM, then KILL after ``timeout_s``); True if one was running.

    ``agent.json`` stays: it records which release was deployed, so a session can restart it.
    """
    st = remote_status(transport)
    if st.live_pid is None:
        transport.run(f"rm -f {q(workdir + '/run/agent.pid')}", timeout_s=30)
        return False
    pid = st.live_pid
    transport.check(
        f"kill {pid} || exit 1; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt {int(timeout_s) * 5} ]; do "
        f"sleep 0.2 2>/dev/null || sleep 1; i=$((i+1)); done; kill -9 {pid} 2>/dev/null; "
        f"rm -f {q(workdir + '/run/agent.pid')}",
        f"stopping the agent (pid {pid})", timeout_s=timeout_s + 30)
    return True




def agent_command(device: Device, workdir: str, release_id: str) -> str:
    """The detached start command (prints nothing; pid goes to ``W/run/agent.pid``).

    The agent reads its bearer token from ``W/run/token`` (``--token-file``; mode 0600 in a 0700 directory),
    so the token never appears in a command line (``ps``) or on the host's disk.
    """
    run = workdir + "/run"
    # XDG_CACHE_HOME: runtimes' own caches (onnxruntime writes a telemetry device id under
    # ~/.cache/Microsoft) stay in the workdir, so undeploy leaves nothing in the user's home
    env = {"PYTHONPATH": f"{workdir}/releases/{release_id}", "PYTHONUNBUFFERED": "1",
           "XDG_CACHE_HOME": f"{run}/xdg-cache", **device.env}
    if device.threads:
        env.setdefault("OMP_NUM_THREADS", str(device.threads))
    env_s = " ".join(f"{k}={q(v)}" for k, v in env.items())
    prefix = ""
    if device.affinity:
        prefix = f"taskset -c {','.join(map(str, device.affinity))} "
    serve = (f"{q(device.python)} -m agent serve --host 127.0.0.1 --port {device.agent_port} "
             f"--cache-dir {q(workdir + '/cache')} --token-file {q(run + '/token')}")
    # setsid (where present) puts the agent in its own session so it survives the ssh/adb session ending
    return (
        f"cd {q(workdir)} || exit 1; mkdir -p cache || exit 1; "
        f"if command -v setsid >/dev/null 2>&1; then D='setsid nohup'; else D=nohup; fi; "
        f"env {env_s} $D {prefix}{serve} > {q(run + '/agent.log')} 2>&1 < /dev/null & "
        f"echo $! > {q(run + '/agent.pid')}"
    )


def setup_workdir(transport: Transport, workdir: str, existing_token: str | None) -> str:
    """Create the workdir layout and the agent's bearer token (once; 0600 in the 0700 run directory).

    The token is generated here and written by the shell's ``printf`` builtin (no process argv shows it);
    it is never stored on the host.
    """
    token = existing_token or secrets.token_urlsafe(32)
    w = q(workdir)
    transport.check(
        f"mkdir -p {w}/releases {w}/run {w}/cache && chmod 700 {w}/run && touch {w}/{MARKER} && "
        f"if [ ! -s {w}/run/token ]; then (umask 077 && printf '%s' {q(token)} > {w}/run/token); fi",
        "creating the workdir", timeout_s=60)
    return token


def start_agent(transport: Transport, workdir: str, release_id: str) -> tuple[int, int]:
    """Start the agent detached on the device's loopback and wait for its bound port; returns (pid, port)."""
    d = transport.device
    if d.affinity:
        transport.check("command -v taskset", "looking for taskset (needed by affinity = [...])", timeout_s=30)
    out = transport.check(agent_command(d, workdir, release_id) + f"; cat {q(workdir + '/run/agent.pid')}",
                          "starting the agent", timeout_s=60).stdout.strip()
    if not out.splitlines() or not out.splitlines()[-1].isdigit():
        raise DeployError(f"device {d.name!r}: starting the agent printed no pid: {out!r}")
    pid = int(out.splitlines()[-1])
    log = workdir + "/run/agent.log"
    deadline = time.monotonic() + d.start_timeout_s
    # one round trip per poll; the device-side loop waits up to ~2 s for the agent's LISTENING line
    poll = (f"i=0; while [ $i -lt 10 ]; do if ! kill -0 {pid} 2>/dev/null; then echo DEAD; exit 0; fi; "
            f"grep -m 1 '^{LISTENING_PREFIX} ' {q(log)} && exit 0; sleep 0.2 2>/dev/null || sleep 1; "
            f"i=$((i+1)); done; echo WAIT")
    while True:
        out = transport.check(poll, "waiting for the agent", timeout_s=60).stdout.strip()
        m = re.search(r"\bport=(\d+)", out)
        if m:
            port = int(m.group(1))
            break
        if out.endswith("DEAD"):
            tail = log_tail(transport, workdir)
            hint = ""
            if re.search(r"in use|EADDRINUSE|Failed to bind|bind", tail, re.I):
                hint = ("\nThe port is probably in use on the device: set agent_port = 0 or a free port "
                        "in the inventory.")
            raise DeployError(f"device {d.name!r}: the agent exited while starting; its log ends with:\n"
                              f"{tail or '(empty log)'}{hint}")
        if time.monotonic() > deadline:
            transport.run(f"kill -9 {pid} 2>/dev/null", timeout_s=30)
            raise DeployError(f"device {d.name!r}: the agent did not report its port within "
                              f"{d.start_timeout_s:.0f} s (raise start_timeout_s); log:\n{log_tail(transport, workdir)}")
    state = json.dumps({"release": release_id, "pid": pid, "port": port, "started_unix": time.time()})
    transport.put(state.encode(), workdir + "/run/agent.json")
    return pid, port


def _install_release(transport: Transport, pkg: AgentPackage, workdir: str) -> int:
    """Copy, verify (sha256 on the device) and unpack the package; returns the bytes copied."""
    d = transport.device
    rel = f"{workdir}/releases/{pkg.release_id}"
    tarball = f"{workdir}/releases/.{pkg.release_id}.tar.gz"
    tmpdir = f"{workdir}/releases/.{pkg.release_id}.tmp"
    release = json.dumps({"release": pkg.release_id, "version": pkg.version, "sha256": pkg.sha256,
                          "files": len(pkg.files)})
    verify = device_script("verify_sha256")
    try:
        transport.put(pkg.data, tarball)
        res = transport.run(
            f"{q(d.python)} -c {q(verify)} {q(tarball)} {pkg.sha256} || {{ echo NNF-CORRUPT; exit 1; }}; "
            f"rm -rf {q(tmpdir)} && mkdir -p {q(tmpdir)} && tar -xzf {q(tarball)} -C {q(tmpdir)} && "
            f"printf '%s' {q(release)} > {q(tmpdir + '/RELEASE.json')} && rm -rf {q(rel)} && "
            f"mv {q(tmpdir)} {q(rel)} && rm -f {q(tarball)}", timeout_s=300)
        if "NNF-CORRUPT" in res.stdout:
            raise DeployError(f"device {d.name!r}: the copied package is corrupt (sha256 mismatch); deploy again")
        if res.exit_code != 0:
            raise DeployError(f"device {d.name!r}: unpacking the agent package failed (exit code "
                              f"{res.exit_code}):\n{res.tail()}")
    except BaseException:
        transport.run(f"rm -rf {q(tmpdir)} {q(tarball)}", timeout_s=60)
        raise
    return pkg.size_bytes


def _health_check(transport: Transport, port: int, token: str | None, timeout_s: float) -> None:
    """gRPC health check of the agent through a tunnel (raises DeployError)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from host.deploy.forward import Forwarder

    with Forwarder(lambda: transport.open_stream(port), name=transport.device.name) as fwd:
        # a private subchannel pool: a forwarder port reused from an earlier (closed) tunnel must not inherit
        # that connection's backoff state from gRPC's global pool
        channel = grpc.insecure_channel(fwd.address, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    md = (("authorization", f"Bearer {token}"),) if token else None
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5, metadata=md)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                else:
                    last = f"status {resp.status}"
                if time.monotonic() > deadline:
                    raise DeployError(f"device {transport.device.name!r}: the agent started but does not answer "
                                      f"health checks through the tunnel ({last})")
                time.sleep(0.3)
        finally:
            channel.close()


def deploy(transport: Transport, *, package: AgentPackage | None = None, restart: bool = False) -> DeployReport:
    """Deploy (or re-use) the agent on the transport's device and make sure it runs; see module docstring."""
    t0 = time.monotonic()
    d = transport.device
    pkg = package or build_agent_package()
    st = remote_status(transport, pkg.release_id)
    workdir = st.workdir
    if st.exists and not st.marker and st.nonempty:
        raise DeployError(f"device {d.name!r}: workdir {workdir} exists and was not created by nnf; "
                          f"choose another workdir in the inventory (nnf never writes into foreign dirs)")
    info = probe(transport, workdir, pkg.requirements)
    problems = info.problems(d)
    if problems:
        raise DeployError(f"device {d.name!r} cannot run the agent:\n- " + "\n- ".join(problems))
    if not st.release_present:
        needed = pkg.size_bytes * 4 + (1 << 20)
        if info.free_bytes < needed:
            raise DeployError(
                f"device {d.name!r}: not enough disk space in {info.existing_parent}: {info.free_bytes >> 10} KiB "
                f"free, the agent needs about {needed >> 10} KiB; free some space or choose another workdir"
            )
    state = st.agent
    started = False
    copied = 0
    try:
        token = setup_workdir(transport, workdir, st.token)
        if not st.release_present:
            copied = _install_release(transport, pkg, workdir)
        if state.running and state.release == pkg.release_id and not restart and state.pid and state.port:
            pid, port = state.pid, state.port
        else:
            if state.running:
                stop_agent(transport, workdir)
            pid, port = start_agent(transport, workdir, pkg.release_id)
            started = True
        _health_check(transport, port, token, timeout_s=d.start_timeout_s)
        old = [r for r in st.releases if r != pkg.release_id]
        if old:  # older releases are no longer needed once the new one answers
            transport.check(f"cd {q(workdir + '/releases')} && rm -rf -- " + " ".join(q(r) for r in old),
                            "removing old releases")
    except BaseException:
        if started:
            with contextlib.suppress(DeployError):
                stop_agent(transport, workdir)
        if not st.exists:
            transport.run(f"rm -rf {q(workdir)}", timeout_s=60)
        elif copied:
            transport.run(f"rm -rf {q(workdir + '/releases/' + pkg.release_id)}", timeout_s=60)
        raise
    return DeployReport(
        device=d.name, release_id=pkg.release_id, sha256=pkg.sha256, package_bytes=pkg.size_bytes,
        copied_bytes=copied, reused_release=copied == 0, started=started, pid=pid, port=port, workdir=workdir,
        python=list(info.python_version), runtimes=info.runtimes, elapsed_s=time.monotonic() - t0,
    )


def undeploy(transport: Transport) -> dict[str, Any]:
    """Stop the agent and remove the workdir (only if nnf created it)."""
    d = transport.device
    st = remote_status(transport)
    workdir = st.workdir
    if not st.exists:
        return {"device": d.name, "workdir": workdir, "stopped": False, "removed": False}
    if not st.marker:
        raise DeployError(f"device {d.name!r}: {workdir} was not created by nnf (no {MARKER}); refusing to delete it")
    stopped = stop_agent(transport, workdir) if st.live_pid else False
    transport.check(f"rm -rf {q(workdir)}", f"removing {workdir}", timeout_s=120)
    return {"device": d.name, "workdir": workdir, "stopped": stopped, "removed": True}


def fetch_log(transport: Transport, lines: int | None = None) -> str:
    """The agent's log (whole file, or its last ``lines`` lines)."""
    name = transport.device.name
    path = f"{_workdir_expr(transport.device)}/run/agent.log"
    cmd = f"tail -n {int(lines)} {path}" if lines else f"cat {path}"
    res = transport.run(f"if [ -f {path} ]; then {cmd}; else echo NNF-NO-LOG; exit 3; fi", timeout_s=120)
    if res.exit_code == 3 and "NNF-NO-LOG" in res.stdout:
        raise DeployError(f"device {name!r}: no agent log on the device; deploy first (nnf deploy {name})")
    if res.exit_code != 0:
        raise DeployError(f"device {name!r}: reading the agent log failed (exit code {res.exit_code}):\n{res.tail()}")
    return res.stdout


def check_device(transport: Transport, package: AgentPackage | None = None) -> dict[str, Any]:
    """Reachable? agent deployable (Python, requirements, runtime, disk)? agent running?"""
    pkg = package or build_agent_package()
    st = remote_status(transport, pkg.release_id)
    info = probe(transport, st.workdir, pkg.requirements)
    problems = info.problems(transport.device)
    state = st.agent
    absent = [r for r in RUNTIME_MODULES if not info.runtimes.get(r)] if info.python_found else []
    return {
        "device": transport.device.name, "reachable": True, "workdir": st.workdir,
        "machine": info.machine or None, "cpu_count": info.cpu_count,
        "python": list(info.python_version) if info.python_found else None, "missing": info.missing,
        "runtimes": {k: v for k, v in info.runtimes.items() if v}, "free_bytes": info.free_bytes,
        # runtimes the device lacks, each with the command that would add it (informational: one is enough)
        "runtimes_missing": {r: f"{transport.device.python} -m pip install {pip_name(RUNTIME_MODULES[r][0])}"
                             for r in absent},
        "deployable": not problems, "problems": problems, "agent_running": state.running,
        "agent_release": state.release, "agent_port": state.port if state.running else None,
        "current_release": pkg.release_id, "current_release_on_device": st.release_present,
    }
