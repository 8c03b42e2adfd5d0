"""The report's figures (matplotlib, PNG). Each function draws one figure into ``path`` and returns a caption
saying what it shows; the page adds where its data came from.

Figures from a generator checkpoint (computed here, in a second or two, from the assembler alone):
training curves (paper Fig. 12), activation ratio vs. limit (Fig. 11), gate similarity across tasks and
across limits (Fig. 15). Figures from benchmark results: quality vs. latency budget (Fig. 10), predictor
accuracy vs. profiled subnets (Fig. 13), unseen tasks (Fig. 14), predicted vs. measured latency/memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METHOD_LABELS = {"nnfactory": "NN-Factory", "retrain": "Retrain", "prune_tune": "Prune&Tune"}
METHOD_COLORS = {"nnfactory": "tab:blue", "retrain": "tab:green", "prune_tune": "tab:red"}
METHOD_MARKERS = {"nnfactory": "o", "retrain": "s", "prune_tune": "^"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- from a generator checkpoint ------------------------------------------------------------------------


def training_curves(meta: dict, path: Path) -> str:
    """Validation accuracy and activation ratio over training steps (the checkpoint's history)."""
    plt = _plt()
    state = meta.get("train_state", {})
    hist = state.get("history") or []
    if not hist:
        raise ValueError("the checkpoint holds no validation history")
    steps = [h["step"] for h in hist]
    ratio_keys = sorted({k for h in hist for k in h if "ratio" in k})
    acc_keys = sorted({k for h in hist for k in h if k not in ("step", "select") and k not in ratio_keys
                       and isinstance(h.get(k), (int, float))})
    quality = "mAP@0.5" if any("map" in k for k in acc_keys) else "accuracy"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in acc_keys:
        ax1.plot(steps, [h.get(k, np.nan) for h in hist], marker=".", label=k.replace("_", " "))
    ax1.set_xlabel("training step (joint phase of this run)")
    ax1.set_ylabel(f"validation {quality}")
    ax1.grid(alpha=0.3)
    if acc_keys:
        ax1.legend(fontsize=8)
    for k in ratio_keys:
        ax2.plot(steps, [h.get(k, np.nan) for h in hist], marker=".", label=k.replace("_", " "))
    ax2.set_xlabel("training step")
    ax2.set_ylabel("generated activation ratio")
    ax2.grid(alpha=0.3)
    if ratio_keys:
        ax2.legend(fontsize=8)
    cfg = meta.get("train_config", {})
    fig.suptitle(f"{meta.get('space', {}).get('name', '?')} / {meta.get('backbone', '?')}: training curves "
                 f"(validation at limit {cfg.get('eval_limit', '?')})", fontsize=10)
    _save(fig, path)
    best = state.get("best") or {}
    return (f"Validation {quality} (seen / unseen tasks) and activation ratio of the generated gates every "
            f"{cfg.get('eval_every', '?')} steps, {len(hist)} evaluations; {state.get('step')} steps in "
            f"{float(state.get('seconds', 0.0)) / 3600:.2f} h of step time; shipped: step {best.get('step', '?')} "
            "(best on seen validation).")


def ratio_vs_limit(factory: Any, path: Path) -> str:
    """Returned and pre-trim activation ratio against the requested limit, over every listed task."""
    import torch

    plt = _plt()
    space = factory.space
    names = space.names("seen") + space.names("unseen")
    grid = torch.linspace(0.01, 1.0, 100)
    res = factory.gates([n for n in names for _ in range(len(grid))], grid.repeat(len(names)))
    ratio = res.ratios.reshape(len(names), -1).numpy()
    raw = torch.cat([w > 0 for w in res.logits], dim=1).float().mean(dim=1).reshape(len(names), -1).numpy()
    x = grid.numpy()
    fig, ax = plt.subplots(figsize=(5.6, 4.3))
    for r, label, colour in ((raw, "before the trim (logits > 0)", "tab:orange"), (ratio, "returned", "tab:blue")):
        ax.fill_between(x, r.min(0), r.max(0), color=colour, alpha=0.2)
        ax.plot(x, r.mean(0), color=colour, label=f"{label}: mean, min-max over tasks")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ratio = limit")
    ax.set_xlabel("requested activation limit")
    ax.set_ylabel("generated activation ratio")
    ax.set_title(f"{space.name}: activation ratio vs. limit ({len(names)} tasks)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    over = float((ratio - x[None, :]).max())
    mean = ratio.mean(0)
    knee = float(x[int(np.argmax(mean >= 0.95 * mean.max()))])
    never = "never exceeds" if over <= 1e-9 else "exceeds"
    return (f"Generated activation ratio for limits 0.01…1.00 (100 steps) and all {len(names)} listed tasks; the "
            f"returned ratio {never} the limit (largest ratio − limit: {over:+.4f}); the mean ratio reaches 95 % of "
            f"its largest value ({mean.max():.2f}) at limit {knee:.2f} and stays there.")


def _jaccard(g: Any) -> np.ndarray:
    inter = g @ g.T
    union = g.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return (inter / union.clamp(min=1)).numpy()


def _group_values(space: Any, task: Any) -> tuple[frozenset[str], ...]:
    """A task's attributes per attribute group (a group may hold several, e.g. AttrOD's "white/lime 1/7")."""
    return tuple(frozenset(a for a in task.attributes if a in attrs) for attrs in space.groups.values())


def _pick_tasks(space: Any, want: int = 16) -> list[str]:
    """A readable subset: tasks on a grid of the last group's most frequent values × the rest's most frequent."""
    listed = [t for t in space.tasks if t.split in ("seen", "unseen")]
    keyed = [(_group_values(space, t)[:-1], _group_values(space, t)[-1], t.name) for t in listed]
    side = max(2, int(round(want ** 0.5)))

    def by_count(values: list[Any]) -> list[Any]:
        return sorted(dict.fromkeys(values), key=lambda v: -values.count(v))

    rests = by_count([r for r, _, _ in keyed])[:side]
    lasts = [v for v in by_count([last for _, last, _ in keyed])
             if sum(1 for r, last, _ in keyed if last == v and r in rests) >= 2][:side]
    names = [n for r in rests for v in lasts for rr, last, n in keyed if rr == r and last == v]
    return names[:want]


def gate_similarity_tasks(factory: Any, path: Path, limit: float = 0.3) -> str:
    """Jaccard similarity of the hard gates of tasks at one limit: a readable 16-task subset, and a summary
    over every pair of listed tasks by which attributes they share."""
    import torch

    plt = _plt()
    space = factory.space
    names = _pick_tasks(space)
    unseen = set(space.names("unseen"))
    res = factory.gates(names, [limit] * len(names))
    sim = _jaccard(torch.cat(res.gates, dim=1))
    all_names = space.names("seen") + space.names("unseen")
    res_all = factory.gates(all_names, [limit] * len(all_names))
    sim_all = _jaccard(torch.cat(res_all.gates, dim=1))
    attrs = [_group_values(space, space.task(n)) for n in all_names]
    group_names = list(space.groups)
    last, rest = group_names[-1], " + ".join(group_names[:-1])
    same_last, same_rest = f"same {last},\ndifferent {rest}", f"same {rest},\ndifferent {last}"
    groups: dict[str, list[float]] = {same_last: [], same_rest: [], "nothing in common": [],
                                      "partly shared": []}
    for i, j in itertools.combinations(range(len(all_names)), 2):
        a, b = attrs[i], attrs[j]
        if len(a) != len(b):  # tasks of different arity (e.g. AttrOD): compared as sets of attributes
            groups["partly shared" if set(a) & set(b) else "nothing in common"].append(sim_all[i, j])
            continue
        shared = [x == y for x, y in zip(a, b, strict=True)]
        if shared[-1] and not any(shared[:-1]):
            groups[same_last].append(sim_all[i, j])
        elif not shared[-1] and all(shared[:-1]):
            groups[same_rest].append(sim_all[i, j])
        elif not any(shared):
            groups["nothing in common"].append(sim_all[i, j])
        else:
            groups["partly shared"].append(sim_all[i, j])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1.55, 1]})
    im = ax1.imshow(sim, cmap="viridis", vmin=0, vmax=1)
    labels = [n + (" *" if n in unseen else "") for n in names]
    ax1.set_xticks(range(len(names)), labels, rotation=60, ha="right", fontsize=9)
    ax1.set_yticks(range(len(names)), labels, fontsize=9)
    for i, j in itertools.product(range(len(names)), repeat=2):
        ax1.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                 color="black" if sim[i, j] > 0.6 else "white")
    ax1.set_title(f"between tasks at limit {limit:g} (* = unseen)", fontsize=10)
    fig.colorbar(im, ax=ax1, fraction=0.046, label="Jaccard similarity of active modules")
    keys = [k for k, v in groups.items() if v]
    means = [float(np.mean(groups[k])) for k in keys]
    ax2.barh(range(len(keys)), means, color="tab:purple", alpha=0.8)
    for i, k in enumerate(keys):
        ax2.text(means[i] + 0.01, i, f"{means[i]:.2f}  ({len(groups[k])} pairs)", va="center", fontsize=8)
    ax2.set_yticks(range(len(keys)), keys, fontsize=9)
    ax2.set_xlim(0, 1)
    ax2.set_xlabel("mean Jaccard similarity")
    ax2.set_title(f"all {len(all_names)} listed tasks, pairs grouped by shared attributes", fontsize=10)
    ax2.invert_yaxis()
    fig.suptitle(f"{space.name}: gate similarity across tasks", fontsize=11)
    _save(fig, path)
    return (f"Left: Jaccard similarity of the generated hard gates for {len(names)} tasks (chosen to share "
            f"attributes in a grid) at limit {limit:g}. Right: the same measure over all "
            f"{len(all_names) * (len(all_names) - 1) // 2} pairs of listed tasks, by what the pair shares.")


