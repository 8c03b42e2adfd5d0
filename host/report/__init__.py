"""``nnf report``: the paper's evaluation, regenerated from what this checkout holds, as one HTML page.

:func:`build_report` reads the shipped generator checkpoints (``host/checkpoints``), the device profiles
(``device_profiles/``) and the benchmark result files (``benchmarks/results/NAME.json``), and writes
``OUT/index.html`` plus one PNG per figure. Tables and figures mirror the paper: NumVQA accuracy vs. limit
(Table 2), AttrOD mAP (when its result exists), the baseline comparison under budgets (Table 3),
customization cost (Table 4), quality vs. latency budget (Fig. 10), activation ratio vs. limit (Fig. 11),
training curves (Fig. 12), predictor accuracy vs. profiled subnets (Fig. 13), unseen tasks (Fig. 14), gate
similarity across tasks and across limits (Fig. 15) and the predictor's predicted-vs-measured scatter.

Nothing is typed in: whatever input is missing is shown as missing, with the command that produces it,
and every figure says which file (and which command) it was drawn from. The page is static (no script,
no external resource) so it opens anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import html
import json
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.errors import ConfigError
from host.report import figures as F
from host.report.sources import RESULTS, ResultFile, default_results_dir, read_result, shipped_checkpoints

REPORT_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#1b1f24;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2.2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #d0d7de;padding:.25em .55em;
text-align:right}th{background:#f6f8fa}td.l,th.l{text-align:left}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.88em;color:#424a53;margin-top:.4em}
.src{font-size:.82em;color:#57606a}.missing{background:#fff8c5;border:1px solid #d4a72c;padding:.6em .9em;
margin:.8em 0;border-radius:4px}.failed{background:#ffebe9;border:1px solid #cf222e;padding:.6em .9em;
margin:.8em 0;border-radius:4px}code{background:#f6f8fa;padding:.1em .3em;border-radius:3px;font-size:.9em}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
"""


@dataclass
class Report:
    out: Path
    index: Path
    figures: list[str] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "index": str(self.index), "figures": self.figures, "missing": self.missing,
                "failed": self.failed, "inputs": self.inputs}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return esc(v)


class _Page:
    """Accumulates the HTML body and the report's bookkeeping."""

    def __init__(self, out: Path, report: Report) -> None:
        self.out = out
        self.report = report
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def missing(self, what: str, path: str, command: str, why: str = "missing") -> None:
        self.report.missing.append({"what": what, "path": path, "command": command, "why": why})
        self.add(f'<div class="missing"><b>Missing:</b> {esc(what)} — <code>{esc(path)}</code> is {esc(why)}. '
                 f"Produce it with:<br><code>{esc(command)}</code></div>")

    def figure(self, name: str, title: str, draw: Callable[[Path], str], source: str) -> None:
        """Draw ``name.png`` with ``draw(path) -> caption``; a failure is shown, never hidden."""
        path = self.out / f"{name}.png"
        try:
            caption = draw(path)
        except Exception as exc:
            self.report.failed.append({"figure": name, "error": f"{type(exc).__name__}: {exc}"})
            self.add(f'<div class="failed"><b>{esc(title)}</b> could not be produced: '
                     f"{esc(type(exc).__name__)}: {esc(exc)}<br><span class=src>{esc(source)}</span></div>")
            path.unlink(missing_ok=True)
            if not isinstance(exc, (ValueError, KeyError, ConfigError)):
                traceback.print_exc()
            return
        self.report.figures.append(path.name)
        self.add(f'<figure><img src="{esc(path.name)}" alt="{esc(title)}"><figcaption><b>{esc(title)}.</b> '
                 f"{esc(caption)}<br><span class=src>Produced by <code>nnf report</code> from {esc(source)}</span>"
                 "</figcaption></figure>")


