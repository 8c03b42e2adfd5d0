"""NN-Factory vs. the paper's baselines (Retrain, Prune&Tune) under device budgets, and customization cost.

    python benchmarks/baselines.py [--json] [--quick] [--device dev-xeon-2c] [--space numvqa]
        [--tasks "exactly one 3,at least two 5,..."] [--budgets-ms 2.0,2.6] [--budget-fractions 0.45,0.6,0.8]
        [--phase all|train|measure] [--methods retrain,prune_tune] [--work runs/baselines] [--agent HOST:PORT] [--results PATH]

Scenarios = tasks × latency budgets on one device (its profile under device_profiles/). Budgets are given
in ms, or as fractions of the predicted latency of the full supernet (all modules on) on that device. For
every scenario (host/baselines/compare.py):

* NN-Factory generates its model with the generator and the device profile loaded (no data, no training);
* Retrain sizes the supernet's architecture at the widest uniform width predicted to fit, initialises it
  from a pre-trained network (by default the generator checkpoint's supernet weights, the strongest start
  this CPU allows; --init pretrained: a backbone pre-trained here on digit counting with every module on;
  --init scratch) and trains it on the task's data with a step/time cap;
* Prune&Tune prunes a unified all-task model with Torch-Pruning (DepGraph) to the budget and fine-tunes it.

All three are scored on the same test questions (MNIST test split) and measured on a local agent (started
here unless --agent) with the profile's runtime, settings and latency statistic. Phases: ``train`` trains
and caches the baselines (CPU-heavy: run it niced in the background), ``measure`` generates and measures
(run it on a quiet machine); ``all`` does both. Results go to benchmarks/results/baselines.json (full
settings) or benchmarks/results/baselines.quick.json (--quick), which ``nnf report`` reads.

--quick: one task, one budget, a few training steps and 200 test questions (a CI-sized check of the whole
path; its figures say nothing about the methods).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _util import save_result  # noqa: E402

DEFAULT_TASKS = "exactly one 3,at least two 5,exactly three odd,exactly two 0"
# A detector has a larger fixed cost (its head runs at full resolution, ungated): its narrowest uniform width is
# ~64 % of the full model's latency on dev-xeon-2c, so its budgets sit higher for the baselines to have a model.
DEFAULT_FRACTIONS = "numvqa=0.45,0.6;attrod=0.7,0.85"


def fractions_for(spec: str, space: str) -> list[float]:
    """Budget fractions of ``space`` from ``0.45,0.6`` (every space) or ``numvqa=0.45,0.6;attrod=0.7,0.85``."""
    from host.errors import ConfigError

    def numbers(values: str) -> list[float]:
        try:
            out = [float(f) for f in values.split(",") if f.strip()]
        except ValueError:
            out = []
        if not out or not all(0 < f <= 1 for f in out):
            raise ConfigError(f"--budget-fractions {spec!r}: {values!r} is not a list of fractions in (0, 1] "
                              "(write F1,F2 or SPACE=F1,F2;SPACE=F1,F2)")
        return out

    if "=" not in spec:
        return numbers(spec)
    per_space = {}
    for part in filter(str.strip, spec.split(";")):
        name, _, values = part.partition("=")
        per_space[name.strip()] = numbers(values)
    if space not in per_space:
        raise ConfigError(f"--budget-fractions {spec!r} names no fractions for space {space!r}: add {space}=F1,F2")
    return per_space[space]


def build_settings(args: argparse.Namespace):
    from host.baselines.compare import ComparisonSettings
    from host.baselines.prune_tune import PruneTuneConfig, UnifiedConfig
    from host.baselines.retrain import RetrainConfig
    from host.baselines.train import TrainSettings

    backbone_ckpt = Path(args.backbone_checkpoint) if args.backbone_checkpoint else None
    if args.quick:
        return ComparisonSettings(
            device=args.device, init=args.init, backbone_steps=4, backbone_batch_size=16,
            backbone_checkpoint=backbone_ckpt,
            retrain=RetrainConfig(train=TrainSettings(steps=4, batch_size=16, warmup_steps=2)),
            unified=UnifiedConfig(train=TrainSettings(steps=4, batch_size=16, warmup_steps=2)),
            prune_tune=PruneTuneConfig(finetune=TrainSettings(steps=3, batch_size=16, lr=5e-4, warmup_steps=1),
                                       scan_step=0.1, tolerance=0.02),
            test_per_task=200, threads=args.threads,
        )
    return ComparisonSettings(
        device=args.device, init=args.init, backbone_steps=args.backbone_steps, backbone_batch_size=args.batch_size,
        backbone_checkpoint=backbone_ckpt,
        retrain=RetrainConfig(train=TrainSettings(
            steps=args.retrain_steps, batch_size=args.batch_size, lr=args.lr, cpu_cap_s=args.cpu_cap_s)),
        unified=UnifiedConfig(train=TrainSettings(
            steps=args.unified_steps, batch_size=args.batch_size, lr=args.lr)),
        prune_tune=PruneTuneConfig(finetune=TrainSettings(
            steps=args.finetune_steps, batch_size=args.batch_size, lr=args.lr / 2, warmup_steps=10,
            cpu_cap_s=args.cpu_cap_s)),
        test_per_task=args.test_per_task, threads=args.threads,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="dev-xeon-2c", help="device profile name (default: %(default)s)")
    p.add_argument("--space", default="numvqa,attrod",
                   help="comma-separated task spaces; one without a shipped checkpoint or device profile is skipped "
                        "and said so (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help="generator checkpoint (default: the one shipped for --space)")
    p.add_argument("--profiles-dir", default=None)
    p.add_argument("--tasks", default=None,
                   help=f"comma-separated tasks of a single --space (default NumVQA: {DEFAULT_TASKS}; other spaces: "
                        "three seen tasks and one unseen)")
    p.add_argument("--budgets-ms", default=None, help="comma-separated latency budgets in ms")
    p.add_argument("--budget-fractions", default=None,
                   help="budgets as fractions of the full supernet's predicted latency: F1,F2 for every space, or "
                        f"SPACE=F1,F2;SPACE=... (default {DEFAULT_FRACTIONS})")
    p.add_argument("--init", default="generator", choices=["pretrained", "generator", "scratch"],
                   help="both baselines start from the generator checkpoint's supernet weights (default), a backbone "
                        "pre-trained here once on digit counting with every module on, or scratch")
    p.add_argument("--backbone-steps", type=int, default=500, help="pre-training steps of the backbone")
    p.add_argument("--backbone-checkpoint", default=None, help="use this pre-training checkpoint as the backbone")
    p.add_argument("--retrain-steps", type=int, default=100)
    p.add_argument("--unified-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cpu-cap-s", type=float, default=600.0,
                   help="cap on each scenario's training in process CPU seconds (a pause or a busy machine does not "
                        "count against it; default: %(default)s)")
    p.add_argument("--test-per-task", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--phase", default="all", choices=["all", "train", "measure"])
    p.add_argument("--methods", default="retrain,prune_tune",
                   help="baselines the train phase makes (default: %(default)s; two processes with one method each "
                        "use both cores of a 2-core machine)")
    p.add_argument("--work", default=str(ROOT / "runs" / "baselines"), help="cache of trained baseline models")
    p.add_argument("--agent", default=None, help="measure on this agent (default: start a local one)")
    p.add_argument("--results", default=None,
                   help="directory for the result file baselines.json / baselines.quick.json (default: benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="CI-sized: one scenario, a few training steps")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch

    from host.baselines.compare import merge_results
    from host.baselines.device import local_agent
    from host.errors import ConfigError

    torch.set_num_threads(max(1, args.threads))
    t_start = time.perf_counter()
    spaces = [x.strip() for x in args.space.split(",") if x.strip()]
    if (args.tasks or args.checkpoint) and len(spaces) > 1:
        raise ConfigError("--tasks and --checkpoint need a single --space")
    if args.quick:
        spaces = spaces[:1]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"retrain", "prune_tune"})
    if unknown or not methods:
        raise ConfigError(f"--methods {args.methods!r}: choose from retrain, prune_tune")
    settings = build_settings(args)
    work = Path(args.work) / ("quick" if args.quick else "full")
    plans, skipped = [], {}
    for space in spaces:
        plan = plan_space(args, space, settings, work)
        if isinstance(plan, str):
            skipped[space] = plan
            print(f"{space}: skipped: {plan}", file=sys.stderr)
        else:
            plans.append(plan)
    if not plans:
        raise ConfigError("no task space can be compared: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    if args.phase in ("all", "train"):
        for cmp, scenarios in plans:
            cmp.train(scenarios, methods=methods)
        if args.phase == "train":
            print(f"trained ({time.perf_counter() - t_start:.0f} s); now measure on a quiet machine: "
                  "python benchmarks/baselines.py --phase measure [same options]", file=sys.stderr)
            return 0
    parts = []
    with contextlib.ExitStack() as stack:
        if args.agent:
            addr, token = args.agent, os.environ.get("NNF_AGENT_TOKEN")
        else:
            addr, token = stack.enter_context(local_agent())
        for cmp, scenarios in plans:
            parts.append(cmp.measure(scenarios, addr, token=token, train_missing=args.phase == "all"))
    result = merge_results(parts, skipped)
    result["quick"] = bool(args.quick)
    result["benchmark_seconds"] = round(time.perf_counter() - t_start, 1)
    name = "baselines.quick" if args.quick else "baselines"
    out = save_result(name, result, results_dir=Path(args.results) if args.results else None)
    print_table(result)
    print(f"written to {out}", file=sys.stderr)
    if args.json:
        keys = ("scenarios", "mean", "customize_seconds", "one_time_seconds", "targets", "quick", "metric",
                "mean_over_complete_scenarios")
        print(json.dumps({k: result.get(k) for k in keys}, sort_keys=True))
    return 0


def plan_space(args: argparse.Namespace, space: str, settings, work: Path):
    """(Comparison, scenarios) for one task space, or why it cannot be compared (no checkpoint, no profile)."""
    from host.baselines.compare import Comparison, budgets_from_profile, scenarios_for
    from host.errors import ConfigError, SpecError
    from host.generate import ModelFactory

    try:
        factory = ModelFactory.load(space=space, checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    except SpecError as exc:
        return f"no generator checkpoint ({exc})"
    try:
        cmp = Comparison(factory, settings, work, profiles_root=Path(args.profiles_dir) if args.profiles_dir else None)
    except (ConfigError, SpecError) as exc:
        return f"no usable device profile or data adapter ({exc})"
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    elif space == "numvqa":
        tasks = DEFAULT_TASKS.split(",")
    else:  # three trained tasks and one held-out task of the space
        tasks = factory.space.names("seen")[:3] + factory.space.names("unseen")[:1]
    if args.budgets_ms:
        budgets = [float(b) for b in args.budgets_ms.split(",")]
    else:
        fractions = fractions_for(args.budget_fractions or DEFAULT_FRACTIONS, space)
        budgets = budgets_from_profile(cmp.predictor, cmp.layout, fractions)
    if args.quick:
        tasks, budgets = tasks[:1], budgets[-1:]
    scenarios = scenarios_for(tasks, budgets)
    cmp.check_scenarios(scenarios)
    print(f"{space}: {len(scenarios)} scenarios: {len(tasks)} tasks x budgets {budgets} ms on {args.device}",
          file=sys.stderr)
    return cmp, scenarios


def print_table(result: dict) -> None:
    def f(v: object, spec: str = ".4f") -> str:
        return "—" if v is None else format(v, spec)

    print(f"{'task':<22} {'budget':>7} | {'NN-Factory acc/ms/s':>24} | {'Retrain acc/ms/s':>24} | {'Prune&Tune acc/ms/s':>24}")
    for r in result["scenarios"]:
        cells = []
        for m in ("nnfactory", "retrain", "prune_tune"):
            e = r[m]
            mark = "" if e.get("meets_budget") else "!"
            cells.append(f"{f(e.get('accuracy'))} {f(e.get('measured_latency_ms'), '.3f')}{mark} {f(e.get('seconds'), '.3g')}")
        print(f"{r['task']:<22} {r['budget_ms']:>7.2f} | " + " | ".join(f"{c:>24}" for c in cells))
    m, s = result["mean"], result["customize_seconds"]
    print(f"mean {result['metric']}: NN-Factory {f(m['nnfactory'])}, Retrain {f(m['retrain'])}, Prune&Tune {f(m['prune_tune'])}")
    print(f"customize seconds: NN-Factory {f(s['nnfactory'], '.4f')}, Retrain {f(s['retrain'], '.1f')}, "
          f"Prune&Tune {f(s['prune_tune'], '.1f')}; targets {result['targets']}")


if __name__ == "__main__":
    from host.errors import NNFactoryError

    try:
        sys.exit(main())
    except NNFactoryError as exc:  # bad options or inputs: the message says what to change
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