def gate_similarity_limits(factory: Any, path: Path,
                           limits: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)) -> str:
    """Jaccard similarity of one task's gates at two limits, averaged over every listed task."""
    import torch

    plt = _plt()
    space = factory.space
    names = space.names("seen") + space.names("unseen")
    mats = []
    for n in names:
        res = factory.gates([n] * len(limits), list(limits))
        mats.append(_jaccard(torch.cat(res.gates, dim=1)))
    sim = np.mean(mats, axis=0)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(sim, cmap="viridis", vmin=0, vmax=1)
    labels = [f"{x:g}" for x in limits]
    ax.set_xticks(range(len(limits)), labels, fontsize=10)
    ax.set_yticks(range(len(limits)), labels, fontsize=10)
    ax.set_xlabel("activation limit")
    ax.set_ylabel("activation limit")
    for i, j in itertools.product(range(len(limits)), repeat=2):
        ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=9,
                color="black" if sim[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, label="Jaccard similarity (mean over tasks)")
    ax.set_title(f"{space.name}: gate similarity across limits ({len(names)} tasks)", fontsize=10)
    _save(fig, path)
    return (f"For each listed task, the Jaccard similarity between its generated gates at two limits, averaged "
            f"over the {len(names)} tasks: how much of a smaller model is contained in a larger one.")


