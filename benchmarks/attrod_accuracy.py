"""AttrOD benchmark: mAP@0.5 and activation ratio of generated detectors vs. the requested limit.

    python benchmarks/attrod_accuracy.py [--checkpoint DIR] [--per-task 100] [--json] [--figures DIR]

On the shipped AttrOD checkpoint (or ``--checkpoint``), for each limit in 0.1/0.3/0.5 and every seen and
unseen task: generate the compact detector (assembler + extraction, no training, no data), run it on
``--per-task`` generated scenes of that task drawn with MNIST's *test* glyphs, decode its detections and
score the task's objects with pycocotools' COCOeval (AP at IoU 0.5, mean over the categories with ground
truth). Reports the mean mAP@0.5 and generated activation ratio over seen and unseen tasks, the per-task
mAP@0.5 at every limit, and whether any generated ratio exceeded its limit. Figures (PNG): per-task
mAP@0.5 at limit 0.3 (seen vs. unseen) and mean mAP@0.5 vs. limit.

Last line with ``--json``: {"seen": {"<limit>": {"map50", "activation_ratio"}}, "unseen": {...},
"per_task": {"<task>": {"split", "map50": {"<limit>": ...}, "activation_ratio": {...}}}, ...}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _util
import torch

from host.generate import ModelFactory, evaluate_generated, limit_key

LIMITS = [0.1, 0.3, 0.5]
CONTROL_TASK = "any-colour any-digit"


def task_agnostic_control(factory: ModelFactory, names: list[str], per_task: int, limit: float = 0.3) -> dict:
    """Mean mAP@0.5 over tasks of ONE detector, generated for "every object" at ``limit``, scored against
    each task's own objects on the same test scenes: what a detector that ignores the task would get."""
    from host.detection import score_detector
    from host.extraction import extract
    from host.tasks import get_family

    space = factory.space
    compact = extract(factory.models.supernet, factory.gates([CONTROL_TASK], [limit]).request(0))
    ids = torch.tensor([space.tasks.index(space.task(n)) for n in names])
    scenes = get_family(space.family).make_sampler(space, "test").task_scenes(ids, per_task, seed=1234)
    out: dict = {"limit": limit, "task": CONTROL_TASK, "per_task": {}}
    for i, n in enumerate(names):
        sub = scenes.select(torch.nonzero(scenes.task_ids == ids[i]).flatten())
        out["per_task"][n] = _r(score_detector(compact, space, space.task(n), sub)["map50"])
    for split in ("seen", "unseen"):
        vals = [v for n, v in out["per_task"].items() if space.task(n).split == split and v is not None]
        out[split] = round(sum(vals) / len(vals), 4)
    return out


def int8_map50(factory: ModelFactory, names: list[str], per_task: int, limit: float = 0.3) -> dict:
    """mAP@0.5 of each task's generated detector at ``limit`` in PyTorch and as int8 ONNX / TFLite exports
    (calibrated on validation scenes of the task), all run in their runtimes on the same test scenes."""
    import tempfile

    from host.detection import coco_map50, decode, scene_ground_truth
    from host.exports import export_artifact, load_runner
    from host.tasks import get_family

    space = factory.space
    fam = get_family(space.family)
    out: dict = {"limit": limit}
    for name in names:
        compact, _ = factory.generate(name, limit)
        ids = torch.tensor([space.tasks.index(space.task(name))])
        scenes = fam.make_sampler(space, "test").task_scenes(ids, per_task, seed=1234)
        gb, gc = scene_ground_truth(scenes, fam.pair_mask(space, space.task(name))[None].expand(len(scenes), -1, -1))
        with torch.no_grad():
            row = {"pytorch": _r(coco_map50(gb, gc, decode(compact(scenes.images), 4, 4), 4)["map50"])}
        with tempfile.TemporaryDirectory() as d:
            for fmt, suffix in (("onnx", ".int8.onnx"), ("tflite", ".int8.tflite")):
                path = Path(d) / f"m{suffix}"
                export_artifact(compact, fmt, path, int8=True)
                runner = load_runner(path)
                ys = torch.cat([torch.from_numpy(runner(scenes.images[i : i + 1].numpy())) for i in range(len(scenes))])
                row[f"{fmt}-int8"] = _r(coco_map50(gb, gc, decode(ys, 4, 4), 4)["map50"])
        out[name] = row
    return out


