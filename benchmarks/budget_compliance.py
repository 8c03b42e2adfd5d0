"""Do generated models meet their budgets on the device? Predicted search vs. measurement, on the local agent.

    python benchmarks/budget_compliance.py [--device NAME | --fresh N] [--agent HOST:PORT] [--tasks 4]
        [--percentile 90] [--repeats 3] [--backbone resnet_numvqa --space numvqa] [--json]

1. Profile: ``--fresh N`` runs a campaign of N subnets (the generator-aware mix: uniform, stratified and the
   shipped generator's models) on the agent and fits it into a temporary profile; otherwise the device profile
   ``--device`` is used as it is (its fit date is reported).
2. Drift check: the profile's reference subnets are re-measured (``nnf devices fingerprint``); a uniform
   change rescales the predictions as ``nnf generate`` would; a refusal is reported and the profile used as is.
3. Scenarios: for each of ``--tasks`` tasks (seen tasks spread over the space, plus an unseen one), latency
   budgets at 20 / 50 / 80 % and memory budgets at 30 / 70 % of the range the task's generated models span
   (as predicted): 5 per task.
4. Each scenario: the predicted search (prediction + calibrated margin held to the budget, as
   ``nnf generate --device``) picks a model; it is measured ``--repeats`` times on the agent (the runs pooled,
   the budget's percentile taken; memory: the largest peak); a live search (bisection, every probe measured)
   finds the largest limit that fits when measured.

Last-line keys (``--json``): ``scenarios``; ``latency_compliance`` / ``memory_compliance`` (share of generated
models whose measurement meets their budget); ``predictor_on_generated`` (``latency_within_10pct``,
``latency_mape``, ``memory_within_5pct`` of the best-estimate predictions, on the generated models measured
here); ``median_regret_grid_steps`` (live limit index minus predicted limit index, median over scenarios);
``drift_check``; the profile used and its margins.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def fresh_profile(args: argparse.Namespace, addr: str, workdir: Path) -> tuple[str, Path]:
    """Run a campaign of ``args.fresh`` subnets on the agent, fit it, return (device id, profiles dir)."""
    from host.commands.profile import DEFAULT_MIX_WITH_GENERATOR, load_generator
    from host.profiling.build import ExtractingBuilder
    from host.profiling.device_profile import fit_store, write_profile_entry
    from host.profiling.measurers import AgentMeasurer
    from host.profiling.plan import CampaignPlan, MeasureSettings, SampleMix
    from host.profiling.runner import CampaignRunner, DeviceTarget
    from host.profiling.store import CampaignStore
    from host.supernets import build_supernet

    torch.manual_seed(0)
    net = build_supernet(args.backbone)
    layout = net.gate_layout()
    plan = CampaignPlan(backbone=args.backbone, layout_fingerprint=layout.fingerprint(), runtime="torchscript",
                        input_shape=tuple(net.input_shape), samples=args.fresh, seed=args.seed,
                        mix=SampleMix.parse(DEFAULT_MIX_WITH_GENERATOR), measure=MeasureSettings())
    store_path = Path(args.store) if args.store else workdir / "campaign.sqlite"
    generator = load_generator(args.backbone, layout, None, None)
    with CampaignStore(store_path) as store, AgentMeasurer(addr) as m:
        CampaignRunner(plan, layout, ExtractingBuilder(net), generator=generator, progress=not args.json).run(
            [DeviceTarget("bench-local", m, store, local=True)])
        entry = fit_store(store, test=args.test)
        info = store.get_meta("device_info") or {}
    profiles = workdir / "profiles"
    write_profile_entry("bench-local", info, entry, profiles)
    return "bench-local", profiles


class Bench:
    """The scenarios' shared state: the device's predictor (after the drift check), the generator's gates, and
    every model measured on the agent (chosen models pooled over repeats, live-search probes once each)."""

    def __init__(self, predictor, assemble, candidates, pct: str, device: str, repeats: int) -> None:
        self.pred = predictor
        self.assemble = assemble
        self.cm = candidates
        self.pct = pct
        self.device = device
        self.repeats = repeats
        self.chosen: dict[str, dict] = {}  # gates hash -> pooled runs and peaks of a chosen model
        self.probes: dict[str, tuple[list[torch.Tensor], float, float]] = {}  # live probes: (gates, lat_us, bytes)

    def probe(self, gates: list[torch.Tensor]) -> tuple[float, float]:
        from host.profiling.build import gates_sha256

        lat_us, mem_b = self.cm(gates)
        self.probes[gates_sha256(gates)] = ([g.clone() for g in gates], lat_us, mem_b)
        return lat_us, mem_b

    def measure_chosen(self, gates: list[torch.Tensor]) -> tuple[float, float]:
        """(latency_us at the percentile of the pooled runs, largest peak bytes) over ``repeats`` measurements."""
        from host.profiling.build import gates_sha256
        from host.profiling.data import runs_latency

        have = self.chosen.setdefault(gates_sha256(gates), {"runs": [], "peaks": []})
        while len(have["peaks"]) < self.repeats:
            meas = self.cm.measure(gates)
            have["runs"].extend(meas.samples_us)
            have["peaks"].append(meas.peak_bytes)
        return runs_latency(have["runs"], self.pct), float(max(have["peaks"]))

    def budgets(self, task: str) -> list:
        """Latency budgets at 20/50/80 % and memory budgets at 30/70 % of the task's predicted range."""
        from host.profiling.budget import Budget, limit_grid

        lat, mem = self.pred(self.assemble(task, limit_grid()))
        lo_l, hi_l, lo_m, hi_m = float(lat.min()), float(lat.max()), float(mem.min()), float(mem.max())
        return ([Budget(latency_ms=(lo_l + f * (hi_l - lo_l)) / 1000) for f in (0.2, 0.5, 0.8)]
                + [Budget(memory_mb=(lo_m + f * (hi_m - lo_m)) / 1e6) for f in (0.3, 0.7)])

    def scenario(self, task: str, b, cache: dict) -> dict:
        from host.errors import SearchError
        from host.profiling.budget import batched_search, live_search

        row: dict = {"task": task, "latency_ms": b.latency_ms, "memory_mb": b.memory_mb}
        try:
            r = batched_search(self.assemble, task, self.pred.guarded(), b, device=self.device)
        except SearchError as exc:
            return {**row, "fit": False, "error": str(exc)}
        lat_m, mem_m = self.measure_chosen(r.gates)
        p_lat, p_mem = self.pred([g.reshape(1, -1) for g in r.gates])
        row.update({"fit": True, "limit": r.limit, "index": r.grid_index,
                    "predicted_ms": float(p_lat[0]) / 1000, "bound_ms": r.latency_us / 1000,
                    "predicted_mb": float(p_mem[0]) / 1e6, "measured_ms": lat_m / 1000, "measured_mb": mem_m / 1e6,
                    "latency_ok": b.latency_ms is None or lat_m <= b.latency_ms * 1000,
                    "memory_ok": b.memory_mb is None or mem_m <= b.memory_mb * 1e6})
        try:
            live = live_search(self.assemble, task, self.probe, b, start_index=r.grid_index, device=self.device,
                               cache=cache)
            row.update({"live_limit": live.limit, "live_index": live.grid_index,
                        "regret_steps": live.grid_index - r.grid_index})
        except SearchError:  # nothing fits when measured: the predicted answer is above the largest feasible one
            row.update({"live_limit": None, "live_index": -1, "regret_steps": -1 - r.grid_index})
        return row

    def predictor_on_generated(self, fits: list[dict]) -> dict:
        """Best-estimate accuracy on every generated model measured here (chosen ones and live probes)."""

        rel = [abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in fits]
        rel_m = [abs(r["predicted_mb"] - r["measured_mb"]) / r["measured_mb"] for r in fits]
        chosen = {"models": len(rel), **_shares(rel, rel_m)}
        extra = [v for k, v in self.probes.items() if k not in self.chosen]
        if extra:
            layers = len(extra[0][0])
            p_lat, p_mem = self.pred([torch.stack([g[i] for g, _, _ in extra]) for i in range(layers)])
            rel += [abs(p - t) / t for p, (_, t, _) in zip(p_lat.tolist(), extra, strict=True)]
            rel_m += [abs(p - t) / t for p, (_, _, t) in zip(p_mem.tolist(), extra, strict=True)]
        return {"models": len(rel), **_shares(rel, rel_m), "chosen_models": chosen,
                "truth": f"chosen models: {self.pct} of the pooled runs of {self.repeats} measurements (memory: their "
                         "largest peak); live-search probes: one measurement each"}


