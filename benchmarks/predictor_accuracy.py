"""Predictor accuracy vs. number of profiled subnets on the local CPU agent (the paper's Fig. 13).

    python benchmarks/predictor_accuracy.py [--backbone resnet_numvqa] [--samples 1100] [--sizes 100,300,1000,2000]
        [--test 100] [--stat p90] [--mix ...] [--store PATH] [--agent HOST:PORT] [--no-measure] [--max-minutes M]
        [--json]

1. Campaign: measures subnets of the supernet (the generator-aware mix by default: uniform random gates,
   stratified per-layer fractions and the shipped generator's own models) on an agent (a local one is
   started when no --agent is given) into a durable store; re-running resumes, a larger --samples grows it;
   ``--no-measure`` only fits what the store holds.
2. For every n in --sizes that the store can serve, fits the paper's linear latency model and the improved
   one, and the memory model, on the first n training subnets, and scores them on the same held-out
   subnets (the last --test measured subnets by index, never used for fitting; they carry the mix, so
   generated models are among them: their accuracy is also reported on its own). The latency statistic
   (``--stat``, default p90: what budgets are held to) is fixed before the run.
3. Prints a table; with --json the last line is one JSON object; writes the accuracy-vs-samples PNG.

host_seconds_per_subnet = extraction + export + bookkeeping; profile_seconds_per_subnet = agent round trip
(upload when needed, worker, load, warm-up, timed runs); profile_overhead_seconds_per_subnet = the round trip
minus the model's own load + warm-up (warm-up runs x mean run) + timed runs: what the measuring machinery
costs; campaign_minutes_per_400_subnets = wall time of this run's measuring, per 400 samples (reference
re-measurements included); bytes_per_sample = artifact bytes uploaded per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_local_agent(cache_dir: Path) -> tuple[subprocess.Popen, str]:
    from agent.launch import LaunchError
    from agent.launch import start_local_agent as launch

    try:  # this benchmark's own loopback agent, without a token (explicit --no-auth)
        agent = launch(cache_dir=cache_dir / "cache", no_auth=True)
    except LaunchError as exc:
        raise SystemExit(f"local agent did not start: {exc}") from None
    return agent.proc, agent.address


def stop_agent(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(args: argparse.Namespace, store_path: Path) -> dict:
    """Measure what the store still lacks; returns this run's wall time and job counts."""
    import torch

    from host.commands.profile import DEFAULT_MIX_WITH_GENERATOR, load_generator
    from host.profiling.build import ExtractingBuilder
    from host.profiling.measurers import AgentMeasurer
    from host.profiling.plan import CampaignPlan, MeasureSettings, SampleMix, schedule
    from host.profiling.runner import CampaignRunner, DeviceTarget
    from host.profiling.store import CampaignStore
    from host.supernets import build_supernet

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    net = build_supernet(args.backbone)
    layout = net.gate_layout()
    mix = SampleMix.parse(args.mix or DEFAULT_MIX_WITH_GENERATOR)
    plan = CampaignPlan(backbone=args.backbone, layout_fingerprint=layout.fingerprint(), runtime="torchscript",
                        input_shape=tuple(net.input_shape), samples=args.samples, seed=args.seed, mix=mix,
                        reference_every=args.reference_every,
                        measure=MeasureSettings(clock=args.clock, min_time_s=args.min_time_s))
    with CampaignStore(store_path) as store:
        plan, _ = store.bind_plan(plan, layout)
        left = len(schedule(plan)) - len(store.done_keys())
    if left == 0:
        return {}
    generator = load_generator(args.backbone, layout, None, None) if mix.generated > 0 else None
    agent_proc = None
    addr = args.agent
    tmp = tempfile.TemporaryDirectory(prefix="nnf-bench-agent-")
    t0 = time.perf_counter()
    measured = {"sample": 0, "ref": 0}
    try:
        if addr is None:
            agent_proc, addr = start_local_agent(Path(tmp.name))
        deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
        runner = CampaignRunner(plan, layout, ExtractingBuilder(net), generator=generator, progress=not args.json)
        with CampaignStore(store_path) as store, AgentMeasurer(addr) as measurer:
            before = {k: len(store.rows(k)) for k in measured}
            t0 = time.perf_counter()
            while left > 0 and (deadline is None or time.monotonic() < deadline):
                chunk = min(left, 25)
                runner.run([DeviceTarget("local-cpu", measurer, store, local=True)], stop_after=chunk)
                left = len(schedule(plan)) - len(store.done_keys())
            measured = {k: len(store.rows(k)) - before[k] for k in measured}
    finally:
        seconds = time.perf_counter() - t0
        if agent_proc is not None:
            stop_agent(agent_proc)
        tmp.cleanup()
    return {"seconds": seconds, "samples": measured["sample"], "refs": measured["ref"]}