def plot_figures(res: dict, seen: list[str], unseen: list[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    rows = res["per_limit"][limit_key(0.3)]
    names = sorted(seen, key=lambda n: rows[n]["map50"] or 0.0) + sorted(unseen, key=lambda n: rows[n]["map50"] or 0.0)
    vals = [rows[n]["map50"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(16, 4.5))
    ax.bar(range(len(names)), vals, color=["tab:blue" if n in seen else "tab:orange" for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
    ax.set_ylabel("mAP@0.5")
    ax.set_ylim(0, 1)
    s, u = res["seen"][limit_key(0.3)]["map50"], res["unseen"][limit_key(0.3)]["map50"]
    ax.axhline(s, color="tab:blue", lw=0.8, ls="--", label=f"seen mean {s:.3f} ({len(seen)} tasks)")
    ax.axhline(u, color="tab:orange", lw=0.8, ls="--", label=f"unseen mean {u:.3f} ({len(unseen)} tasks)")
    ax.set_title("AttrOD: mAP@0.5 of each generated detector at activation limit 0.3 (test scenes)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    p = out_dir / "attrod_per_task_map50.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))

    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for split, colour in (("seen", "tab:blue"), ("unseen", "tab:orange")):
        xs = [res[split][limit_key(lim)]["activation_ratio"] for lim in LIMITS]
        ys = [res[split][limit_key(lim)]["map50"] for lim in LIMITS]
        ax.plot(xs, ys, "o-", color=colour, label=f"{split} (limits {', '.join(f'{x:g}' for x in LIMITS)})")
    ax.set_xlabel("generated activation ratio (mean over tasks)")
    ax.set_ylabel("mean mAP@0.5")
    ax.set_ylim(0, 1)
    ax.set_title("AttrOD: accuracy vs. generated model size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "attrod_map50_vs_ratio.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped AttrOD checkpoint")
    ap.add_argument("--per-task", type=int, default=100, help="test scenes per task and limit")
    ap.add_argument("--figures", type=Path, default=_util.ROOT / "benchmarks" / "figures")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--int8-tasks", default="",
                    help="comma-separated tasks whose int8 ONNX/TFLite exports are scored too (default: none)")
    ap.add_argument("--skip-limits", action="store_true", help="only the --int8-tasks part")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    factory = ModelFactory.load(space="attrod", checkpoint=args.checkpoint)
    space = factory.space
    seen, unseen = space.names("seen"), space.names("unseen")
    int8 = int8_map50(factory, [t.strip() for t in args.int8_tasks.split(",") if t.strip()], args.per_task)
    if len(int8) > 1:
        print(f"int8 exports at limit 0.3 (mAP@0.5 on {args.per_task} test scenes): " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()) for n, row in int8.items() if n != "limit"))
    if args.skip_limits:
        _util.emit({"int8": int8}, args.json, name="attrod_int8")  # not the per-limit result file
        return
    res = evaluate_generated(factory, LIMITS, per_task=args.per_task)
    per_task = {}
    for name in seen + unseen:
        per_task[name] = {
            "split": space.task(name).split,
            "map50": {limit_key(lim): _r(res["per_limit"][limit_key(lim)][name]["map50"]) for lim in LIMITS},
            "activation_ratio": {limit_key(lim): round(res["per_limit"][limit_key(lim)][name]["activation_ratio"], 4)
                                 for lim in LIMITS},
        }
    control = task_agnostic_control(factory, seen + unseen, args.per_task)
    over = max(row["activation_ratio"] - float(lim) for lim, rows in res["per_limit"].items() for row in rows.values())
    figures = [] if args.no_figures else plot_figures(res, seen, unseen, args.figures)
    state = factory.meta.get("train_state", {})
    result = {
        split: {k: {"map50": _r(v["map50"]), "activation_ratio": round(v["activation_ratio"], 4),
                    "max_activation_ratio": round(v["max_activation_ratio"], 4)} for k, v in res[split].items()}
        for split in ("seen", "unseen")
    }
    result.update({
        "per_task": per_task,
        "task_agnostic_control": control,
        "int8": int8,
        "ratio_never_above_limit": over <= 0,
        "max_ratio_minus_limit": round(over, 6),
        "per_task_samples": args.per_task,
        "tasks": {"seen": len(seen), "unseen": len(unseen)},
        "checkpoint": res["checkpoint"],
        "checkpoint_step": res["checkpoint_step"],
        "train_seconds": round(float(state.get("seconds", 0.0)), 1),
        "figures": figures,
    })
    print(f"checkpoint {result['checkpoint']} (step {result['checkpoint_step']}, "
          f"{result['train_seconds'] / 3600:.1f} h of training), {args.per_task} test scenes per task")
    print(f"{'limit':>6} | {'seen mAP50':>10} {'ratio':>7} | {'unseen mAP50':>12} {'ratio':>7}")
    for lim in LIMITS:
        k = limit_key(lim)
        s, u = result["seen"][k], result["unseen"][k]
        print(f"{k:>6} | {s['map50']:>10.4f} {s['activation_ratio']:>7.4f} | {u['map50']:>12.4f} "
              f"{u['activation_ratio']:>7.4f}")
    at = limit_key(0.3)
    worst = sorted(per_task.items(), key=lambda kv: kv[1]["map50"][at] or 0.0)[:6]
    print("weakest tasks at limit 0.3: " + ", ".join(f"{n} ({v['split']}) {v['map50'][at]:.3f}" for n, v in worst))
    print(f"control at 0.3: the task-agnostic '{CONTROL_TASK}' detector scored against each task's objects: "
          f"seen {control['seen']:.4f}, unseen {control['unseen']:.4f} (what the task's gates add)")
    print(f"ratio never above limit: {result['ratio_never_above_limit']}; figures: {', '.join(figures) or '-'}")
    _util.emit(result, args.json)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


if __name__ == "__main__":
    main()
