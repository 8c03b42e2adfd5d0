"""NumVQA benchmark: accuracy and activation ratio of generated models vs. the requested limit.

    python benchmarks/numvqa_accuracy.py [--checkpoint DIR] [--per-task 200] [--json] [--figures DIR]

On the shipped checkpoint (or ``--checkpoint``), for each limit in 0.05/0.1/0.2/0.3/0.5/1.0 and every seen
and unseen task: generate the compact model (assembler + extraction, no training), run it on balanced
yes/no questions built from MNIST's *test* split, and report the mean accuracy and generated activation
ratio over seen and unseen tasks (the paper's Table 2 shape), per-task accuracy at limit 0.3, and the
median time of one ``generate`` call (assembler + extraction + saving). Figures (PNG): generated ratio vs.
requested limit (paper Fig. 11) and gate similarity between tasks at limit 0.3 (paper Fig. 15).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import _util
import torch

from host.generate import ModelFactory, evaluate_generated, limit_key

LIMITS = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


def ratio_curve(factory: ModelFactory, names: list[str]) -> dict[str, torch.Tensor]:
    """Generated ratio (after the trim) and raw ratio (logits > 0) per task over a dense limit grid."""
    grid = torch.linspace(0.01, 1.0, 100)
    tasks = [n for n in names for _ in range(len(grid))]
    limits = grid.repeat(len(names))
    res = factory.gates(tasks, limits)
    raw = torch.cat([w > 0 for w in res.logits], dim=1).float().mean(dim=1)
    return {"grid": grid, "ratio": res.ratios.reshape(len(names), -1), "raw": raw.reshape(len(names), -1)}


def gate_similarity(factory: ModelFactory, names: list[str], limit: float) -> torch.Tensor:
    """Jaccard similarity of the hard gate sets of every pair of tasks at ``limit``."""
    res = factory.gates(names, [limit] * len(names))
    g = torch.cat(res.gates, dim=1)
    inter = g @ g.T
    union = g.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def plot_figures(factory: ModelFactory, seen: list[str], unseen: list[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    curve = ratio_curve(factory, seen + unseen)
    x = curve["grid"].numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for key, label, colour in (("raw", "before trim (logits > 0)", "tab:orange"), ("ratio", "returned", "tab:blue")):
        r = curve[key]
        ax.fill_between(x, r.min(0).values.numpy(), r.max(0).values.numpy(), color=colour, alpha=0.2)
        ax.plot(x, r.mean(0).numpy(), color=colour, label=f"{label}: mean, min-max over tasks")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ratio = limit")
    ax.set_xlabel("requested activation limit")
    ax.set_ylabel("generated activation ratio")
    ax.set_title(f"NumVQA: ratio vs. limit ({len(seen) + len(unseen)} tasks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "numvqa_ratio_vs_limit.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))

    names = sorted(seen + unseen, key=lambda n: (factory.space.task(n).attributes[2], n))
    sim = gate_similarity(factory, names, 0.3).numpy()
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(sim, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), [n + (" *" if n in unseen else "") for n in names], rotation=90, fontsize=5)
    ax.set_yticks(range(len(names)), [n + (" *" if n in unseen else "") for n in names], fontsize=5)
    ax.set_title("Gate similarity (Jaccard) between tasks at limit 0.3; * = unseen")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    p = out_dir / "numvqa_gate_similarity.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped NumVQA checkpoint")
    ap.add_argument("--per-task", type=int, default=200, help="test questions per task and limit")
    ap.add_argument("--generate-runs", type=int, default=15, help="generate calls timed for the median")
    ap.add_argument("--figures", type=Path, default=_util.ROOT / "benchmarks" / "figures")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    factory = ModelFactory.load(space="numvqa", checkpoint=args.checkpoint)
    space = factory.space
    seen, unseen = space.names("seen"), space.names("unseen")
    res = evaluate_generated(factory, LIMITS, per_task=args.per_task)
    per_task = {name: row["accuracy"] for name, row in res["per_limit"][limit_key(0.3)].items()}

    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        names = seen + unseen
        for i in range(args.generate_runs):
            _, summary = factory.generate(names[i % len(names)], 0.3, Path(tmp) / f"m{i}")
            seconds.append(summary["seconds"])

    max_ratio_over_limit = max(
        row["activation_ratio"] - float(lim) for lim, rows in res["per_limit"].items() for row in rows.values()
    )
    figures = [] if args.no_figures else plot_figures(factory, seen, unseen, args.figures)
    state = factory.meta.get("train_state", {})
    result = {
        "seen": {k: {"accuracy": round(v["accuracy"], 4), "activation_ratio": round(v["activation_ratio"], 4)}
                 for k, v in res["seen"].items()},
        "unseen": {k: {"accuracy": round(v["accuracy"], 4), "activation_ratio": round(v["activation_ratio"], 4)}
                   for k, v in res["unseen"].items()},
        "per_task": {k: round(v, 4) for k, v in per_task.items()},
        "per_limit_task": {lim: {t: round(row["accuracy"], 4) for t, row in rows.items()}
                           for lim, rows in res["per_limit"].items()},
        "unseen_tasks": unseen,
        "generate_seconds_median": round(statistics.median(seconds), 4),
        "ratio_never_above_limit": max_ratio_over_limit <= 0,
        "max_ratio_minus_limit": round(max_ratio_over_limit, 6),
        "per_task_samples": args.per_task,
        "tasks": {"seen": len(seen), "unseen": len(unseen)},
        "checkpoint": res["checkpoint"],
        "checkpoint_step": res["checkpoint_step"],
        "train_seconds": round(float(state.get("seconds", 0.0)), 1),
        "figures": figures,
    }
    print(f"checkpoint {result['checkpoint']} (step {result['checkpoint_step']}, "
          f"{result['train_seconds'] / 60:.0f} min of training), {args.per_task} MNIST-test questions per task")
    print(f"{'limit':>6} | {'seen acc':>8} {'ratio':>7} | {'unseen acc':>10} {'ratio':>7}")
    for lim in LIMITS:
        k = limit_key(lim)
        s, u = result["seen"][k], result["unseen"][k]
        print(f"{k:>6} | {s['accuracy']:>8.4f} {s['activation_ratio']:>7.4f} | {u['accuracy']:>10.4f} "
              f"{u['activation_ratio']:>7.4f}")
    worst = sorted(per_task.items(), key=lambda kv: kv[1])[:5]
    print("weakest tasks at limit 0.3: " + ", ".join(f"{n} {a:.3f}" for n, a in worst))
    print(f"generate median {result['generate_seconds_median']:.3f} s; ratio never above limit: "
          f"{result['ratio_never_above_limit']}; figures: {', '.join(figures) or '-'}")
    _util.emit(result, args.json)


if __name__ == "__main__":
    main()