def evaluate(args: argparse.Namespace, store_path: Path) -> dict:
    from host.profiling.data import load_samples, row_latency
    from host.profiling.device_profile import calibrated_margin, fit_models, heldout_arrays
    from host.profiling.store import CampaignStore

    with CampaignStore(store_path) as store:
        layout = store.layout()
        rows = store.rows("sample") + store.rows("ref")
        info = store.get_meta("device_info") or {}
        data = {stat: load_samples(store, stat=stat) for stat in sorted({args.stat, "median"})}
    tdata = {}
    test_passes = None
    if args.test_store:
        with CampaignStore(args.test_store) as ts:
            tdata = {stat: load_samples(ts, stat=stat) for stat in data}
            test_passes = ts.plan().passes
    sets = {stat: heldout_arrays(data[stat], tdata.get(stat), n_test=args.test) for stat in data}
    d = data[args.stat]
    n_all = len(d.indices)
    fs = sets[args.stat]
    sizes = [n for n in args.sizes if n <= len(fs.train)]
    if not sizes or sizes[-1] < len(fs.train) and len(fs.train) not in args.sizes:
        sizes.append(len(fs.train))  # also report the largest fit the store allows
    out: dict = {"samples": {}, "baseline_linear": {}, "median_statistic": {}, "warnings": fs.warnings}
    from dataclasses import replace

    for n in sizes:
        sub = replace(fs, train=fs.train[:n])
        models, _, acc = fit_models(layout, sub)
        imp, lin, mem = acc["latency"]["improved"], acc["latency"]["linear"], acc["memory"]
        margin = calibrated_margin(models["improved"].predict(fs.counts[fs.test]), fs.latency_us[fs.test])
        gen = imp["by_source"].get("generated") or {}
        out["samples"][str(n)] = {"latency_within_10pct": imp["within_10pct"], "latency_within_5pct": imp["within_5pct"],
                                  "latency_mape": imp["mape"], "memory_within_5pct": mem["within_5pct"],
                                  "memory_mape": mem["mape"], "margin": margin["value"],
                                  "generated_latency_within_10pct": gen.get("within_10pct"),
                                  "generated_latency_mape": gen.get("mape"), "generated_heldout": gen.get("n", 0)}
        out["baseline_linear"][str(n)] = {"latency_within_10pct": lin["within_10pct"],
                                          "latency_within_5pct": lin["within_5pct"], "latency_mape": lin["mape"],
                                          "memory_within_5pct": mem["baseline"]["within_5pct"],
                                          "memory_mape": mem["baseline"]["mape"]}
        if args.stat != "median":
            _, _, accm = fit_models(layout, replace(sets["median"], train=sets["median"].train[:n]))
            out["median_statistic"][str(n)] = {
                v: {"latency_within_10pct": a["within_10pct"], "latency_mape": a["mape"]}
                for v, a in accm["latency"].items()
            }
    samples = [r for r in rows if r["kind"] == "sample"]
    overhead = []
    for r in rows:
        ctx = json.loads(r["context"] or "{}")
        if r["profile_seconds"] is None or "load_time_ms" not in ctx or "measure_time_s" not in ctx:
            continue
        warm = float(ctx.get("warmup_runs", 0)) * float(r["latency_mean_us"] or 0) / 1e6
        overhead.append(r["profile_seconds"] - ctx["load_time_ms"] / 1000 - warm - ctx["measure_time_s"])
    # the noise floor: how far one measurement of the same subnet lands from that subnet's median
    refs_by: dict[int, list[float]] = {}
    for r in rows:
        if r["kind"] == "ref":
            refs_by.setdefault(r["idx"], []).append(row_latency(r, args.stat))
    rel = [abs(v / np.median(vs) - 1) for vs in refs_by.values() if len(vs) >= 3 for v in vs]
    noise = {"measurements": len(rel), "within_10pct": float(np.mean(np.array(rel) <= 0.10)) if rel else None,
             "within_5pct": float(np.mean(np.array(rel) <= 0.05)) if rel else None,
             "mape": float(np.mean(rel)) if rel else None,
             "what": "each re-measurement of the reference subnets vs. that subnet's median (same statistic)"}
    mix: dict[str, int] = {}
    for r in samples:
        mix[r["source"]] = mix.get(r["source"], 0) + 1
    out.update({
        "device": f"local-cpu ({info.get('cpu_model', '?')}, {info.get('logical_cores', '?')} cores, shared)",
        "backbone": args.backbone,
        "statistic": args.stat,
        "test_subnets": int(len(fs.test)),
        "test_mix": fs.mix(fs.test),
        "train_mix": fs.mix(fs.train),
        "mix_measured": mix,
        "test_truth": (f"median of {test_passes} passes (separate campaign {args.test_store})" if args.test_store
                       else "one pass (last subnets by index of the campaign)"),
        "samples_measured": n_all,
        "noise_floor": noise,
        "profile_seconds_per_subnet": float(np.mean([r["profile_seconds"] for r in rows])),
        "profile_overhead_seconds_per_subnet": float(np.mean(overhead)) if overhead else None,
        "host_seconds_per_subnet": float(np.mean([r["host_seconds"] for r in rows])),
        "host_seconds_per_subnet_median": float(np.median([r["host_seconds"] for r in rows])),
        "bytes_per_sample": float(np.mean([r["bytes_sent"] or 0 for r in rows])),
        "artifact_bytes_mean": float(np.mean([r["artifact_bytes"] for r in samples])),
        "latency_ms_range": [float(d.latency_us.min() / 1000), float(d.latency_us.max() / 1000)],
    })
    return out


