"""``nnf agent ...`` and ``nnf profile-model``: run a profiling agent locally and talk to agents.

    nnf agent start --local [--port 0] [--state-dir D] [--token-file F | --no-auth] [--cache-dir D] [--json]
        starts ``python -m agent serve`` detached (its own session; log in STATE_DIR/agent.log), waits
        until its gRPC health service says SERVING, prints the address, pid and where its token is;
    nnf agent info --agent HOST:PORT [--json]
        what the device and agent are (runtimes, CPU, memory, GPUs, caps);
    nnf agent cache --agent HOST:PORT (--stats | --clear) [--json]
        what the agent's artifact cache holds (quota, evictions) / empty it;
    nnf agent stop --pid PID
        stops a local agent (``nnf agent start``, ``nnf-agent serve`` or ``python -m agent serve``:
        SIGTERM, then waits; the agent exits within ~5 s);
    nnf profile-model ARTIFACT --agent HOST:PORT [--runtime R] [--input-shape 1,3,224,224] [--json]
        uploads ARTIFACT (nothing is sent when the agent already has it) and profiles it; the runtime
        follows from the suffix (.pt torchscript, .pt2 torch-export, .onnx onnx, .tflite tflite) and the
        input shapes from the artifact's sidecar when ``nnf export`` wrote it.

Every command that talks to an agent takes the same connection options (:func:`add_connection_args`):
``--agent HOST:PORT``, ``--token-file F`` (or ``$NNF_AGENT_TOKEN``; ``--token`` works but shows in ``ps``;
without any, the token of a loopback agent of this user is found in its state directory) and
``--tls-root-cert PEM`` for an agent serving TLS (``nnf-agent serve --tls-cert/--tls-key``); the commands of
other modules that talk to agents get the same from ``$NNF_AGENT_TOKEN`` and ``$NNF_AGENT_TLS_ROOT_CERT``.
Deploying agents to other machines over ssh/adb is ``nnf deploy`` (a separate command).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from host.cli import print_json
from host.commands.options import (
    RUNTIME_NAMES,
    add_input_shape_arg,
    add_runtime_arg,
    add_target_arg,
    add_warmup_runs_arg,
    agent_address,
    agent_runtime,
    parse_shape,
    sidecar_inputs,
)
from host.errors import AgentError, ConfigError


# ------------------------------------------------------------------------------------------ connection options
def add_connection_args(p: argparse.ArgumentParser, *, agent_required: bool = True) -> None:
    """``--agent HOST:PORT``, ``--token``, ``--token-file``, ``--tls-root-cert``: how to reach an agent."""
    p.add_argument("--agent", required=agent_required, metavar="HOST:PORT", type=agent_address,
                   help="address of the agent (the port is required; `nnf agent start --local` prints it)")
    p.add_argument("--token", default=None, help="bearer token (prefer --token-file or $NNF_AGENT_TOKEN)")
    p.add_argument("--token-file", default=None,
                   help="file holding the agent's bearer token (default: $NNF_AGENT_TOKEN, else the token of a "
                        "loopback agent of this user, read from its state directory)")
    p.add_argument("--tls-root-cert", default=None, metavar="PEM",
                   help="certificate (or CA) of an agent serving TLS (nnf-agent serve --tls-cert/--tls-key)")


def token_from_args(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None):
        try:
            tok = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {exc.strerror or exc}") from exc
        if not tok:
            raise ConfigError(f"--token-file {args.token_file} is empty")
        return tok
    if getattr(args, "token", None):
        return args.token
    return os.environ.get("NNF_AGENT_TOKEN") or None


def client_from_args(args: argparse.Namespace, address: str | None = None, **kw: Any) -> Any:
    """A :class:`host.client.AgentClient` for the connection options of ``args``."""
    from host.client import AgentClient

    return AgentClient(address or args.agent, token=token_from_args(args),
                       tls_root_cert=getattr(args, "tls_root_cert", None), **kw)


# ------------------------------------------------------------------------------------------ parsers
def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("agent", help="start/inspect/stop an on-device profiling agent",
                       description="Run the NN-Factory profiling agent on this machine and talk to agents.")
    asub = a.add_subparsers(dest="agent_command", metavar="ACTION")
    asub.required = True

    s = asub.add_parser("start", help="start an agent on this machine (detached, on a free port)",
                        description="Start `python -m agent serve` detached on this machine, wait for its "
                                    "health service, print its address, pid and token file.")
    s.add_argument("--local", action="store_true", required=True,
                   help="run the agent on this machine (remote devices: `nnf deploy`)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    s.add_argument("--state-dir", default=None,
                   help="the agent's state directory: its token and log (default ~/.local/state/nnf-agent)")
    s.add_argument("--token-file", default=None, help="use this token instead of the generated one")
    s.add_argument("--no-auth", action="store_true", help="no token (loopback only; logged by the agent)")
    s.add_argument("--cache-dir", default=None, help="artifact cache (default ~/.cache/nnf-agent)")
    s.add_argument("--cache-quota-mb", type=float, default=None, help="cache quota (default: from the free disk)")
    s.add_argument("--max-artifact-mb", type=float, default=None,
                   help="largest artifact the agent accepts, in MB (default: the agent's)")
    s.add_argument("--worker-memory-mb", type=float, default=None,
                   help="memory a model may add on top of its runtime (default: a quarter of this machine's)")
    s.add_argument("--allow-pickle-formats", action="store_true",
                   help="accept torch.export (.pt2) archives (unpickled at load: trusted clients only)")
    s.add_argument("--tls-cert", default=None, help="serve TLS with this PEM certificate (with --tls-key)")
    s.add_argument("--tls-key", default=None, help="the PEM private key of --tls-cert")
    s.add_argument("--device-lock", default=None,
                   help="flock file shared by all agents on this machine (default: the agent's; 'none': off)")
    s.add_argument("--log", default=None, help="agent log file (default: STATE_DIR/agent.log)")
    s.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for the agent to be healthy")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=run_start)

    i = asub.add_parser("info", help="show what a device and its agent are",
                        description="Ask an agent for its device info (OS, CPU, memory, GPUs, runtimes, caps).")
    add_connection_args(i)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_info)

    c = asub.add_parser("cache", help="show or clear an agent's artifact cache",
                        description="What an agent's artifact cache holds (artifacts, unfinished uploads, quota, "
                                    "evictions), or empty it.")
    add_connection_args(c)
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--stats", action="store_true", help="show the cache's contents and bounds")
    what.add_argument("--clear", action="store_true", help="delete every artifact and unfinished upload")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_cache)

    t = asub.add_parser("stop", help="stop a local agent (nnf agent start, nnf-agent serve, python -m agent serve)",
                        description="Send SIGTERM to a local agent process and wait for it to exit.")
    t.add_argument("--pid", type=int, required=True, help="process id of the agent (`nnf agent start` prints it)")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=run_stop)

    p = sub.add_parser("profile-model", help="profile one model artifact on an agent",
                       description="Upload a model artifact to an agent (skipped when it already has it) and "
                                   "measure its latency and peak memory there.")
    p.add_argument("artifact", metavar="ARTIFACT", help="model file: .pt (TorchScript), .pt2 (torch.export), "
                                                        ".onnx, .tflite")
    add_connection_args(p)
    add_runtime_arg(p, help="runtime (default: from the file suffix)")
    add_target_arg(p, old_device_alias=True)
    add_input_shape_arg(p, help="input shape incl. batch, e.g. 1,3,224,224, once per input (default: from the "
                                "artifact's sidecar FILE.json; ONNX/TFLite files also record their own shapes)")
    p.add_argument("--input-dtype", default="float32", help="dtype of the --input-shape inputs (default float32)")
    p.add_argument("--threads", type=int, default=1, help="threads the model runs with (default 1)")
    add_warmup_runs_arg(p)
    p.add_argument("--repeats", type=int, default=None, help="minimum timed runs (default: the agent's, 30)")
    p.add_argument("--min-time-s", type=float, default=None, help="minimum timed duration (default: the agent's, 1 s)")
    p.add_argument("--cooldown-ms", type=float, default=0.0, help="pause between timed runs (default 0)")
    p.add_argument("--cpu", type=int, action="append", default=[], help="pin the worker to this CPU (repeatable)")
    p.add_argument("--deadline-s", type=float, default=300.0,
                   help="give up on the measurement after this many seconds (default 300)")
    p.add_argument("--samples", action="store_true", help="include every raw sample in --json output")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_profile)


# ------------------------------------------------------------------------------------------ start
def run_start(args: argparse.Namespace) -> int:
    from agent.config import ConfigProblem, check_private_dir, default_state_dir
    from agent.launch import LaunchError, start_local_agent

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        check_private_dir(state_dir, "agent state directory")
    except ConfigProblem as exc:
        raise ConfigError(str(exc)) from None
    log_path = Path(args.log) if args.log else state_dir / "agent.log"
    extra: list[str] = []
    for flag, value in (("--cache-dir", args.cache_dir), ("--cache-quota-mb", args.cache_quota_mb),
                        ("--max-artifact-mb", args.max_artifact_mb), ("--worker-memory-mb", args.worker_memory_mb),
                        ("--device-lock", args.device_lock), ("--tls-cert", args.tls_cert),
                        ("--tls-key", args.tls_key)):
        if value is not None:
            extra += [flag, str(value)]
    if args.allow_pickle_formats:
        extra.append("--allow-pickle-formats")
    token_file = Path(args.token_file) if args.token_file else None
    try:
        agent = start_local_agent(host=args.host, port=args.port, state_dir=state_dir, token_file=token_file,
                                  no_auth=args.no_auth, extra_args=extra, detach=True, log_path=log_path,
                                  wait_s=args.wait_s)
    except (LaunchError, ConfigProblem) as exc:
        raise AgentError(f"{exc}\n(log: {log_path})") from None
    from host.client import AgentClient

    tls_root = Path(args.tls_cert) if args.tls_cert else None
    host = "localhost" if tls_root is not None and agent.listening.host == "127.0.0.1" else None
    address = f"{host}:{agent.port}" if host else agent.address
    with AgentClient(address, token=agent.token, tls_root_cert=tls_root) as client:
        try:
            client.wait_ready(max(1.0, args.wait_s))
        except AgentError:
            agent.stop()
            raise
    token_path = str(token_file or state_dir / "token") if agent.token else None
    result = {"address": address, "host": args.host, "port": agent.port, "pid": agent.pid,
              "state_dir": str(state_dir), "log": str(log_path), "auth": agent.token is not None,
              "token_file": token_path, "tls": tls_root is not None}
    if args.json:
        print_json(result)
    else:
        print(f"agent listening on {address} (pid {agent.pid})")
        print(f"  log {log_path}")
        if token_path:
            print(f"  token {token_path} (nnf reads it automatically for loopback agents of your user)")
        else:
            print("  authentication OFF (--no-auth): any local process can send it models to run")
        print(f"  profile a model:  nnf profile-model MODEL.onnx --agent {address}")
        print(f"  stop it:          nnf agent stop --pid {agent.pid}")
    return 0


# ------------------------------------------------------------------------------------------ info, cache
def run_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    with client_from_args(args) as client:
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
            state = f" DISABLED: {r.note}" if r.disabled else ""
            print(f"  runtime {r.name} {r.version} on {', '.join(r.devices)} ({r.artifact_suffix}"
                  f"{', carries code' if r.carries_code else ''}){state}")
        print(f"  agent {info.agent_version}, protocol {info.protocol}, auth {'on' if info.auth_required else 'off'}, "
              f"tls {'on' if info.tls else 'off'}, isolation {info.isolation or '?'}")
        print(f"  caps: model memory {info.worker_memory_limit_bytes / 2**20:.0f} MiB, {info.max_threads} threads, "
              f"inputs {info.max_input_bytes / 2**20:.0f} MiB, artifacts {info.max_artifact_bytes / 2**20:.0f} MiB, "
              f"cache {info.cache_quota_bytes / 2**20:.0f} MiB")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    with client_from_args(args) as client:
        if args.clear:
            before = client.cache_stats()
            deleted = client.delete_artifacts(everything=True)
        after = client.cache_stats()
    out: dict[str, Any] = asdict(after)
    if args.clear:
        out["deleted"] = len(deleted)
        out["freed_bytes"] = before.artifact_bytes + before.partial_bytes - after.artifact_bytes - after.partial_bytes
    if args.json:
        print_json(out)
        return 0
    if args.clear:
        print(f"deleted {len(deleted)} artifact(s), freed {out['freed_bytes'] / 2**20:.1f} MiB")
    print(f"{after.artifacts} artifact(s), {after.artifact_bytes / 2**20:.1f} MiB; {after.partials} unfinished "
          f"upload(s), {after.partial_bytes / 2**20:.1f} MiB; quota {after.quota_bytes / 2**20:.0f} MiB "
          f"(least recently used evicted: {after.evicted} so far); unfinished uploads expire after "
          f"{after.partial_expiry_s:.0f} s ({after.expired_partials} so far)")
    return 0


# ------------------------------------------------------------------------------------------ stop
def is_agent_process(pid: int) -> bool:
    """``pid`` runs an agent's ``serve``: ``nnf-agent serve``, ``python -m agent serve``/``agent.cli serve``."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return False
    if "serve" not in argv:
        return False
    before = argv[:argv.index("serve")]
    if any(Path(a).name == "nnf-agent" for a in before):
        return True
    return any(a == "-m" and i + 1 < len(before) and before[i + 1] in ("agent", "agent.cli")
               for i, a in enumerate(before))