# ---- from benchmark results -------------------------------------------------------------------------------


def quality_vs_budget(result: dict, path: Path) -> str:
    """Mean task quality of each method per latency budget (and per task, faint)."""
    plt = _plt()
    rows = result["scenarios"]
    budgets = sorted({r["budget_ms"] for r in rows})
    tasks = sorted({r["task"] for r in rows})
    metric = result.get("metric", "accuracy")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m, label in METHOD_LABELS.items():
        means = []
        for b in budgets:
            vals = [r[m]["accuracy"] for r in rows if r["budget_ms"] == b and r[m].get("accuracy") is not None]
            means.append(np.mean(vals) if vals else np.nan)
        ax.plot(budgets, means, marker=METHOD_MARKERS[m], color=METHOD_COLORS[m], lw=2, label=f"{label} (mean)")
        for t in tasks:
            ys = [next((r[m].get("accuracy") for r in rows if r["budget_ms"] == b and r["task"] == t), None)
                  for b in budgets]
            ax.plot(budgets, [np.nan if y is None else y for y in ys], color=METHOD_COLORS[m], lw=0.6, alpha=0.3)
    ax.set_xlabel(f"latency budget (ms, {result.get('device', {}).get('latency_statistic', '')} on "
                  f"{result.get('device', {}).get('name', '?')})")
    ax.set_ylabel(f"task {metric} (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{result.get('space', '')}: quality vs. latency budget ({len(tasks)} tasks)", fontsize=10)
    _save(fig, path)
    return (f"Mean {metric} over {len(tasks)} tasks at each of {len(budgets)} latency budgets (thin lines: single "
            "tasks) for the three methods; every model sized to the same budget with the same device profile.")


