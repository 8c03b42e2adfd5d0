"""``nnf agent ...`` and ``nnf profile-model``: run a profiling agent locally and profile a model on one.

    nnf agent start --local [--port 0] [--token-file F] [--cache-dir D] [--json]
        starts ``python -m agent serve`` as a detached subprocess on a free port, waits until its gRPC
        health service says SERVING, prints the address and pid (the agent keeps running);
    nnf agent info --agent HOST:PORT [--json]
        what the device and agent are (runtimes, CPU, memory, GPUs);
    nnf agent stop --pid PID
        stops an agent started by ``agent start`` (SIGTERM, then waits);
    nnf profile-model ARTIFACT --agent HOST:PORT [--runtime R] [--input-shape 1,3,224,224] [--json]
        uploads ARTIFACT (nothing is sent when the agent already has it) and profiles it; the runtime
        follows from the suffix (.pt torchscript, .pt2 torch_export, .onnx onnxruntime, .tflite litert).

A token is taken from ``--token-file`` or ``$NNF_AGENT_TOKEN`` (``--token`` works but shows in ``ps``).
Deploying agents to other machines over ssh/adb is ``nnf deploy`` (a separate command).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host.cli import print_json
from host.errors import AgentError, ConfigError


def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None):
        try:
            tok = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {exc}") from exc
        if not tok:
            raise ConfigError(f"--token-file {args.token_file} is empty")
        return tok
    if getattr(args, "token", None):
        return args.token
    return os.environ.get("NNF_AGENT_TOKEN") or None


def _add_token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", default=None, help="bearer token (prefer --token-file or $NNF_AGENT_TOKEN)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token")


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("agent", help="start/inspect/stop an on-device profiling agent",
                       description="Run the NN-Factory profiling agent on this machine and talk to agents.")
    asub = a.add_subparsers(dest="agent_command", metavar="ACTION")
    asub.required = True

    s = asub.add_parser("start", help="start an agent on this machine (a subprocess on a free port)",
                        description="Start `python -m agent serve` detached on this machine, wait for its "
                                    "health service, print its address and pid.")
    s.add_argument("--local", action="store_true", required=True,
                   help="run the agent on this machine (remote devices: `nnf deploy`)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    _add_token_args(s)
    s.add_argument("--cache-dir", default=None, help="artifact cache (default: a new temporary directory)")
    s.add_argument("--max-artifact-mb", type=float, default=512.0)
    s.add_argument("--worker-memory-mb", type=float, default=0.0, help="RLIMIT_AS of measurement workers (0: none)")
    s.add_argument("--device-lock", default=None,
                   help="flock file shared by all agents on this machine (default: the agent's; 'none': off)")
    s.add_argument("--log", default=None, help="agent log file (default: CACHE_DIR/agent.log)")
    s.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the agent to be healthy")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=run_start)

    i = asub.add_parser("info", help="show what a device and its agent are",
                        description="Ask an agent for its device info (OS, CPU, memory, GPUs, runtimes).")
    i.add_argument("--agent", required=True, metavar="HOST:PORT")
    _add_token_args(i)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_info)

    t = asub.add_parser("stop", help="stop a local agent started with `nnf agent start --local`",
                        description="Send SIGTERM to a local agent process and wait for it to exit.")
    t.add_argument("--pid", type=int, required=True)
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=run_stop)

    p = sub.add_parser("profile-model", help="profile one model artifact on an agent",
                       description="Upload a model artifact to an agent (skipped when it already has it) and "
                                   "measure its latency and peak memory there.")
    p.add_argument("artifact", metavar="ARTIFACT", help="model file: .pt (TorchScript), .pt2 (torch.export), "
                                                        ".onnx, .tflite")
    p.add_argument("--agent", required=True, metavar="HOST:PORT")
    _add_token_args(p)
    p.add_argument("--tls-root-cert", default=None, help="PEM root certificate of a TLS agent")
    p.add_argument("--runtime", default=None, choices=["torchscript", "torch_export", "onnxruntime", "litert"],
                   help="runtime (default: from the file suffix)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--input-shape", action="append", default=[], metavar="D0,D1,...",
                   help="input shape, once per input (needed for TorchScript; others record their shapes)")
    p.add_argument("--input-dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs (agent default 10)")
    p.add_argument("--repeats", type=int, default=None, help="minimum timed runs (agent default 30)")
    p.add_argument("--min-time-s", type=float, default=None, help="minimum timed duration (agent default 1 s)")
    p.add_argument("--cooldown-ms", type=float, default=0.0)
    p.add_argument("--cpu", type=int, action="append", default=[], help="pin the worker to this CPU (repeatable)")
    p.add_argument("--deadline-s", type=float, default=300.0)
    p.add_argument("--samples", action="store_true", help="include every raw sample in --json output")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_profile)


def _agent_pythonpath() -> str:
    spec = importlib.util.find_spec("agent")
    if spec is None or spec.origin is None:
        raise ConfigError("the 'agent' package is not importable from this installation")
    root = str(Path(spec.origin).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + existing if existing else "")


def run_start(args: argparse.Namespace) -> int:
    from host.client import AgentClient

    token = _token(args)
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="nnf-agent-"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(args.log) if args.log else cache_dir / "agent.log"
    port_file = cache_dir / f"port.{os.getpid()}.{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "agent", "serve", "--host", args.host, "--port", str(args.port),
           "--cache-dir", str(cache_dir), "--port-file", str(port_file),
           "--max-artifact-mb", str(args.max_artifact_mb), "--worker-memory-mb", str(args.worker_memory_mb)]
    if args.device_lock:
        cmd += ["--device-lock", args.device_lock]
    env = {**os.environ, "PYTHONPATH": _agent_pythonpath()}
    env.pop("NNF_AGENT_TOKEN", None)
    if token:
        env["NNF_AGENT_TOKEN"] = token  # the environment, not argv: stays out of `ps`
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + args.wait_s
    while not port_file.exists():
        rc = proc.poll()
        if rc is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise AgentError(f"the agent exited with code {rc} before listening; log {log_path}:\n{tail}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise AgentError(f"the agent did not start listening within {args.wait_s} s (log {log_path})")
        time.sleep(0.05)
    port = int(port_file.read_text().strip())
    port_file.unlink()
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    address = f"{host}:{port}"
    with AgentClient(address, token=token) as client:
        try:
            client.wait_ready(max(1.0, deadline - time.monotonic()))
        except AgentError:
            proc.terminate()
            raise
    result = {"address": address, "host": args.host, "port": port, "pid": proc.pid, "cache_dir": str(cache_dir),
              "log": str(log_path), "auth": bool(token)}
    if args.json:
        print_json(result)
    else:
        print(f"agent listening on {address} (pid {proc.pid})")
        print(f"  cache {cache_dir}, log {log_path}")
        print(f"  profile a model:  nnf profile-model MODEL.onnx --agent {address}")
        print(f"  stop it:          nnf agent stop --pid {proc.pid}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from host.client import AgentClient

    with AgentClient(args.agent, token=_token(args)) as client:
        info = client.device_info()
    d = asdict(info)
    if args.json:
        print_json(d)
    else:
        print(f"{info.hostname}: {info.os} {info.os_release} {info.machine}, {info.cpu_model}, "
              f"{info.logical_cores} cores, {info.total_memory_bytes / 2**30:.1f} GiB")
        for g in info.gpus:
            print(f"  gpu {g['index']}: {g['name']} ({g['total_memory_bytes'] / 2**30:.1f} GiB)")
        for r in info.runtimes:
            print(f"  runtime {r.name} {r.version} on {', '.join(r.devices)} ({r.artifact_suffix}"
                  f"{', carries code' if r.carries_code else ''})")
        print(f"  agent {info.agent_version}, protocol {info.protocol}, auth {'on' if info.auth_required else 'off'}, "
              f"tls {'on' if info.tls else 'off'}")
    return 0


def _is_agent_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"agent" in cmdline and b"serve" in cmdline


def run_stop(args: argparse.Namespace) -> int:
    if not _is_agent_process(args.pid):
        raise ConfigError(f"pid {args.pid} is not a running `agent serve` process; nothing stopped")
    os.kill(args.pid, signal.SIGTERM)
    end = time.monotonic() + 15
    while time.monotonic() < end and _is_agent_process(args.pid):
        time.sleep(0.05)
        # reap it if it is our child (it is not when started by another nnf process)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(args.pid, os.WNOHANG)
    stopped = not _is_agent_process(args.pid)
    if args.json:
        print_json({"pid": args.pid, "stopped": stopped})
    else:
        print(f"agent pid {args.pid} {'stopped' if stopped else 'did not stop within 15 s'}")
    return 0 if stopped else 1


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: use comma-separated integers like 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: dimensions must be positive integers")
    return shape


def run_profile(args: argparse.Namespace) -> int:
    from agent.runtimes import runtime_from_suffix, runtime_name
    from host.client import AgentClient, ProfileRequest, TensorSpec

    path = Path(args.artifact)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: profile-model takes an exported model file "
                          f"(.pt, .pt2, .onnx, .tflite); export a compact model first")
    if not path.is_file():
        raise ConfigError(f"artifact {path} does not exist")
    runtime = args.runtime
    if runtime is None:
        rt = runtime_from_suffix(path)
        if rt == 0:
            raise ConfigError(f"cannot tell the runtime from the suffix {path.suffix!r}: pass --runtime "
                              f"(torchscript, torch_export, onnxruntime, litert)")
        runtime = runtime_name(rt)
    inputs = [TensorSpec(_parse_shape(s), args.input_dtype) for s in args.input_shape]
    with AgentClient(args.agent, token=_token(args), tls_root_cert=args.tls_root_cert) as client:
        up = client.upload(path)
        req = ProfileRequest(artifact_sha256=up.sha256, runtime=runtime, device=args.device, inputs=inputs,
                             threads=args.threads, warmup_runs=args.warmup, repeats=args.repeats,
                             min_time_s=args.min_time_s, cooldown_ms=args.cooldown_ms, deadline_s=args.deadline_s,
                             cpu_affinity=args.cpu)
        res = client.profile(req)
    if args.json:
        d = res.to_json(samples=args.samples)
        d["upload"] = {"sha256": up.sha256, "size_bytes": up.size_bytes, "bytes_sent": up.bytes_sent,
                       "skipped": up.skipped}
        print_json(d)
    else:
        sent = "already on the agent" if up.skipped else f"uploaded {up.bytes_sent / 2**20:.2f} MiB"
        print(f"{path.name} ({sent}, sha256 {up.sha256[:12]}…) on {args.agent} with {res.runtime} "
              f"[{res.context.device}, {res.context.threads} thread(s), cpus {list(res.context.cpu_affinity)}]")
        print(f"  latency over {len(res.samples_ns)} runs: median {res.median_latency_us / 1e3:.3f} ms, "
              f"min {res.min_latency_us / 1e3:.3f}, mean {res.mean_latency_us / 1e3:.3f}, "
              f"p90 {res.p90_latency_us / 1e3:.3f}, p99 {res.p99_latency_us / 1e3:.3f}, "
              f"std {res.std_latency_us / 1e3:.3f} ms")
        print(f"  peak memory {res.peak_bytes / 2**20:.2f} MiB ({res.peak_method}); "
              f"load+warm-up peak {res.load_peak_bytes / 2**20:.2f} MiB; load {res.load_time_ms:.0f} ms")
    return 0