def _source(rf: ResultFile) -> str:
    cmd = rf.command or rf.spec.command
    when = f", written {rf.written_at}" if rf.written_at else ""
    return f"{rf.path.name} (sha256 {rf.sha256[:12] if rf.sha256 else '?'}{when}; made by `{cmd}`)"


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def build_report(out: Path, *, results_dir: Path | None = None, profiles_dir: Path | None = None,
                 checkpoints: list[Path] | None = None) -> Report:
    """Write ``out/index.html`` and its figures (replacing an earlier report in ``out``). See the module doc."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory; choose a directory for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise ConfigError(f"--out {out} is a non-empty directory without a report in it; choose an empty or new one")
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    from host.fileio import atomic_write_text, staging_dir

    report = Report(out=out, index=out / "index.html")
    with staging_dir(out) as build:
        page = _Page(build, report)
        results = {name: read_result(results_dir, spec) for name, spec in RESULTS.items()}
        ckpts = shipped_checkpoints() if checkpoints is None else [Path(c) for c in checkpoints]
        _write_page(page, results, ckpts, profiles_dir, results_dir)
        atomic_write_text(build / "index.html", _wrap(page))
    return report


def _wrap(page: _Page) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\"><title>NN-Factory evaluation report</title>"
            f"<style>{REPORT_CSS}</style></head><body>\n" + "\n".join(page.parts) + "\n</body></html>\n")


# ---- the page ---------------------------------------------------------------------------------------------


def _write_page(page: _Page, results: dict[str, ResultFile], ckpts: list[Path], profiles_dir: Path | None,
                results_dir: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    commit = _git_commit(root)
    page.add("<h1>NN-Factory — evaluation report</h1>")
    page.add(f"<p class=src>Generated {esc(now)} by <code>nnf report</code>"
             + (f" at commit <code>{esc(commit)}</code>" if commit else "")
             + ". Every number below is read from the files listed under <a href=\"#inputs\">Inputs</a>; "
             "whatever is missing is marked as such with the command that produces it.</p>")
    factories = _load_generators(page, ckpts)

    page.add("<h2 id=\"table2\">Table 2 — NumVQA: accuracy of generated models vs. activation limit</h2>")
    _table2(page, results["numvqa_accuracy"])
    _stale_step(page, results["numvqa_accuracy"], factories, "numvqa")
    page.add("<h2 id=\"attrod\">AttrOD — mAP@0.5 of generated detectors</h2>")
    _attrod(page, results["attrod_accuracy"])
    _stale_step(page, results["attrod_accuracy"], factories, "attrod")
    baselines = _space_parts(results["baselines"])
    page.add("<h2 id=\"table3\">Table 3 — NN-Factory vs. Retrain vs. Prune&amp;Tune under device budgets</h2>")
    for space, part in baselines:
        if len(baselines) > 1:
            page.add(f"<h3>{esc(space)}</h3>")
        _table3(page, part)
        _stale_generator(page, part, factories)
    _skipped_spaces(page, results["baselines"])
    page.add("<h2 id=\"table4\">Table 4 — customization cost</h2>")
    for space, part in baselines:
        if len(baselines) > 1:
            page.add(f"<h3>{esc(space)}</h3>")
        _table4(page, part)
    _one_time(page, results["baselines"], factories)
    page.add("<h2 id=\"fig10\">Fig. 10 — quality vs. latency budget</h2>")
    for space, part in baselines:
        if _usable(page, part, "quality vs. latency budget"):
            page.figure(f"fig10_quality_vs_budget_{space}", f"Fig. 10: quality vs. latency budget ({space})",
                        functools.partial(F.quality_vs_budget, part.data or {}), _source(part))
    page.add("<h2 id=\"fig11\">Fig. 11 — activation ratio vs. limit</h2>")
    _per_generator(page, factories, "fig11_ratio_vs_limit", "Fig. 11: activation ratio vs. limit",
                   lambda f: functools.partial(F.ratio_vs_limit, f))
    page.add("<h2 id=\"fig12\">Fig. 12 — training curves</h2>")
    _per_generator(page, factories, "fig12_training", "Fig. 12: training curves",
                   lambda f: functools.partial(F.training_curves, f.meta))
    page.add("<h2 id=\"fig13\">Fig. 13 — predictor accuracy vs. profiled subnets</h2>")
    if _usable(page, results["predictor_accuracy"], "predictor accuracy vs. profiled subnets"):
        rf = results["predictor_accuracy"]
        page.figure("fig13_predictor_accuracy", "Fig. 13: predictor accuracy vs. profiled subnets",
                    lambda p: F.predictor_accuracy(rf.data or {}, p), _source(rf))
    _profiles_table(page, profiles_dir)
    page.add("<h2 id=\"scatter\">Predicted vs. measured latency and memory</h2>")
    for space, part in baselines:
        if _usable(page, part, "predicted vs. measured (the comparison's final models)"):
            page.figure(f"predicted_vs_measured_{space}", f"Predicted vs. measured latency and memory ({space})",
                        functools.partial(F.predicted_vs_measured, part.data or {}), _source(part))
    page.add("<h2 id=\"fig14\">Fig. 14 — unseen tasks</h2>")
    for name, space in (("numvqa_accuracy", "NumVQA"), ("attrod_accuracy", "AttrOD")):
        if _usable(page, results[name], f"{space} unseen tasks"):
            rf = results[name]
            page.figure(f"fig14_unseen_tasks_{space.lower()}", f"Fig. 14: unseen tasks ({space})",
                        functools.partial(F.unseen_tasks, rf.data or {}, title=f"{space}: unseen tasks"), _source(rf))
    page.add("<h2 id=\"fig15\">Fig. 15 — gate similarity across tasks and across limits</h2>")
    _per_generator(page, factories, "fig15_tasks", "Fig. 15a: gate similarity across tasks",
                   lambda f: functools.partial(F.gate_similarity_tasks, f))
    _per_generator(page, factories, "fig15_limits", "Fig. 15b: gate similarity across limits",
                   lambda f: functools.partial(F.gate_similarity_limits, f))
    _inputs(page, results, results_dir, ckpts)


def _load_generators(page: _Page, ckpts: list[Path]) -> list[tuple[Any, str]]:
    from host.errors import NNFactoryError
    from host.generate import ModelFactory

    out = []
    for c in ckpts:
        try:
            factory = ModelFactory.load(checkpoint=c)
        except (NNFactoryError, OSError) as exc:
            page.report.failed.append({"figure": f"generator {c.name}", "error": str(exc)})
            page.add(f'<div class="failed">Generator checkpoint <code>{esc(c)}</code> could not be loaded: '
                     f"{esc(exc)}</div>")
            continue
        step = factory.meta.get("train_state", {}).get("step")
        sha = factory.meta.get("files", {}).get("model.safetensors", "?")
        out.append((factory, f"the generator checkpoint {c.name} (step {step}, model sha256 {sha[:12]}), "
                             "its assembler run here for the figure"))
        page.report.inputs.append({"kind": "checkpoint", "path": str(c), "step": step, "sha256": sha})
    return out


def _per_generator(page: _Page, factories: list[tuple[Any, str]], name: str, title: str,
                   draw: Callable[[Any], Callable[[Path], str]]) -> None:
    """One figure per shipped generator (``name_<space>.png``); without any, say how to get one."""
    for factory, ckpt_src in factories:
        space = factory.space.name
        page.figure(f"{name}_{space}", f"{title} ({space})", draw(factory), ckpt_src)
    if not factories:
        _no_generator(page)


def _no_generator(page: _Page) -> None:
    page.missing("a trained generator checkpoint", "host/checkpoints/<space>_*",
                 "nnf train --space numvqa --out runs/numvqa && python scripts/ship_checkpoint.py runs/numvqa")


def _space_parts(rf: ResultFile) -> list[tuple[str, ResultFile]]:
    """A comparison result per task space (a result of several spaces keeps each one's figures apart)."""
    d = rf.data
    if d is None:
        return [("", rf)]
    by_space = d.get("by_space")
    if not isinstance(by_space, dict) or not by_space:
        return [(str(d.get("space", "")), rf)]
    out = []
    for space, part in by_space.items():
        rows = [r for r in d.get("scenarios", []) if r.get("space") == space]
        out.append((space, dataclasses.replace(rf, data={**part, "scenarios": rows, "quick": d.get("quick")})))
    return out


def _skipped_spaces(page: _Page, rf: ResultFile) -> None:
    for space, why in ((rf.data or {}).get("skipped_spaces") or {}).items():
        page.add(f'<div class="missing"><b>{esc(space)}</b> was not compared: {esc(why)}</div>')


def _usable(page: _Page, rf: ResultFile, what: str) -> bool:
    if rf.present:
        return True
    page.missing(f"{rf.spec.what} (needed for: {what})", str(rf.path), rf.spec.command, rf.problem or "missing")
    return False


def _table2(page: _Page, rf: ResultFile) -> None:
    if not _usable(page, rf, "Table 2"):
        return
    d = rf.data or {}
    limits = sorted(set(d.get("seen", {})) | set(d.get("unseen", {})), key=float)
    rows = []
    for k in limits:
        s, u = d.get("seen", {}).get(k, {}), d.get("unseen", {}).get(k, {})
        rows.append(f"<tr><td>{esc(k)}</td><td>{_fmt(s.get('accuracy'))}</td><td>{_fmt(s.get('activation_ratio'), '.3f')}"
                    f"</td><td>{_fmt(u.get('accuracy'))}</td><td>{_fmt(u.get('activation_ratio'), '.3f')}</td></tr>")
    tasks = d.get("tasks", {})
    page.add("<table><tr><th>limit</th><th>seen accuracy</th><th>seen ratio</th><th>unseen accuracy</th>"
             f"<th>unseen ratio</th></tr>{''.join(rows)}</table>")
    page.add(f"<p class=src>{esc(tasks.get('seen', '?'))} seen and {esc(tasks.get('unseen', '?'))} unseen tasks, "
             f"{esc(d.get('per_task_samples', '?'))} balanced test questions per task and limit; checkpoint step "
             f"{esc(d.get('checkpoint_step', '?'))}. Ratio never above the limit: "
             f"{_fmt(d.get('ratio_never_above_limit'))}. Source: {esc(_source(rf))}</p>")


def _attrod(page: _Page, rf: ResultFile) -> None:
    if not _usable(page, rf, "the AttrOD table"):
        return
    d = rf.data or {}
    rows = []
    for split in ("seen", "unseen"):
        for k, v in sorted((d.get(split) or {}).items(), key=lambda kv: float(kv[0])):
            m = v.get("map50", v.get("mAP@0.5", v.get("map")))
            rows.append(f"<tr><td class=l>{split}</td><td>{esc(k)}</td><td>{_fmt(m)}</td>"
                        f"<td>{_fmt(v.get('activation_ratio'), '.3f')}</td></tr>")
    if not rows:
        page.add(f'<div class="failed">{esc(rf.path.name)} holds no per-limit seen/unseen mAP; its keys: '
                 f"{esc(', '.join(sorted(d)))}</div>")
        return
    page.add("<table><tr><th class=l>tasks</th><th>limit</th><th>mAP@0.5</th><th>ratio</th></tr>"
             + "".join(rows) + "</table>")
    page.add(f"<p class=src>Source: {esc(_source(rf))}</p>")


def _ok(v: bool | None) -> str:
    if v is None:
        return "—"
    return '<span class="ok">✓</span>' if v else '<span class="bad">✗</span>'


def _stale_step(page: _Page, rf: ResultFile, factories: list[tuple[Any, str]], space: str) -> None:
    """Say so when an accuracy result was measured on another checkpoint step than the one shipped now."""
    step = (rf.data or {}).get("checkpoint_step")
    for factory, _src in factories:
        shipped = factory.meta.get("train_state", {}).get("step")
        if factory.space.name == space and step is not None and shipped is not None and step != shipped:
            page.add(f'<div class="missing"><b>Out of date:</b> measured on checkpoint step {esc(step)}; the shipped '
                     f"{esc(space)} checkpoint is step {esc(shipped)}. Re-run: <code>{esc(rf.spec.command)}</code></div>")


def _stale_generator(page: _Page, rf: ResultFile, factories: list[tuple[Any, str]]) -> None:
    """Say so when a comparison's NN-Factory models came from another checkpoint than the one shipped now."""
    d = rf.data or {}
    used = (d.get("checkpoint") or {}).get("model_sha256")
    for factory, _src in factories:
        if factory.space.name != d.get("space"):
            continue
        shipped = factory.meta.get("files", {}).get("model.safetensors")
        if used and shipped and used != shipped:
            page.add(f'<div class="missing"><b>Out of date:</b> these NN-Factory models were generated from checkpoint '
                     f"sha256 {esc(used[:12])} (step {esc((d.get('checkpoint') or {}).get('step'))}); the shipped "
                     f"{esc(factory.space.name)} checkpoint is now {esc(shipped[:12])} (step "
                     f"{esc(factory.meta.get('train_state', {}).get('step'))}). Re-run: <code>{esc(rf.spec.command)}</code>"
                     "</div>")


def _table3(page: _Page, rf: ResultFile) -> None:
    if not _usable(page, rf, "Table 3"):
        return
    d = rf.data or {}
    metric = d.get("metric", "accuracy")
    head = ("<tr><th class=l rowspan=2>task</th><th rowspan=2>budget ms</th>"
            + "".join(f"<th colspan=4>{esc(lbl)}</th>" for lbl in F.METHOD_LABELS.values())
            + "</tr><tr>" + f"<th>{esc(metric)}</th><th>measured ms</th><th>fits</th><th>ratio</th>" * 3 + "</tr>")
    rows = []
    for r in d["scenarios"]:
        cells = []
        for m in F.METHOD_LABELS:
            e = r.get(m, {})
            if e.get("accuracy") is None:
                cells.append(f"<td colspan=4 class=l>not available: {esc(e.get('error', '?'))}</td>")
                continue
            cells.append(f"<td>{_fmt(e['accuracy'])}</td><td>{_fmt(e.get('measured_latency_ms'), '.3f')}</td>"
                         f"<td>{_ok(e.get('meets_budget'))}</td><td>{_fmt(e.get('activation_ratio'), '.3f')}</td>")
        split = r.get("task_split")
        task = esc(r["task"]) + (" <i>(unseen)</i>" if split == "unseen" else "")
        rows.append(f"<tr><td class=l>{task}</td><td>{_fmt(r['budget_ms'], '.2f')}</td>{''.join(cells)}</tr>")
    mean = d.get("mean", {})
    rows.append("<tr><th class=l colspan=2>mean</th>" + "".join(
        f"<th>{_fmt(mean.get(m))}</th><th colspan=3></th>" for m in F.METHOD_LABELS) + "</tr>")
    page.add(f"<table>{head}{''.join(rows)}</table>")
    t = d.get("targets", {})
    dev = d.get("device", {})
    init = d.get("baseline_init", {})
    st = d.get("settings", {})
    quick = " <b>(a --quick run: its figures say nothing about the methods)</b>" if d.get("quick") else ""
    page.add(
        f"<p class=src>{len(d['scenarios'])} scenarios on device <code>{esc(dev.get('name'))}</code> "
        f"(latency = {esc(dev.get('latency_statistic'))} of the agent's timed runs, runtime {esc(dev.get('runtime'))}); "
        f"{esc(metric)} on {esc(st.get('test_per_task'))} test {'questions' if metric == 'accuracy' else 'scenes'} per "
        "scenario, the same for all three methods. "
        f"Both baselines start from <code>{esc(init.get('init'))}</code> weights; Retrain trains "
        f"{esc(st.get('retrain', {}).get('train', {}).get('steps'))} steps, the unified model "
        f"{esc(st.get('unified', {}).get('train', {}).get('steps'))} steps, Prune&amp;Tune fine-tunes "
        f"{esc(st.get('prune_tune', {}).get('finetune', {}).get('steps'))} steps (batch "
        f"{esc(st.get('retrain', {}).get('train', {}).get('batch_size'))}).{quick}<br>"
        f"Targets: NN-Factory within 2 points of Retrain {_ok(t.get('nnfactory_within_2_points_of_retrain'))}, "
        f"above Prune&amp;Tune {_ok(t.get('nnfactory_above_prune_tune'))}, every NN-Factory model within its budget "
        f"as measured {_ok(t.get('nnfactory_meets_every_budget'))}. Source: {esc(_source(rf))}</p>")


def _table4(page: _Page, rf: ResultFile) -> None:
    if _usable(page, rf, "Table 4 (per-scenario cost)"):
        d = rf.data or {}
        rows = []
        for r in d["scenarios"]:
            cells = "".join(f"<td>{_fmt(r.get(m, {}).get('seconds'), '.3f' if m == 'nnfactory' else '.1f')}</td>"
                            for m in F.METHOD_LABELS)
            rows.append(f"<tr><td class=l>{esc(r['task'])}</td><td>{_fmt(r['budget_ms'], '.2f')}</td>{cells}</tr>")
        cs = d.get("customize_seconds", {})
        rows.append("<tr><th class=l colspan=2>mean</th>" + "".join(
            f"<th>{_fmt(cs.get(m), '.3f' if m == 'nnfactory' else '.1f')}</th>" for m in F.METHOD_LABELS) + "</tr>")
        page.add("<table><tr><th class=l>task</th><th>budget ms</th>" + "".join(
            f"<th>{esc(lbl)} s</th>" for lbl in F.METHOD_LABELS.values()) + f"</tr>{''.join(rows)}</table>")
        t = d.get("targets", {})
        page.add(f"<p class=src>Seconds per scenario on this machine: NN-Factory = request → extracted model with the "
                 "generator and the device profile loaded (search + extraction); Retrain = sizing + training; "
                 "Prune&amp;Tune = pruning search + fine-tuning. Retrain / NN-Factory = "
                 f"<b>{_fmt(t.get('speedup_vs_retrain'), '.0f')}×</b> (target ≥ 1000× "
                 f"{_ok(t.get('speedup_at_least_1000'))}; paper: 3.6 s per scenario, ~4000×)"
                 + (f"; in process CPU seconds, which do not depend on how busy the machine was in each phase: "
                    f"<b>{_fmt(t.get('cpu_speedup_vs_retrain'), '.0f')}×</b>" if t.get("cpu_speedup_vs_retrain") else "")
                 + f". Source: {esc(_source(rf))}</p>")


def _one_time(page: _Page, rf: ResultFile, factories: list[tuple[Any, str]]) -> None:
    """One-time preparation: generator training (from the checkpoints), the baselines' own, campaigns."""
    rows = []
    for factory, _src in factories:
        ts = factory.meta.get("train_state", {})
        warm = ts.get("warm_start") or {}
        total = float(ts.get("seconds") or 0.0) + float(warm.get("source_seconds") or 0.0)
        note = (f"this run {float(ts.get('seconds') or 0):.0f} s + the run it was warm-started from "
                f"{float(warm.get('source_seconds') or 0):.0f} s") if warm.get("source_seconds") else "recorded step time"
        rows.append(f"<tr><td class=l>NN-Factory supernet + assembler training ({esc(factory.space.name)})</td>"
                    f"<td>{total:.0f}</td><td class=l>checkpoint train_state ({esc(note)}; step {esc(ts.get('step'))})</td></tr>")
    if rf.present:
        ot = (rf.data or {}).get("one_time_seconds", {})
        labels = {"baselines_backbone_pretraining": "baselines' backbone pre-training",
                  "prune_tune_unified_training": "Prune&Tune unified model training",
                  "device_campaign": "profiling campaign of the device"}
        for key, label in labels.items():
            v = ot.get(key)
            if key == "baselines_backbone_pretraining" and v is None:
                continue
            extra = (f" ({ot.get('device_campaign_samples')} subnets)" if key == "device_campaign"
                     and ot.get("device_campaign_samples") else "")
            rows.append(f"<tr><td class=l>{esc(label)}{esc(extra)}</td><td>{_fmt(v, '.0f')}</td><td class=l>"
                        + ("baselines.json" if v is not None else
                           "not recorded (the device profile does not store its campaign's duration)")
                        + "</td></tr>")
    if rows:
        page.add("<h3>One-time preparation</h3><table><tr><th class=l>step</th><th>seconds</th>"
                 f"<th class=l>from</th></tr>{''.join(rows)}</table>")


def _profiles_table(page: _Page, profiles_dir: Path | None) -> None:
    from host.profiling.device_profile import default_profiles_dir, list_devices, profile_path, read_profile

    root = Path(profiles_dir) if profiles_dir is not None else None
    devices = list_devices(root)
    if not devices:
        page.missing("a fitted device profile", str(root or default_profiles_dir()), "nnf profile --device D --agent HOST:PORT && nnf fit --device D")
        return
    rows = []
    for dev in devices:
        try:
            data = read_profile(dev, root)
        except Exception as exc:
            rows.append(f"<tr><td class=l>{esc(dev)}</td><td colspan=5 class=l>unreadable: {esc(exc)}</td></tr>")
            continue
        page.report.inputs.append({"kind": "device_profile", "path": str(profile_path(dev, root))})
        for key, e in sorted(data.get("profiles", {}).items()):
            acc = e.get("accuracy", {})
            lat = acc.get("latency", {})
            lat = lat.get("improved", lat) if isinstance(lat, dict) else {}
            mem = acc.get("memory", {}) if isinstance(acc.get("memory"), dict) else {}
            if not lat and isinstance(e.get("percentiles"), dict):
                pct = e.get("default_percentile") or next(iter(e["percentiles"]), None)
                lat = (e["percentiles"].get(pct, {}).get("accuracy", {}) or {}).get("improved", {})
            rows.append(f"<tr><td class=l>{esc(dev)}</td><td class=l>{esc(key)}</td>"
                        f"<td>{esc((e.get('samples') or {}).get('train', '—'))}</td>"
                        f"<td>{_fmt(lat.get('within_10pct'), '.2f')}</td><td>{_fmt(lat.get('mape'), '.3f')}</td>"
                        f"<td>{_fmt(mem.get('within_5pct'), '.2f')}</td></tr>")
    page.add("<p>Held-out accuracy of the shipped device profiles (from the profile files themselves):</p>"
             "<table><tr><th class=l>device</th><th class=l>supernet/runtime</th><th>fitted on</th>"
             f"<th>latency ±10 %</th><th>latency MAPE</th><th>memory ±5 %</th></tr>{''.join(rows)}</table>")


def _inputs(page: _Page, results: dict[str, ResultFile], results_dir: Path, ckpts: list[Path]) -> None:
    rows = []
    for rf in results.values():
        status = '<span class="ok">present</span>' if rf.present else f'<span class="bad">{esc(rf.problem)}</span>'
        cmd = rf.command or rf.spec.command
        rows.append(f"<tr><td class=l><code>{esc(rf.path.name)}</code></td><td class=l>{esc(rf.spec.what)}</td>"
                    f"<td class=l>{status}</td><td class=l>{esc(rf.written_at or '—')}</td>"
                    f"<td class=l><code>{esc(cmd)}</code></td></tr>")
        page.report.inputs.append({"kind": "result", "path": str(rf.path), "present": rf.present,
                                   "sha256": rf.sha256, "command": cmd})
    page.add("<h2 id=\"inputs\">Inputs</h2>"
             f"<p class=src>Benchmark results from <code>{esc(results_dir)}</code>; generator checkpoints: "
             f"{esc(', '.join(str(c) for c in ckpts) or 'none')}.</p>"
             "<table><tr><th class=l>file</th><th class=l>holds</th><th class=l>status</th><th class=l>written</th>"
             f"<th class=l>command</th></tr>{''.join(rows)}</table>")
    page.add("<p class=src>Regenerate this page: <code>nnf report --out DIR</code> (add <code>--json</code> for a "
             f"machine-readable summary).</p><!-- {esc(json.dumps(sorted(results)))} -->")