def predicted_vs_measured(result: dict, path: Path) -> str:
    """The device profile's predicted latency and memory of every final model against the agent's measurement."""
    plt = _plt()
    rows = result["scenarios"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.4))
    n = 0
    errs = []
    for m, label in METHOD_LABELS.items():
        pts = [(r[m]["predicted_latency_ms"], r[m]["measured_latency_ms"], r[m]["predicted_memory_mb"],
                r[m]["measured_memory_mb"]) for r in rows if r[m].get("measured_latency_ms") is not None]
        if not pts:
            continue
        p = np.array(pts)
        n += len(p)
        errs.extend(np.abs(p[:, 1] - p[:, 0]) / p[:, 1])
        ax1.scatter(p[:, 0], p[:, 1], marker=METHOD_MARKERS[m], color=METHOD_COLORS[m], label=label, alpha=0.8)
        ax2.scatter(p[:, 2], p[:, 3], marker=METHOD_MARKERS[m], color=METHOD_COLORS[m], label=label, alpha=0.8)
    for ax, unit in ((ax1, "latency (ms)"), (ax2, "peak memory (MB)")):
        lo, hi = (min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1]))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = predicted")
        ax.plot([lo, hi], [lo * 1.1, hi * 1.1], ":", color="grey", lw=0.8, label="±10 %")
        ax.plot([lo, hi], [lo / 1.1, hi / 1.1], ":", color="grey", lw=0.8)
        ax.set_xlabel(f"predicted {unit}")
        ax.set_ylabel(f"measured {unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    stat = result.get("device", {}).get("latency_statistic", "")
    ax1.set_title(f"latency ({stat}) on {result.get('device', {}).get('name', '?')}", fontsize=10)
    ax2.set_title("peak memory", fontsize=10)
    _save(fig, path)
    within = float(np.mean(np.array(errs) <= 0.1)) if errs else float("nan")
    return (f"Every final model of the comparison ({n} models: three methods × scenarios): the device profile's "
            f"prediction (best estimate, no margin) against the agent's measurement; {within:.0%} of the latencies "
            "are within ±10 %.")


def predictor_accuracy(result: dict, path: Path) -> str:
    """Share of held-out subnets predicted within ±10 % (latency) / ±5 % (memory) vs. profiled subnets."""
    plt = _plt()
    samples = result["samples"]
    ns = sorted(int(k) for k in samples)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(ns, [samples[str(n)]["latency_within_10pct"] for n in ns], "o-", label="latency within ±10 %")
    if all("memory_within_5pct" in samples[str(n)] for n in ns):
        ax.plot(ns, [samples[str(n)]["memory_within_5pct"] for n in ns], "^-", label="memory within ±5 %")
    base = result.get("baseline_linear") or {}
    if base and all(str(n) in base for n in ns):
        ax.plot(ns, [base[str(n)]["latency_within_10pct"] for n in ns], "s--", label="latency ±10 %, paper's linear model")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("profiled subnets used for the fit")
    ax.set_ylabel(f"share of {result.get('test_subnets', '?')} held-out subnets")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"predictor accuracy on {str(result.get('device', '?')).split(' (')[0]}", fontsize=10)
    _save(fig, path)
    return f"Held-out accuracy of the per-layer predictors fitted on {', '.join(map(str, ns))} profiled subnets."


