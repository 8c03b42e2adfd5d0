"""Budget-aware generation speed: batched search vs. the paper's Algorithm 1, plus live search.

    python benchmarks/generate_speed.py [--device local-cpu] [--space numvqa] [--checkpoint DIR]
        [--tasks 5] [--budgets 4] [--live 3] [--agent HOST:PORT] [--json]

Scenarios = tasks × latency budgets (≥ 20 by default: 5 × 4), each with a memory budget too. Per task, the
budgets are spread over the predicted latency range of that task's generated subnets (limits 1 %..100 %),
so every scenario has an answer inside the grid. Per scenario, side by side in one run:

* median_s: whole generation (batched search + extraction of the compact model + report; the generator and
  the device profile are loaded once, as a generation service would);
* search_median_s: the batched search alone (one assembler forward over 100 limits + vectorised prediction);
* alg1_search_median_s: Algorithm 1 (limit 1 %, 2 %, ..., one assembler call and one prediction per limit);
* speedup = Algorithm 1 search time / batched search time (median over scenarios);
* chunked_search_median_s / chunked_speedup: the batched search with limits in chunks of CHUNK (one assembler
  forward + one prediction per chunk, stopping at the first chunk holding a miss; pays off when answers
  sit at low limits);
* same_answer: all three searches returned identical gates, for every scenario;
* live_median_s: hardware-in-the-loop search on the local agent (a local agent is started unless --agent)
  for the first --live scenarios (each live search measures several candidates, seconds each).

The generator is the shipped checkpoint of --space when there is one (or --checkpoint); otherwise an
untrained assembler of the same shape (speed does not depend on training; the output says which).
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
CHUNK = 25  # limits per batched pass in the chunked variant (generate_for_device(chunk=...))


def load_factory(space: str, checkpoint: str | None):
    from host.errors import NNFactoryError
    from host.generate import ModelFactory

    try:
        return ModelFactory.load(space=space, checkpoint=Path(checkpoint) if checkpoint else None), "checkpoint"
    except (NNFactoryError, FileNotFoundError) as exc:
        if checkpoint:
            raise
        from host.models import build_models
        from host.tasks import load_space
        from host.training import TrainConfig

        torch.manual_seed(0)
        models = build_models(load_space(space), "resnet_numvqa", TrainConfig(), with_aux=False)
        models.supernet.eval()
        models.assembler.eval()
        return ModelFactory(models=models, checkpoint=Path("untrained"), meta={}), f"untrained ({exc})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="local-cpu")
    p.add_argument("--space", default="numvqa")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--profiles-dir", default=None)
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--budgets", type=int, default=4)
    p.add_argument("--live", type=int, default=3, help="scenarios also searched live on the agent (0 = none)")
    p.add_argument("--agent", default=None)
    p.add_argument("--repeats", type=int, default=3, help="timing repeats per scenario (median taken)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    from host.errors import SearchError
    from host.profiling.budget import (
        Budget,
        algorithm1,
        batched_search,
        factory_assembler,
        generate_for_device,
        live_search,
    )
    from host.profiling.device_profile import load_predictor

    factory, source = load_factory(args.space, args.checkpoint)
    layout = factory.models.supernet.gate_layout()
    root = Path(args.profiles_dir) if args.profiles_dir else None
    pred = load_predictor(args.device, layout, root=root)
    guarded = pred.guarded()  # predictions plus the profile's calibrated margin: what a budget is held to
    assemble = factory_assembler(factory)
    seen, unseen = factory.space.names("seen"), factory.space.names("unseen")
    n_seen = max(1, args.tasks - 1)
    names = [seen[int(i)] for i in np.linspace(0, len(seen) - 1, n_seen)] + unseen[:1]
    names = names[: args.tasks]
    from host.profiling.budget import limit_grid

    def budgets_for(task: str) -> list[Budget]:
        # spread budgets over what this task's generated subnets can reach (1 % .. 100 % limits)
        lat, mem = pred(assemble(task, limit_grid()))
        fracs = np.linspace(0.15, 0.85, args.budgets)
        return [Budget(latency_ms=float(lat.min() + f * (lat.max() - lat.min())) / 1000,
                       memory_mb=float(mem.min() + 0.9 * (mem.max() - mem.min())) / 1e6) for f in fracs]

    # warm up (first assembler call, first extraction)
    generate_for_device(factory, names[0], args.device, budgets_for(names[0])[0], predictor=pred)

    rows = []
    for task in names:
        for b in budgets_for(task):
            t_b, t_c, t_a, t_full = [], [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                rb = batched_search(assemble, task, guarded, b, device=args.device)
                t_b.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                rc = batched_search(assemble, task, guarded, b, device=args.device, chunk=CHUNK)
                t_c.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ra = algorithm1(assemble, task, guarded, b, device=args.device)
                t_a.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, rep = generate_for_device(factory, task, args.device, b, predictor=pred)
                t_full.append(time.perf_counter() - t0)
            same = all(r.grid_index == ra.grid_index and all(torch.equal(x, y) for x, y in zip(r.gates, ra.gates, strict=True))
                       for r in (rb, rc))
            rows.append({"task": task, "latency_ms": b.latency_ms, "memory_mb": b.memory_mb, "limit": rb.limit,
                         "activation_ratio": rb.activation_ratio, "predicted_ms": rb.latency_us / 1000,
                         "alg1_rounds": ra.rounds, "batched_s": statistics.median(t_b), "chunked_s": statistics.median(t_c), "alg1_s": statistics.median(t_a),
                         "generate_s": statistics.median(t_full), "same_answer": same})

    live_rows = []
    if args.live > 0:
        from predictor_accuracy import start_local_agent, stop_agent

        from host.profiling.build import ExtractingBuilder
        from host.profiling.measurers import AgentMeasurer, CandidateMeasurer
        from host.profiling.plan import MeasureSettings

        agent_proc = None
        tmp = tempfile.TemporaryDirectory(prefix="nnf-live-")
        try:
            addr = args.agent
            if addr is None:
                agent_proc, addr = start_local_agent(Path(tmp.name))
            m = AgentMeasurer(addr)
            settings = MeasureSettings(**{k: v for k, v in pred.entry.get("measure", {}).items()
                                          if k in MeasureSettings.__dataclass_fields__})
            live = CandidateMeasurer(ExtractingBuilder(factory.models.supernet, pred.runtime), m,
                                     factory.models.supernet.input_shape, settings, stat=pred.percentile)
            for r in rows[: args.live]:
                b = Budget(latency_ms=r["latency_ms"], memory_mb=r["memory_mb"])
                before = live.measurements
                t0 = time.perf_counter()
                start = batched_search(assemble, r["task"], guarded, b).grid_index
                try:
                    res = live_search(assemble, r["task"], live, b, start_index=start, device=args.device)
                except SearchError as exc:  # the device is slower than its profile predicts: a real outcome
                    live_rows.append({"task": r["task"], "latency_ms": r["latency_ms"], "fit": False,
                                      "seconds": time.perf_counter() - t0, "predictor_limit": r["limit"],
                                      "measurements": live.measurements - before, "error": str(exc)})
                    continue
                live_rows.append({"task": r["task"], "latency_ms": r["latency_ms"], "seconds": time.perf_counter() - t0,
                                  "limit": res.limit, "predictor_limit": r["limit"], "measured_ms": res.latency_us / 1000,
                                  "measurements": live.measurements - before, "fit": True})
            m.close()
        finally:
            if agent_proc is not None:
                stop_agent(agent_proc)
            tmp.cleanup()

    speedups = [r["alg1_s"] / r["batched_s"] for r in rows]
    out = {
        "median_s": statistics.median(r["generate_s"] for r in rows),
        "search_median_s": statistics.median(r["batched_s"] for r in rows),
        "alg1_search_median_s": statistics.median(r["alg1_s"] for r in rows),
        "speedup": statistics.median(speedups),
        "chunk": CHUNK,
        "chunked_search_median_s": statistics.median(r["chunked_s"] for r in rows),
        "chunked_speedup": statistics.median(r["alg1_s"] / r["chunked_s"] for r in rows),
        "same_answer": all(r["same_answer"] for r in rows),
        "live_median_s": statistics.median(r["seconds"] for r in live_rows) if live_rows else None,
        "live_measurements_median": statistics.median(r["measurements"] for r in live_rows) if live_rows else None,
        "scenarios": len(rows),
        "live_scenarios": len(live_rows),
        "live_no_fit": sum(1 for r in live_rows if not r["fit"]),
        "alg1_rounds_median": statistics.median(r["alg1_rounds"] for r in rows),
        "generator": source,
        "device": args.device,
    }
    print(f"{'task':28s} {'budget ms':>9} {'limit':>6} {'ratio':>6} {'pred ms':>8} {'A1 rnds':>7} {'batched s':>9} "
          f"{'alg1 s':>8} {'gen s':>7} same")
    for r in rows:
        print(f"{r['task'][:28]:28s} {r['latency_ms']:9.3f} {r['limit']:6.2f} {r['activation_ratio']:6.3f} "
              f"{r['predicted_ms']:8.3f} {r['alg1_rounds']:7d} {r['batched_s']:9.4f} {r['alg1_s']:8.4f} "
              f"{r['generate_s']:7.4f} {r['same_answer']}")
    for r in live_rows:
        if not r["fit"]:
            print(f"live: {r['task'][:28]:28s} budget {r['latency_ms']:.3f} ms -> no fit on the device "
                  f"({r['measurements']} measurements, {r['seconds']:.1f} s): {r['error']}")
            continue
        print(f"live: {r['task'][:28]:28s} budget {r['latency_ms']:.3f} ms -> limit {r['limit']:.2f} "
              f"(predictor {r['predictor_limit']:.2f}), measured {r['measured_ms']:.3f} ms, "
              f"{r['measurements']} measurements, {r['seconds']:.1f} s")
    print(f"median generate {out['median_s']:.4f} s, batched search {out['search_median_s']:.4f} s, Algorithm 1 "
          f"{out['alg1_search_median_s']:.4f} s, speedup {out['speedup']:.1f}x (chunks of {CHUNK}: "
          f"{out['chunked_speedup']:.1f}x), same answer {out['same_answer']} "
          f"({out['scenarios']} scenarios; generator: {source})")
    import _util  # benchmarks/ is on sys.path when run as a script

    _util.emit(out, args.json)  # with --json: also benchmarks/results/generate_speed.json
    return 0


if __name__ == "__main__":
    sys.exit(main())
