"""Agent overhead benchmark: what the agent adds to a run, and to a profiling round trip.

    python benchmarks/agent_overhead.py [--json] [--model resnet18] [--reps 5] [--cpu N] [--subnets 20]

**Latency** (``runtimes``): a ResNet-18-shaped model (``build_supernet('resnet18')`` with all gates on,
extracted to a static model) is exported as TorchScript (.pt) and ONNX (.onnx). A real agent is started as
a subprocess (``agent.launch``) and reached over gRPC on loopback. For each runtime, ``--reps`` rounds
alternate: (a) a plain in-process loop in this process (same runtime, 1 thread, pinned to the same CPU,
same warm-up/repeat/min-time settings, ``perf_counter_ns`` around each run) and (b) an agent profile (a
child forked from the runtime's zygote). Interleaving makes slow drift hit both alike. Reported per
runtime: the median of the agent's per-profile medians, the same for in-process, overhead_ratio = agent /
in-process, repeat_spread = (max - min) / median of the agent's medians. upload_mb_per_s: the ONNX
artifact uploaded to the agent (deleted first), median of 3.

**Round trip** (``round_trip``): ``--subnets`` random subnets of ``resnet_numvqa`` (the campaign's own
sampler and builder, TorchScript) are profiled with the campaign's settings (5 warm-ups, >= 30 runs and
>= 0.5 s) on two agents side by side: the default one (a zygote per runtime forks a child per request)
and one started with ``--isolation process`` (a fresh Python process per request, the earlier method).
Each subnet is measured on both, in alternating order; each agent answered one profile first (the zygote
imports torch then). overhead = the client's wall time of the Profile call minus the worker's own load +
warm-up + timed runs (``load_time_ms``, ``warmup_time_s``, ``measure_time_s``): process start, import,
validation, re-hash, fork, result transfer. peak_ratio = the fork agent's ``peak_bytes`` / the fresh
process's, per subnet.

With --json the last line is one JSON object:
{"runtimes": {"<runtime>": {"agent_median_us", "inprocess_median_us", "overhead_ratio", "repeat_spread", ...}},
 "upload_mb_per_s": float,
 "round_trip": {"model", "subnets", "overhead_s_median", "overhead_s_fresh_process", "round_trip_s_median",
                "round_trip_s_fresh_process", "peak_ratio_vs_fresh_process", "peak_ratio_min", "peak_ratio_max",
                "latency_ratio_vs_fresh_process"}}
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _util
import torch

from agent import sysinfo
from agent.launch import LocalAgent, start_local_agent
from host.client import AgentClient, ProfileRequest, TensorSpec
from host.extraction import extract
from host.supernets import build_supernet


def build_model(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    net = build_supernet(name).eval()
    gates = [torch.ones(layer.modules) for layer in net.gate_layout().layers]
    compact = extract(net, gates).eval()
    return compact, (1, *net.input_shape)


def export(model: torch.nn.Module, shape: tuple[int, ...], out: Path) -> dict[str, Path]:
    x = torch.randn(*shape)
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
        traced.save(str(out / "model.pt"))
        paths["torchscript"] = out / "model.pt"
        torch.onnx.export(model, (x,), str(out / "model.onnx"), dynamo=False)
        paths["onnxruntime"] = out / "model.onnx"
    return paths


def inprocess_runner(runtime: str, path: Path, shape: tuple[int, ...]):
    import numpy as np

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if runtime == "torchscript":
        m = torch.jit.load(str(path))
        m.eval()
        t = torch.from_numpy(x)

        def run() -> None:
            with torch.inference_mode():
                m(t)
        return run
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}

    def run() -> None:
        sess.run(None, feed)
    return run


def time_inprocess(run, warmup: int, repeats: int, min_time_s: float) -> tuple[float, float]:
    """(median wall us, median thread-CPU us) of a plain loop."""
    for _ in range(warmup):
        run()
    samples, cpu = [], []
    gc.collect()
    gc.disable()
    try:
        end = time.perf_counter_ns() + int(min_time_s * 1e9)
        while True:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            run()
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            samples.append(t1 - t0)
            cpu.append(c1 - c0)
            if len(samples) >= repeats and t1 >= end:
                break
    finally:
        gc.enable()
    return statistics.median(samples) / 1e3, statistics.median(cpu) / 1e3


def start_agent(tmp: Path, name: str, nice: int | None, *extra: str) -> LocalAgent:
    args = ["--worker-nice", str(nice) if nice is not None else "inherit", "--log-level", "WARNING", *extra]
    return start_local_agent(cache_dir=tmp / name / "cache", state_dir=tmp / name / "state", extra_args=args,
                             log_path=tmp / f"{name}.log")


def round_trip(tmp: Path, nice: int | None, n: int, seed: int, cpu: int) -> dict:
    """The same ``n`` resnet_numvqa subnets profiled on a fork agent and a fresh-process agent, side by side."""
    from host.profiling.build import ExtractingBuilder
    from host.profiling.plan import CampaignPlan, MeasureSettings, sample_gates

    torch.manual_seed(seed)
    net = build_supernet("resnet_numvqa").eval()
    layout = net.gate_layout()
    settings = MeasureSettings()  # the campaign's defaults: 5 warm-ups, >= 30 runs, >= 0.5 s
    plan = CampaignPlan(backbone="resnet_numvqa", layout_fingerprint=layout.fingerprint(), runtime="torchscript",
                        input_shape=tuple(net.input_shape), samples=n, seed=seed, measure=settings)
    builder = ExtractingBuilder(net, "torchscript")
    blobs = [builder(sample_gates(plan, layout, i)).data for i in range(n)]
    shape = (1, *net.input_shape)
    agents = {"fork": start_agent(tmp, "fork", nice), "process": start_agent(tmp, "process", nice,
                                                                              "--isolation", "process")}
    rows: dict[str, list[dict]] = {"fork": [], "process": []}
    try:
        clients = {k: AgentClient(a.address, token=a.token) for k, a in agents.items()}
        shas = {k: [c.upload(b).sha256 for b in blobs] for k, c in clients.items()}

        def profile(kind: str, sha: str) -> dict:
            req = ProfileRequest(sha, runtime="torchscript", inputs=[TensorSpec(shape)], threads=1, cpu_affinity=[cpu],
                                 warmup_runs=settings.warmup_runs, repeats=settings.repeats,
                                 min_time_s=settings.min_time_s, deadline_s=settings.deadline_s)
            t0 = time.perf_counter()
            r = clients[kind].profile(req)
            wall = time.perf_counter() - t0
            inner = r.load_time_ms / 1e3 + r.warmup_time_s + r.measure_time_s
            return {"wall_s": wall, "overhead_s": wall - inner, "peak_bytes": r.peak_bytes,
                    "median_us": r.median_latency_us, "isolation": r.context.extra.get("isolation", "")}

        for kind in agents:  # the first request of the fork agent starts its zygote (imports torch): not counted
            profile(kind, shas[kind][0])
        for i in range(n):
            order = ("fork", "process") if i % 2 == 0 else ("process", "fork")
            for kind in order:
                rows[kind].append(profile(kind, shas[kind][i]))
            f, p = rows["fork"][-1], rows["process"][-1]
            print(f"subnet {i:2d}: fork round trip {f['wall_s']:.3f} s (overhead {f['overhead_s']:.3f}), "
                  f"fresh process {p['wall_s']:.3f} s (overhead {p['overhead_s']:.3f}); peak "
                  f"{f['peak_bytes'] / 2**20:.2f} / {p['peak_bytes'] / 2**20:.2f} MiB; median "
                  f"{f['median_us'] / 1e3:.3f} / {p['median_us'] / 1e3:.3f} ms", file=sys.stderr)
        for c in clients.values():
            c.close()
    finally:
        for a in agents.values():
            a.stop()
    assert all(r["isolation"] == k for k in rows for r in rows[k]), "an agent measured with the wrong isolation"
    peak_ratios = [f["peak_bytes"] / p["peak_bytes"] for f, p in zip(rows["fork"], rows["process"], strict=True)]
    lat_ratios = [f["median_us"] / p["median_us"] for f, p in zip(rows["fork"], rows["process"], strict=True)]
    med = statistics.median
    return {
        "model": "resnet_numvqa", "runtime": "torchscript", "subnets": n, "cpu": cpu,
        "settings": {"warmup": settings.warmup_runs, "repeats": settings.repeats, "min_time_s": settings.min_time_s},
        "overhead_s_median": round(med(r["overhead_s"] for r in rows["fork"]), 4),
        "overhead_s_fresh_process": round(med(r["overhead_s"] for r in rows["process"]), 4),
        "round_trip_s_median": round(med(r["wall_s"] for r in rows["fork"]), 4),
        "round_trip_s_fresh_process": round(med(r["wall_s"] for r in rows["process"]), 4),
        "peak_ratio_vs_fresh_process": round(med(peak_ratios), 4),
        "peak_ratio_min": round(min(peak_ratios), 4), "peak_ratio_max": round(max(peak_ratios), 4),
        "latency_ratio_vs_fresh_process": round(med(lat_ratios), 4),
        "peak_mib_fork": [round(r["peak_bytes"] / 2**20, 2) for r in rows["fork"]],
        "peak_mib_fresh_process": [round(r["peak_bytes"] / 2**20, 2) for r in rows["process"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", help="supernet config (default resnet18)")
    ap.add_argument("--reps", type=int, default=5, help="profiles per runtime (default 5)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--min-time-s", type=float, default=1.0)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin both sides to (default: the last allowed)")
    ap.add_argument("--runtimes", default="torchscript,onnxruntime")
    ap.add_argument("--nice", type=int, default=-20,
                    help="nice value (process and autogroup) for the agent's workers (--worker-nice) and for the "
                         "in-process loop alike (default -20, the agent's default; needs root/CAP_SYS_NICE)")
    ap.add_argument("--no-nice", dest="nice", action="store_const", const=None,
                    help="leave priorities alone on both sides")
    ap.add_argument("--subnets", type=int, default=20, help="resnet_numvqa subnets of the round-trip part (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-latency", action="store_true", help="skip the latency part (only the round trip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cpu = args.cpu if args.cpu is not None else sorted(os.sched_getaffinity(0))[-1]
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="nnf-agent-bench-"))
    result: dict = {"cpu": cpu, "nice": args.nice}
    try:
        if not args.no_latency:
            result.update(latency(args, tmp, cpu))
        if args.subnets > 0:
            rt = round_trip(tmp, args.nice, args.subnets, args.seed, cpu)
            result["round_trip"] = rt
            print(f"round trip on {rt['subnets']} resnet_numvqa subnets (TorchScript): overhead median "
                  f"{rt['overhead_s_median']:.3f} s forked vs {rt['overhead_s_fresh_process']:.3f} s fresh process "
                  f"(round trip {rt['round_trip_s_median']:.3f} vs {rt['round_trip_s_fresh_process']:.3f} s); "
                  f"peak ratio {rt['peak_ratio_vs_fresh_process']:.3f} (min {rt['peak_ratio_min']:.3f}, max "
                  f"{rt['peak_ratio_max']:.3f}); latency ratio {rt['latency_ratio_vs_fresh_process']:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _util.emit(result, args.json)
    return 0


def latency(args: argparse.Namespace, tmp: Path, cpu: int) -> dict:
    """Agent-reported latency vs. the same model timed in this process, interleaved."""
    runtimes = [r for r in args.runtimes.split(",") if r]
    model, shape = build_model(args.model)
    paths = export(model, shape, tmp)
    del model
    agent = start_agent(tmp, "latency", args.nice)
    agent_medians: dict[str, list[float]] = {r: [] for r in runtimes}
    inproc_medians: dict[str, list[float]] = {r: [] for r in runtimes}
    agent_cpu: dict[str, list[float]] = {r: [] for r in runtimes}
    inproc_cpu: dict[str, list[float]] = {r: [] for r in runtimes}
    waits: dict[str, list[float]] = {r: [] for r in runtimes}
    try:
        with AgentClient(agent.address, token=agent.token) as client:
            onnx_path = paths["onnxruntime"]
            onnx_size = onnx_path.stat().st_size
            rates = []
            for _ in range(3):
                client.delete_artifacts(everything=True)
                t0 = time.perf_counter()
                up = client.upload(onnx_path)
                rates.append(up.bytes_sent / 2**20 / (time.perf_counter() - t0))
            shas = {r: client.upload(paths[r]).sha256 for r in runtimes}
            runners = {r: inprocess_runner(r, paths[r], shape) for r in runtimes}
            own_affinity = os.sched_getaffinity(0)
            own_nice = os.getpriority(os.PRIO_PROCESS, 0)
            own_group_nice = sysinfo.autogroup_nice()
            for rep in range(args.reps):
                for r in runtimes:
                    os.sched_setaffinity(0, {cpu})
                    if args.nice is not None:  # the same priority the agent gives its workers
                        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # this thread only (Linux)
                        sysinfo.set_autogroup_nice(args.nice)
                    wall, cpu_us = time_inprocess(runners[r], args.warmup, args.repeats, args.min_time_s)
                    if args.nice is not None:
                        os.setpriority(os.PRIO_PROCESS, 0, own_nice)
                        if own_group_nice is not None:
                            sysinfo.set_autogroup_nice(own_group_nice)
                    inproc_medians[r].append(wall)
                    inproc_cpu[r].append(cpu_us)
                    os.sched_setaffinity(0, own_affinity)
                    res = client.profile(ProfileRequest(
                        shas[r], runtime=r, inputs=[TensorSpec(shape)], threads=1, cpu_affinity=[cpu],
                        warmup_runs=args.warmup, repeats=args.repeats, min_time_s=args.min_time_s))
                    agent_medians[r].append(res.median_latency_us)
                    agent_cpu[r].append(res.median_thread_cpu_us)
                    waits[r].append(res.context.runqueue_wait_fraction)
                    print(f"rep {rep} {r:12s} in-process {wall / 1e3:8.2f} ms (cpu {cpu_us / 1e3:7.2f})   "
                          f"agent {res.median_latency_us / 1e3:8.2f} ms (cpu {res.median_thread_cpu_us / 1e3:7.2f}) "
                          f"({len(res.samples_ns)} runs, runqueue wait {res.context.runqueue_wait_fraction:.0%}, "
                          f"peak {res.peak_bytes / 2**20:.1f} MiB)", file=sys.stderr)
    finally:
        agent.stop()

    result: dict = {"runtimes": {}, "upload_mb_per_s": round(statistics.median(rates), 2),
                    "model": args.model, "reps": args.reps,
                    "settings": {"warmup": args.warmup, "repeats": args.repeats, "min_time_s": args.min_time_s}}

    def spread(v: list[float]) -> float:
        return round((max(v) - min(v)) / statistics.median(v), 4)

    print(f"{'runtime':12s} {'agent ms':>9s} {'in-proc ms':>10s} {'overhead':>9s} {'spread':>7s} "
          f"{'in-proc spread':>14s} | {'cpu overhead':>12s} {'cpu spread':>10s} {'runq wait':>9s}")
    for r in runtimes:
        a, i = agent_medians[r], inproc_medians[r]
        am, im = statistics.median(a), statistics.median(i)
        ac, ic = statistics.median(agent_cpu[r]), statistics.median(inproc_cpu[r])
        row = {"agent_median_us": round(am, 2), "inprocess_median_us": round(im, 2),
               "overhead_ratio": round(am / im, 4), "repeat_spread": spread(a),
               "inprocess_repeat_spread": spread(i),
               "agent_medians_us": [round(v, 1) for v in a], "inprocess_medians_us": [round(v, 1) for v in i],
               "agent_thread_cpu_median_us": round(ac, 2), "inprocess_thread_cpu_median_us": round(ic, 2),
               "cpu_overhead_ratio": round(ac / ic, 4), "cpu_repeat_spread": spread(agent_cpu[r]),
               "agent_runqueue_wait_fraction": [round(w, 3) for w in waits[r]]}
        result["runtimes"][r] = row
        print(f"{r:12s} {am / 1e3:9.2f} {im / 1e3:10.2f} {row['overhead_ratio']:9.3f} {row['repeat_spread']:7.3f} "
              f"{row['inprocess_repeat_spread']:14.3f} | {row['cpu_overhead_ratio']:12.3f} "
              f"{row['cpu_repeat_spread']:10.3f} {statistics.median(waits[r]):9.0%}")
    print(f"upload: {result['upload_mb_per_s']:.1f} MiB/s ({onnx_size / 2**20:.1f} MiB ONNX artifact)")
    return result


if __name__ == "__main__":
    sys.exit(main())