def _task_table(result: dict, metric: str) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    """(limit -> task -> quality, unseen task names) from either result layout: NumVQA's ``per_limit_task`` +
    ``unseen_tasks``, or AttrOD's ``per_task: {task: {"split", metric: {limit: value}}}``."""
    if isinstance(result.get("per_limit_task"), dict):
        return result["per_limit_task"], list(result.get("unseen_tasks") or [])
    table: dict[str, dict[str, float | None]] = {}
    unseen = []
    for task, row in (result.get("per_task") or {}).items():
        if not isinstance(row, dict):
            continue
        if row.get("split") == "unseen":
            unseen.append(task)
        for lim, v in (row.get(metric) or {}).items():
            table.setdefault(lim, {})[task] = v
    return table, unseen


def unseen_tasks(result: dict, path: Path, title: str = "") -> str:
    """Quality of generated models on unseen (held-out) tasks vs. seen ones, per limit, and per unseen task."""
    plt = _plt()
    seen, unseen = result["seen"], result["unseen"]
    limits = sorted(seen, key=float)
    first: dict[str, Any] = next(iter(seen.values()), {})
    metric = "map50" if "map50" in first else "accuracy"
    label = "mAP@0.5" if metric == "map50" else "accuracy"
    table, names = _task_table(result, metric)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.2]})

    def val(v: Any) -> float:
        return np.nan if v is None else float(v)

    ax1.plot([float(k) for k in limits], [val(seen[k].get(metric)) for k in limits], "o-", label="seen tasks (mean)")
    ax1.plot([float(k) for k in limits if k in unseen], [val(unseen[k].get(metric)) for k in limits if k in unseen],
             "s-", label="unseen tasks (mean)")
    for n in names:
        ax1.plot([float(k) for k in limits], [val(table.get(k, {}).get(n)) for k in limits], lw=0.6, alpha=0.4,
                 color="tab:orange")
    ax1.set_xscale("log")
    ax1.set_xlabel("activation limit")
    ax1.set_ylabel(f"{label} (test split)")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    ax1.set_title("seen vs. unseen tasks (thin: each unseen task)", fontsize=10)
    mid = "0.3" if "0.3" in table else (limits[len(limits) // 2] if limits else "")
    shown = [n for n in names if table.get(mid, {}).get(n) is not None]
    if shown:
        vals = [val(table[mid][n]) for n in shown]
        ax2.barh(range(len(shown)), vals, color="tab:orange")
        ax2.set_yticks(range(len(shown)), shown, fontsize=9 if len(shown) <= 12 else 6)
        for i, v in enumerate(vals):
            ax2.text(min(v, 1.0) - 0.005, i, f"{v:.3f}", ha="right", va="center", fontsize=7, color="white")
        ax2.set_xlim(min(0.5, min(vals) - 0.05), 1.0)
        ax2.invert_yaxis()
        ax2.set_xlabel(f"{label} at limit {mid}")
        ax2.set_title(f"each unseen task at limit {mid} (never trained on)", fontsize=10)
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "the result file has no per-task values of unseen tasks", ha="center")
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path)
    return (f"Generated models for the {len(names)} tasks held out of training (their attributes were trained in "
            f"other combinations) against the seen tasks, per activation limit ({label}).")