def run_stop(args: argparse.Namespace) -> int:
    if not is_agent_process(args.pid):
        raise ConfigError(f"pid {args.pid} is not a running agent (`nnf-agent serve` or `python -m agent serve`); "
                          f"nothing stopped")
    os.kill(args.pid, signal.SIGTERM)
    end = time.monotonic() + 10
    while time.monotonic() < end and is_agent_process(args.pid):
        time.sleep(0.05)
        # reap it if it is our child (it is not when started by another nnf process)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(args.pid, os.WNOHANG)
    stopped = not is_agent_process(args.pid)
    if args.json:
        print_json({"pid": args.pid, "stopped": stopped})
    else:
        print(f"agent pid {args.pid} {'stopped' if stopped else 'did not stop within 10 s'}")
    return 0 if stopped else 1


# ------------------------------------------------------------------------------------------ profile-model
def run_profile(args: argparse.Namespace) -> int:
    from agent.runtimes import runtime_from_suffix, runtime_name
    from host.client import ProfileRequest, TensorSpec

    path = Path(args.artifact)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: profile-model takes an exported model file "
                          f"(.pt, .pt2, .onnx, .tflite); export a compact model first")
    if not path.is_file():
        raise ConfigError(f"artifact {path} does not exist")
    runtime = agent_runtime(args.runtime)
    if runtime is None:
        rt = runtime_from_suffix(path)
        if rt == 0:
            raise ConfigError(f"cannot tell the runtime from the suffix {path.suffix!r}: pass --runtime "
                              f"({', '.join(RUNTIME_NAMES)})")
        runtime = runtime_name(rt)
    inputs = [TensorSpec(parse_shape(s), args.input_dtype) for s in args.input_shape] or [
        TensorSpec(tuple(i["shape"]), str(i.get("dtype", "float32"))) for i in sidecar_inputs(path)]
    with client_from_args(args) as client:
        up = client.upload(path)
        req = ProfileRequest(artifact_sha256=up.sha256, runtime=runtime, device=args.target, inputs=inputs,
                             threads=args.threads, warmup_runs=args.warmup_runs, repeats=args.repeats,
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