def ablation(args: argparse.Namespace, store_path: Path) -> dict:
    """Improved latency model with one ingredient removed, plus drift correction, on all training subnets."""
    from dataclasses import replace

    from host.profiling.data import load_samples
    from host.profiling.device_profile import heldout_arrays
    from host.profiling.predictor import LatencyModel, LatencySchema, accuracy
    from host.profiling.store import CampaignStore

    out = {}
    with CampaignStore(store_path) as store:
        layout = store.layout()
        for dc in (True, False):
            main = load_samples(store, stat=args.stat, correct_drift=dc)
            test = None
            if args.test_store:
                with CampaignStore(args.test_store) as ts:
                    test = load_samples(ts, stat=args.stat, correct_drift=False)
            fs = heldout_arrays(main, test, n_test=args.test)
            c, lat, tr, te = fs.counts, fs.latency_us, fs.train, fs.test
            base = LatencySchema.named("improved")
            schemas = {"improved": base} if dc else {
                "improved": base, "without nonzero terms": replace(base, nonzero=False),
                "without channel padding": replace(base, simd=0), "absolute error": replace(base, relative=False),
                "linear (paper)": LatencySchema.named("linear")}
            for label, sch in schemas.items():
                m = LatencyModel(layout, sch).fit(c[tr], lat[tr])
                a = accuracy(m.predict(c[te]), lat[te], 0.10)
                out[label + (" + drift correction" if dc else "")] = {"latency_within_10pct": a["within"],
                                                                      "latency_mape": a["mape"]}
    return out


