"""``nnf eval``: accuracy and activation ratio of generated models on a task space's test split.

For every task and limit, the compact model is generated from the checkpoint and run on balanced
questions of that task built from MNIST's test split (images never trained on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_LIMITS = "0.05,0.1,0.2,0.3,0.5,1.0"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate generated models on the test split", description=__doc__)
    p.add_argument("--space", default="numvqa", help="task space name or .toml path (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint or training-run directory (default: the checkpoint shipped for --space)")
    p.add_argument("--limits", default=DEFAULT_LIMITS, help="comma-separated limits (default: %(default)s)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all seen + unseen)")
    p.add_argument("--per-task", type=int, default=200,
                   help="test questions (NumVQA: even) or scenes (AttrOD) per task (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test questions (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def parse_limits(text: str) -> list[float]:
    from host.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"--limits {text!r} must be comma-separated numbers in (0, 1]") from exc


def run(args: argparse.Namespace) -> int:
    import torch

    from host.cli import print_json
    from host.generate import ModelFactory, evaluate_generated, limit_key

    torch.set_num_threads(max(1, args.threads))
    limits = parse_limits(args.limits)
    factory = ModelFactory.load(space=args.space, checkpoint=args.checkpoint)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    result = evaluate_generated(factory, limits, tasks=tasks, per_task=args.per_task, seed=args.seed,
                                progress=not args.no_progress)
    if args.json:
        print_json(result)
        return 0
    metric = result.get("metric", "accuracy")
    short = {"accuracy": "acc", "map50": "mAP50"}.get(metric, metric)
    samples = "test questions" if metric == "accuracy" else "test scenes"
    print(f"checkpoint {result['checkpoint']} (step {result['checkpoint_step']}), {args.per_task} {samples} per task")
    print(f"{'limit':>6} {'seen ' + short:>11} {'seen ratio':>11} {'unseen ' + short:>13} {'unseen ratio':>13}")
    for lim in limits:
        k = limit_key(lim)
        s, u = result["seen"].get(k, {}), result["unseen"].get(k, {})
        sv, uv = s.get(metric), u.get(metric)
        print(f"{k:>6} {float('nan') if sv is None else sv:>11.4f} {s.get('activation_ratio', float('nan')):>11.4f} "
              f"{float('nan') if uv is None else uv:>13.4f} {u.get('activation_ratio', float('nan')):>13.4f}")
    return 0