def _shares(rel: list[float], rel_m: list[float]) -> dict:
    if not rel:
        return {"latency_within_10pct": None, "latency_mape": None, "memory_within_5pct": None}
    return {"latency_within_10pct": statistics.fmean(x <= 0.10 for x in rel), "latency_mape": statistics.fmean(rel),
            "memory_within_5pct": statistics.fmean(x <= 0.05 for x in rel_m)}


def pick_tasks(space, n: int) -> list[str]:
    """``n`` tasks: seen ones spread over the space, plus one unseen."""
    seen, unseen = space.names("seen"), space.names("unseen")
    return ([seen[int(i)] for i in np.linspace(0, len(seen) - 1, max(1, n - 1))] + unseen[:1])[:n]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="device profile to use (default: the one shipped for this machine)")
    p.add_argument("--profiles-dir", default=None)
    p.add_argument("--fresh", type=int, default=0, help="profile the agent afresh with this many subnets first")
    p.add_argument("--store", default=None, help="(--fresh) campaign store to use or resume")
    p.add_argument("--test", type=int, default=100, help="(--fresh) held-out subnets of the fit")
    p.add_argument("--backbone", default="resnet_numvqa")
    p.add_argument("--space", default="numvqa")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agent", default=None, help="use this agent instead of starting a local one")
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--percentile", default="90", choices=["50", "90", "99"])
    p.add_argument("--repeats", type=int, default=3, help="measurements of each generated model (runs pooled)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    from predictor_accuracy import start_local_agent, stop_agent

    from host.generate import ModelFactory
    from host.profiling.budget import factory_assembler
    from host.profiling.build import ExtractingBuilder
    from host.profiling.data import percentile_name
    from host.profiling.device_profile import list_devices, load_predictor
    from host.profiling.drift import DriftCheck, fingerprint
    from host.profiling.measurers import AgentMeasurer, CandidateMeasurer
    from host.profiling.plan import MeasureSettings

    pct = percentile_name(args.percentile)
    tmp = tempfile.TemporaryDirectory(prefix="nnf-compliance-")
    agent_proc = None
    t_start = time.perf_counter()
    try:
        addr = args.agent
        if addr is None:
            agent_proc, addr = start_local_agent(Path(tmp.name) / "cache")
        if args.fresh:
            device, profiles = fresh_profile(args, addr, Path(tmp.name))
        else:
            profiles = Path(args.profiles_dir) if args.profiles_dir else None
            device = args.device or next(iter(list_devices(profiles)), None)
            if device is None:
                raise SystemExit("no device profile: pass --device NAME or --fresh N")
        factory = ModelFactory.load(space=args.space)
        net = factory.models.supernet
        pred = load_predictor(device, net.gate_layout(), root=profiles, percentile=pct)
        settings = MeasureSettings(**{k: v for k, v in pred.entry.get("measure", {}).items()
                                      if k in MeasureSettings.__dataclass_fields__})
        with AgentMeasurer(addr) as m:
            check = (fingerprint(pred.entry, net.gate_layout(), net, m, percentile=pct, agent=addr)
                     if pred.entry.get("references") else DriftCheck.skipped("the profile keeps no reference subnets"))
            used = pred.rescaled(latency=check.latency_factor, memory=check.memory_factor) \
                if check.status == "rescaled" else pred
            cm = CandidateMeasurer(ExtractingBuilder(net, pred.runtime), m, net.input_shape, settings, stat=pct)
            bench = Bench(used, factory_assembler(factory), cm, pct, device, args.repeats)
            rows = []
            for task in pick_tasks(factory.space, args.tasks):
                cache: dict[str, tuple[float, float]] = {}
                for b in bench.budgets(task):
                    rows.append(bench.scenario(task, b, cache))
                    if not args.json:
                        _print_row(rows[-1])
    finally:
        if agent_proc is not None:
            stop_agent(agent_proc)
        tmp.cleanup()

    fits = [r for r in rows if r["fit"]]
    lat_rows = [r for r in fits if r["latency_ms"] is not None]
    mem_rows = [r for r in fits if r["memory_mb"] is not None]
    out = {
        "scenarios": len(rows),
        "scenarios_without_fit": len(rows) - len(fits),
        "percentile": pct,
        "latency_compliance": statistics.fmean(r["latency_ok"] for r in lat_rows) if lat_rows else None,
        "memory_compliance": statistics.fmean(r["memory_ok"] for r in mem_rows) if mem_rows else None,
        "predictor_on_generated": bench.predictor_on_generated(fits),
        "median_regret_grid_steps": statistics.median(r["regret_steps"] for r in fits) if fits else None,
        "regret_grid_steps": sorted(r["regret_steps"] for r in fits),
        "drift_check": check.to_json(),
        "profile": {"device": device, "fitted_at": pred.entry.get("fitted_at"), "fresh_samples": args.fresh or None,
                    "margins": pred.margins(), "fit_mix": pred.entry.get("fit_mix"), "runtime": pred.runtime},
        "measurements": cm.measurements,
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    if not args.json:
        pg = out["predictor_on_generated"]
        print(f"scenarios {out['scenarios']} ({out['scenarios_without_fit']} without a fitting model); compliance "
              f"latency {out['latency_compliance']}, memory {out['memory_compliance']}; predictor on generated "
              f"±10 % {pg['latency_within_10pct']}, MAPE {pg['latency_mape']}; median regret "
              f"{out['median_regret_grid_steps']} steps; drift check {check.status} ({check.message})")
    import _util  # benchmarks/ is on sys.path

    # with --json: also benchmarks/results/budget_compliance.json (NumVQA) or budget_compliance.SPACE.json
    _util.emit(out, args.json, name="budget_compliance" if args.space == "numvqa" else f"budget_compliance.{args.space}")
    return 0


def _print_row(row: dict) -> None:
    budget = f"{row['latency_ms']:.3f} ms" if row["latency_ms"] is not None else f"{row['memory_mb']:.2f} MB"
    if not row["fit"]:
        print(f"{row['task'][:26]:26s} {budget:>10s}  no fit: {row['error']}", flush=True)
        return
    print(f"{row['task'][:26]:26s} {budget:>10s}  limit {row['limit']:4.2f}  predicted {row['predicted_ms']:.3f} ms "
          f"(bound {row['bound_ms']:.3f})  measured {row['measured_ms']:.3f} ms {row['measured_mb']:6.2f} MB  ok "
          f"{row['latency_ok'] and row['memory_ok']}  live limit {row['live_limit']}  regret {row['regret_steps']}",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
