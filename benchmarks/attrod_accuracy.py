"""AttrOD benchmark: mAP@0.5 and activation ratio of generated detectors vs. the requested limit.

    python benchmarks/attrod_accuracy.py [--checkpoint DIR] [--per-task 100] [--limits 0.1,0.3,0.5,1.0] [--json]

On the shipped AttrOD checkpoint (or ``--checkpoint``): for each limit and every seen and unseen task,
generate the compact detector (assembler + extraction, no training), run it on scenes of that task built
from MNIST's *test* glyphs, and score the task's objects with COCOeval (mAP@0.5). Reports the mean over
seen and unseen tasks per limit (the AttrOD counterpart of the paper's Table 2) and per-task mAP at 0.3.
With ``--json`` the result is also written to benchmarks/results/attrod_accuracy.json (read by ``nnf report``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _util
import torch

from host.errors import NNFactoryError
from host.generate import ModelFactory, evaluate_generated, limit_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped AttrOD checkpoint")
    ap.add_argument("--per-task", type=int, default=100, help="test scenes per task and limit")
    ap.add_argument("--limits", default="0.1,0.3,0.5,1.0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    limits = [float(x) for x in args.limits.split(",") if x.strip()]

    try:
        factory = ModelFactory.load(space="attrod", checkpoint=args.checkpoint)
    except NNFactoryError as exc:  # e.g. no AttrOD checkpoint yet: the message says how to train one
        raise SystemExit(f"attrod_accuracy: {exc}") from None
    space = factory.space
    res = evaluate_generated(factory, limits, per_task=args.per_task)
    metric = res.get("metric", "map50")
    mid = limit_key(0.3) if limit_key(0.3) in res["per_limit"] else limit_key(limits[len(limits) // 2])
    result = {
        "metric": metric,
        "seen": {k: {metric: v.get(metric), "activation_ratio": round(v["activation_ratio"], 4)}
                 for k, v in res["seen"].items()},
        "unseen": {k: {metric: v.get(metric), "activation_ratio": round(v["activation_ratio"], 4)}
                   for k, v in res["unseen"].items()},
        "per_task": {t: row.get(metric) for t, row in res["per_limit"][mid].items()},
        "per_task_limit": mid,
        "unseen_tasks": space.names("unseen"),
        "tasks": {"seen": len(space.names("seen")), "unseen": len(space.names("unseen"))},
        "per_task_samples": args.per_task,
        "checkpoint": res["checkpoint"],
        "checkpoint_step": res["checkpoint_step"],
    }
    print(f"checkpoint {result['checkpoint']} (step {result['checkpoint_step']}), {args.per_task} test scenes per task")
    print(f"{'limit':>6} | {'seen ' + metric:>11} {'ratio':>7} | {'unseen ' + metric:>13} {'ratio':>7}")
    for lim in limits:
        k = limit_key(lim)
        s, u = result["seen"].get(k, {}), result["unseen"].get(k, {})

        def f(v: object) -> str:
            return "—" if v is None else f"{v:.4f}"

        print(f"{k:>6} | {f(s.get(metric)):>11} {f(s.get('activation_ratio')):>7} | {f(u.get(metric)):>13} "
              f"{f(u.get('activation_ratio')):>7}")
    _util.emit(result, args.json)


if __name__ == "__main__":
    main()