def time_host_work(args: argparse.Namespace, n: int) -> dict:
    """Host work per subnet with the current builder, in isolation: gates + extraction + export + store commit."""
    from dataclasses import replace

    import torch

    from host.profiling.build import ExtractingBuilder
    from host.profiling.plan import Job, SampleMix, sample_gates
    from host.profiling.store import CampaignStore, MeasurementRow
    from host.supernets import build_supernet

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    net = build_supernet(args.backbone)
    layout = net.gate_layout()
    with CampaignStore(args.store_path) as src:
        plan = replace(src.plan(), mix=SampleMix())  # uniform gates: host work does not depend on the source
    builder = ExtractingBuilder(net, "torchscript", constant_weights=args.constant_weights)
    times = []
    with tempfile.TemporaryDirectory() as tmp, CampaignStore(Path(tmp) / "t.sqlite") as store:
        for i in range(n + 2):
            t0 = time.perf_counter()
            gates = sample_gates(plan, layout, i)
            built = builder(gates)
            store.record(Job("sample", 0, i, i), MeasurementRow(
                counts=json.dumps([int(g.sum()) for g in gates]), gates_sha256="x", source="uniform",
                latency_median_us=1.0, latency_min_us=None, latency_mean_us=None, latency_p90_us=None,
                latency_std_us=None, runs=None, peak_bytes=None, peak_method=None, param_bytes=built.param_bytes,
                peak_activation_bytes=built.peak_activation_bytes, macs=None, artifact_sha256=built.artifact_sha256,
                artifact_bytes=len(built.data), bytes_sent=None, wire_bytes=None, host_seconds=None,
                profile_seconds=None, measured_unix=time.time(), context=None, samples_us=None))
            if i >= 2:  # the first two pay one-time costs (imports, allocator warm-up)
                times.append(time.perf_counter() - t0)
    return {"mean": float(np.mean(times)), "median": float(np.median(times)), "n": n}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in result["samples"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ns, [result["samples"][str(n)]["latency_within_10pct"] for n in ns], "o-", label="latency ±10 % (improved)")
    ax.plot(ns, [result["baseline_linear"][str(n)]["latency_within_10pct"] for n in ns], "s--", label="latency ±10 % (linear)")
    ax.plot(ns, [result["samples"][str(n)]["memory_within_5pct"] for n in ns], "^-", label="memory ±5 %")
    ax.plot(ns, [result["baseline_linear"][str(n)]["memory_within_5pct"] for n in ns], "v:",
            label="memory ±5 % (bias+params+act)")
    ax.set_xscale("log")
    ax.set_xlabel("profiled subnets used for fitting")
    ax.set_ylabel(f"share of {result['test_subnets']} held-out subnets")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{result['backbone']} on {result['device'].split(' (')[0]} ({result['statistic']} latency)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet_numvqa")
    p.add_argument("--samples", type=int, default=2100, help="campaign size (train sizes + test)")
    p.add_argument("--sizes", default="100,300,1000,2000")
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--stat", default="p90", choices=["median", "min", "p10", "p25", "mean", "p50", "p90", "p99"],
                   help="latency statistic of each subnet's runs (default p90, what budgets are held to); fix it "
                        "before looking at results")
    p.add_argument("--mix", default=None, help="sample mix of a new campaign (default: the generator-aware one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", default="wall", choices=["wall", "thread_cpu"], help="agent timing clock (see nnf profile)")
    p.add_argument("--reference-every", type=int, default=50)
    p.add_argument("--min-time-s", type=float, default=1.0, help="minimum timed seconds per subnet (as nnf profile)")
    p.add_argument("--test-store", default=None,
                   help="held-out subnets from this campaign (same seed; e.g. --passes 3: median-of-three truth)")
    p.add_argument("--store", default=None, help="campaign store (default: nnf-campaigns/local-cpu/<backbone>-torchscript.sqlite)")
    p.add_argument("--agent", default=None, help="use this agent instead of starting a local one")
    p.add_argument("--no-measure", action="store_true", help="fit what the store holds; measure nothing")
    p.add_argument("--max-minutes", type=float, default=None, help="stop measuring after this long (resumable)")
    p.add_argument("--host-timing", type=int, default=20,
                   help="also time the current builder's host work on this many subnets in isolation (0 = skip)")
    p.add_argument("--ablation", action="store_true", help="also fit the improved model without each ingredient")
    p.add_argument("--constant-weights", action="store_true", help="(host timing) build constant-weight artifacts")
    p.add_argument("--png", default=str(ROOT / "benchmarks" / "results" / "predictor_accuracy.png"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    store = Path(args.store) if args.store else Path(os.environ.get("NNF_CAMPAIGNS_DIR", "nnf-campaigns")) / "local-cpu" / f"{args.backbone}-torchscript.sqlite"
    run = measure(args, store) if not args.no_measure else {}
    result = evaluate(args, store)
    if run.get("samples"):
        result["campaign_run"] = run
        result["campaign_minutes_per_400_subnets"] = run["seconds"] / run["samples"] * 400 / 60
    args.store_path = store
    if args.ablation:
        result["ablation"] = ablation(args, store)
        for k, v in result["ablation"].items():
            print(f"ablation ({len(result['samples']) and max(result['samples'], key=int)} train): {k:40s} "
                  f"±10% {v['latency_within_10pct']:.2f}  MAPE {v['latency_mape']:.4f}")
    if args.host_timing > 0:
        iso = time_host_work(args, args.host_timing)
        result["host_seconds_per_subnet_isolated"] = iso["mean"]
    plot(result, Path(args.png))
    result["png"] = str(args.png)
    print(f"{'n':>6} | {'lat ±10% imp':>12} {'lat ±10% lin':>12} {'MAPE imp':>9} {'MAPE lin':>9} | {'mem ±5%':>8} "
          f"{'mem ±5% base':>12}")
    for n, r in result["samples"].items():
        b = result["baseline_linear"][n]
        print(f"{n:>6} | {r['latency_within_10pct']:12.3f} {b['latency_within_10pct']:12.3f} {r['latency_mape']:9.4f} "
              f"{b['latency_mape']:9.4f} | {r['memory_within_5pct']:8.3f} {b['memory_within_5pct']:12.3f}")
    if "host_seconds_per_subnet_isolated" in result:
        print(f"host s/subnet with the current builder, in isolation: {result['host_seconds_per_subnet_isolated']:.3f}")
    print(f"profile s/subnet {result['profile_seconds_per_subnet']:.2f}  host s/subnet {result['host_seconds_per_subnet']:.3f}  "
          f"bytes/sample {result['bytes_per_sample']:,.0f}  ({result['samples_measured']} subnets measured, "
          f"{result['test_subnets']} held out, statistic {result['statistic']})")
    import _util  # benchmarks/ is on sys.path when run as a script

    _util.emit(result, args.json)  # with --json: also benchmarks/results/predictor_accuracy.json
    return 0


if __name__ == "__main__":
    sys.exit(main())
