"""NN-Factory vs. Retrain vs. Prune&Tune, scenario by scenario, on one device (the paper's Table 3 / 4).

A *scenario* is a task of a space plus a device latency budget (and optionally a memory budget). For each
scenario all three methods get the same device profile, the same training data, the same test set and the
same metric:

* **NN-Factory**: the generator (loaded once, like the device profile) searches the largest activation limit
  whose predicted latency/memory fit and extracts the model — no data, no training
  (``host.profiling.budget.generate_for_device``); its seconds are request → extracted model;
* **Retrain**: ``host.baselines.retrain``; its seconds are sizing + training;
* **Prune&Tune**: ``host.baselines.prune_tune``; its seconds are pruning + fine-tuning, the unified model
  being a one-time cost (reported apart, as NN-Factory's supernet training is).

Both baselines start from the same initial network (``settings.init``): ``generator`` (default: the
generator checkpoint's supernet weights, the strongest start for the least training), ``pretrained`` (the
backbone of :mod:`host.baselines.backbone`, pre-trained once with every module on) or ``scratch``.

Work is split in two phases so the CPU-heavy one can run in the background while the timing-sensitive one
runs on a quiet machine: :meth:`Comparison.train` trains (and caches in ``work_dir``) every baseline
model and scores it on the test set; :meth:`Comparison.measure` generates NN-Factory's models and measures
every final model on the device's agent (latency at the profile's statistic, peak memory). Trained models
are cached by *architecture* (task, the widths the sizing or the pruning chose, settings, initial network),
so a changed device profile or budget only retrains the scenarios whose architecture changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from host.baselines.backbone import INIT_CHOICES, load_backbone, pretrain_backbone
from host.baselines.data import TaskAdapter, adapter_for
from host.baselines.device import AgentMeter, latency_statistic, load_device, predict_counts
from host.baselines.models import ScenarioBudget, counts_of
from host.baselines.prune_tune import (
    PruneTuneConfig,
    UnifiedConfig,
    UnifiedModel,
    fine_tune,
    fold_task,
    load_unified,
    prune_to_budget,
    pruned_meta,
    save_unified,
    train_unified,
)
from host.baselines.retrain import RetrainConfig, retrain, size_uniform
from host.errors import ConfigError, SearchError
from host.supernets import Supernet

METHODS = ("nnfactory", "retrain", "prune_tune")
BASELINES = ("retrain", "prune_tune")
RESULT_FORMAT = "nnfactory.baselines-comparison"
RESULT_VERSION = 1


@dataclass(frozen=True)
class Scenario:
    task: str
    budget: ScenarioBudget

    def key(self) -> str:
        slug = "".join(ch if ch.isalnum() else "-" for ch in self.task).strip("-")
        mem = f"-{self.budget.memory_mb:g}MB" if self.budget.memory_mb is not None else ""
        return f"{slug}@{self.budget.latency_ms:g}ms{mem}"


@dataclass
class ComparisonSettings:
    device: str
    init: str = "generator"  # initial network of both baselines: generator | pretrained | scratch
    backbone_steps: int = 500  # pre-training steps of the backbone (init "pretrained")
    backbone_batch_size: int = 64
    # init "pretrained": an existing pre-training checkpoint instead of training one; init "generator": a generator
    # checkpoint other than the one being compared (default: that one)
    backbone_checkpoint: Path | None = None
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    unified: UnifiedConfig = field(default_factory=UnifiedConfig)
    prune_tune: PruneTuneConfig = field(default_factory=PruneTuneConfig)
    test_per_task: int = 1000  # balanced test questions per scenario (MNIST test split)
    test_seed: int = 4321
    threads: int = 1  # torch CPU threads for training and evaluation

    def __post_init__(self) -> None:
        if self.init not in INIT_CHOICES:
            raise ConfigError(f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        self.retrain.init = self.init
        self.unified.init = self.init

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "init": self.init, "backbone_steps": self.backbone_steps,
                "backbone_batch_size": self.backbone_batch_size,
                "backbone_checkpoint": str(self.backbone_checkpoint) if self.backbone_checkpoint else None,
                "retrain": self.retrain.to_json(), "unified": self.unified.to_json(),
                "prune_tune": self.prune_tune.to_json(), "test_per_task": self.test_per_task,
                "test_seed": self.test_seed, "threads": self.threads}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


def _say(msg: str) -> None:
    print(f"[baselines] {msg}", file=sys.stderr, flush=True)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class Comparison:
    """One generator (task space + supernet + assembler), one device, one work directory."""

    def __init__(self, factory: Any, settings: ComparisonSettings, work_dir: Path, *,
                 profiles_root: Path | None = None, predictor: Any = None, log: Callable[[str], None] = _say) -> None:
        self.factory = factory
        self.settings = settings
        self.space = factory.space
        self.supernet = factory.models.supernet.eval()
        self.layout = self.supernet.gate_layout()
        # the device's predictor (a DevicePredictor); loaded from its profile unless given
        self.predictor = predictor if predictor is not None else load_device(settings.device, self.layout, profiles_root)
        self.adapter: TaskAdapter = adapter_for(self.space)
        self.work_dir = Path(work_dir) / self.space.name
        self.log = log
        self._tests: dict[str, Any] = {}
        self._init: tuple[Supernet | None, dict[str, Any]] | None = None
        self._unified: tuple[UnifiedModel, dict] | None = None
        self.checkpoint_sha = factory.meta.get("files", {}).get("model.safetensors") or str(factory.checkpoint)
        entry = self.predictor.entry
        self.profile_digest = _digest({"device": settings.device, **{k: entry.get(k) for k in (
            "latency", "memory", "percentiles", "latency_statistic", "fitted_at", "memory_margin")},
            "percentile": getattr(self.predictor, "percentile", None)})

    # ---- shared pieces ----------------------------------------------------------------------------

    def test_set(self, task: str) -> Any:
        if task not in self._tests:
            self._tests[task] = self.adapter.test_set(self.space.task(task), self.settings.test_per_task,
                                                      self.settings.test_seed)
        return self._tests[task]

    def score(self, model: torch.nn.Module, task: str) -> float:
        with torch.no_grad():
            return self.adapter.score(model.eval(), self.test_set(task))

    def check_scenarios(self, scenarios: Sequence[Scenario]) -> None:
        for s in scenarios:
            task = self.space.task(s.task)  # raises with suggestions
            if task not in self.space.tasks:
                raise ConfigError(f"scenario task {s.task!r} is not listed in space {self.space.name!r}")

    # ---- one-time preparation -----------------------------------------------------------------------

    def init_net(self) -> tuple[Supernet | None, dict[str, Any]]:
        """The network both baselines start from, and facts about it (what, its sha, its training cost)."""
        if self._init is not None:
            return self._init
        s = self.settings
        if s.init == "scratch":
            self._init = (None, {"init": "scratch"})
        elif s.init == "generator":
            if s.backbone_checkpoint is None:  # the generator being compared
                self._init = (self.supernet, {"init": "generator", "model_sha256": self.checkpoint_sha,
                                              "path": str(self.factory.checkpoint),
                                              "step": self.factory.meta.get("train_state", {}).get("step")})
            else:  # another generator checkpoint of the same supernet (e.g. the one the baselines were trained from)
                net, facts = load_backbone(s.backbone_checkpoint, self.space, phase=None)
                self._init = (net, {"init": "generator", **facts})
        else:
            path = s.backbone_checkpoint
            if path is None:
                key = _digest({"space": self.space.name, "backbone": self.factory.models.backbone,
                               "steps": s.backbone_steps, "batch": s.backbone_batch_size})
                path = self.work_dir / f"backbone-{key}"
                if not (path / "latest.json").is_file() or (_read_json(path / "latest.json") or {}).get("step", 0) < s.backbone_steps:
                    self.log(f"pre-training the baselines' backbone: {s.backbone_steps} steps x "
                             f"{s.backbone_batch_size}, every module on -> {path}")
                    pretrain_backbone(self.space.name, self.factory.models.backbone, path, steps=s.backbone_steps,
                                      batch_size=s.backbone_batch_size, threads=s.threads)
            net, facts = load_backbone(path, self.space, phase="pretrain")
            self._init = (net, {"init": "pretrained", **facts})
        return self._init

    def _unified_key(self) -> str:
        _, facts = self.init_net()
        tasks = [t.name for t in self.space.tasks if t.split in ("seen", "extra")]
        return _digest({"cfg": self.settings.unified.to_json(), "tasks": tasks, "init": facts.get("model_sha256"),
                        "init_kind": facts["init"]})

    def unified(self) -> tuple[UnifiedModel, dict]:
        """The Prune&Tune unified model: loaded from the work directory, else trained and saved there."""
        if self._unified is not None:
            return self._unified
        cfg = self.settings.unified
        path = self.work_dir / f"unified-{self._unified_key()}"
        if (path / "unified.json").is_file():
            model, meta = load_unified(path, self.supernet, self.space)
            self.log(f"unified model: reusing {path}")
        else:
            init, _ = self.init_net()
            self.log(f"unified model: training ({cfg.train.steps} steps x {cfg.train.batch_size}, init {cfg.init})")
            torch.set_num_threads(self.settings.threads)
            model, log = train_unified(self.supernet, self.space, self.adapter, cfg, init_net=init)
            save_unified(model, log, cfg, self.space, path)
            meta = json.loads((path / "unified.json").read_text())
            self.log(f"unified model: {log.steps} steps in {log.seconds:.0f} s -> {path}")
        self._unified = (model, meta)
        return self._unified

    # ---- phase 1: the baselines' models -----------------------------------------------------------------

    def _record_path(self, s: Scenario, method: str) -> Path:
        # keyed by the method's settings too: a record made with other training settings is not reused
        return self.work_dir / "scenarios" / self.profile_digest / s.key() / f"{method}-{self._method_key(method)}.json"

    def _method_key(self, method: str) -> str:
        """Digest of everything besides the scenario that decides a baseline's model (settings, init, test set)."""
        _, facts = self.init_net()
        common = {"test": [self.settings.test_per_task, self.settings.test_seed],
                  "init": [facts["init"], facts.get("model_sha256")]}
        if method == "retrain":
            return _digest({**common, "cfg": self.settings.retrain.to_json()})
        return _digest({**common, "prune_tune": self.settings.prune_tune.to_json(), "unified": self._unified_key()})

    def record(self, s: Scenario, method: str) -> dict | None:
        """What the training phase decided for a scenario (model directory or an error), if done."""
        rec = _read_json(self._record_path(s, method))
        if rec is None:
            return None
        if "error" in rec:
            return rec
        model_dir = Path(rec.get("model_dir", ""))
        return rec if (model_dir / "result.json").is_file() and (model_dir / "model").is_dir() else None

    def _model_dir(self, method: str, task: str, arch: Any) -> Path:
        _, facts = self.init_net()
        common = {"task": task, "arch": arch, "test": [self.settings.test_per_task, self.settings.test_seed],
                  "init": [facts["init"], facts.get("model_sha256")]}
        if method == "retrain":
            key = _digest({**common, "cfg": self.settings.retrain.to_json()})
        else:
            key = _digest({**common, "finetune": self.settings.prune_tune.finetune.to_json(),
                           "unified": self._unified_key()})
        return self.work_dir / "models" / method / _slug(task) / key

    def train(self, scenarios: Sequence[Scenario], methods: Sequence[str] = BASELINES) -> None:
        """Make (or reuse) every baseline model of ``scenarios`` and score it on the test set."""
        from host.fileio import write_json_atomic

        self.check_scenarios(scenarios)
        torch.set_num_threads(self.settings.threads)
        for i, s in enumerate(scenarios):
            for method in methods:
                if method not in BASELINES:
                    raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
                if self.record(s, method) is not None:
                    continue
                self.log(f"[{i + 1}/{len(scenarios)}] {method}: {s.task} @ {s.budget.describe()}")
                try:
                    rec = self._train_one(s, method)
                except SearchError as exc:
                    rec = {"error": str(exc)}
                    self.log(f"    cannot meet the budget: {exc}")
                rec.update({"task": s.task, "budget": s.budget.to_json(), "method": method})
                write_json_atomic(self._record_path(s, method), rec)

    def _train_one(self, s: Scenario, method: str) -> dict[str, Any]:
        from host.artifact import load_compact
        from host.fileio import write_json_atomic

        task = self.space.task(s.task)
        init, _ = self.init_net()
        t0, c0 = time.perf_counter(), time.process_time()
        if method == "retrain":
            size = size_uniform(self.layout, self.predictor, s.budget, self.settings.retrain.width_grid)
            sizing = size.to_json()
            arch: Any = size.counts
        else:
            unified, _ = self.unified()
            t0, c0 = time.perf_counter(), time.process_time()
            pruned, kept, sizing = prune_to_budget(unified, self.predictor, s.budget, self.settings.prune_tune)
            arch = {n: k.tolist() for n, k in kept.items()}
        decide_s, decide_cpu = time.perf_counter() - t0, time.process_time() - c0
        model_dir = self._model_dir(method, s.task, arch)
        result = _read_json(model_dir / "result.json") if (model_dir / "model").is_dir() else None
        if result is None:
            if method == "retrain":
                model = retrain(self.supernet, self.adapter, task, s.budget, self.predictor, self.settings.retrain,
                                init_net=init, size=size)
                train_s, log = model.seconds, model.train
                compact = model.compact
            else:
                compact = fold_task(pruned, kept, self.space.encode([task])[0], self.supernet,
                                    pruned_meta(task, s.budget, sizing))
                log = fine_tune(compact, self.adapter, task, self.settings.prune_tune.finetune)
                train_s = log.seconds
            acc = self.score(compact, s.task)
            from host.artifact import save_compact

            save_compact(compact, model_dir / "model", meta={"baseline": {"method": method, "train": log.to_json()}})
            result = {"method": method, "task": s.task, "accuracy": acc, "train": log.to_json(),
                      "train_seconds": round(train_s, 3), "cpu_seconds": round(log.cpu_seconds, 3),
                      "counts": counts_of(load_compact(model_dir / "model"))}
            write_json_atomic(model_dir / "result.json", result)
            self.log(f"    {self.adapter.metric} {acc:.4f}, {log.steps} steps, {train_s:.0f} s "
                     f"(stopped by {log.stopped_by})")
        else:
            self.log(f"    same architecture already trained: {model_dir}")
        seconds = decide_s + float(result["train_seconds"])
        return {"model_dir": str(model_dir), "sizing": {k: v for k, v in sizing.items() if k != "trials"},
                "seconds_decide": round(decide_s, 3), "seconds": round(seconds, 3),
                "cpu_seconds": round(decide_cpu + float(result["cpu_seconds"]), 3)}

    # ---- phase 2: NN-Factory's models and every measurement --------------------------------------------

    def nnfactory(self, s: Scenario) -> tuple[Any, dict[str, Any]]:
        """Generate NN-Factory's model for a scenario (profile and generator already loaded)."""
        from host.baselines.device import generate_for_budget

        return generate_for_budget(self.factory, s.task, self.settings.device, s.budget, self.predictor)

    def measure(self, scenarios: Sequence[Scenario], agent: str, *, token: str | None = None,
                train_missing: bool = True) -> dict[str, Any]:
        """Generate, measure and collect every scenario; returns the comparison result (see module doc)."""
        from host.artifact import load_compact

        self.check_scenarios(scenarios)
        missing = [s for s in scenarios for m in BASELINES if self.record(s, m) is None]
        if missing and not train_missing:
            raise ConfigError(f"{len(missing)} baseline model(s) are not trained yet (first: {missing[0].key()}); "
                              "run the training phase first")
        if missing:
            self.train(scenarios)
        torch.set_num_threads(1)
        self.generate(scenarios[0])  # warm-up: first-call costs (allocations, lazy imports) are not per scenario
        rows = []
        shape = tuple(self.supernet.input_shape)
        with AgentMeter(agent, self.predictor, token=token) as meter:
            device_info = meter.device_info()
            for i, s in enumerate(scenarios):
                self.log(f"[{i + 1}/{len(scenarios)}] measuring {s.task} @ {s.budget.describe()}")
                row: dict[str, Any] = {"space": self.space.name, "task": s.task,
                                       "task_split": self.space.task(s.task).split,
                                       "budget_ms": s.budget.latency_ms, "budget_memory_mb": s.budget.memory_mb}
                c0 = time.process_time()
                try:
                    compact, rep = self.nnfactory(s)
                except SearchError as exc:
                    row["nnfactory"] = _failed(str(exc))
                else:
                    cpu = time.process_time() - c0
                    entry = self._entry(compact, s, meter, shape)
                    entry.update({"seconds": rep["seconds"], "cpu_seconds": round(cpu, 4),
                                  "seconds_search": rep["seconds_search"],
                                  "seconds_extract": rep["seconds_extract"], "limit": rep["limit"],
                                  "search_rounds": rep["search"]["rounds"]})
                    row["nnfactory"] = entry
                for method in BASELINES:
                    rec = self.record(s, method) or {"error": "not trained"}
                    if "error" in rec:
                        row[method] = _failed(rec["error"])
                        continue
                    model_dir = Path(rec["model_dir"])
                    result = _read_json(model_dir / "result.json") or {}
                    entry = self._entry(load_compact(model_dir / "model"), s, meter, shape, accuracy=result["accuracy"])
                    train = result["train"]
                    entry.update({"seconds": rec["seconds"], "seconds_decide": rec["seconds_decide"],
                                  "cpu_seconds": rec.get("cpu_seconds", result["cpu_seconds"]),
                                  "train": {k: train[k] for k in ("steps", "images", "seconds", "cpu_seconds", "stopped_by")},
                                  "sizing": rec["sizing"]})
                    row[method] = entry
                rows.append(row)
                self.log("    " + "  ".join(
                    f"{m}: {_fmt(row[m].get('accuracy'))} @ {_fmt(row[m].get('measured_latency_ms'))} ms"
                    for m in METHODS))
        return self.result(rows, device_info)

    def generate(self, s: Scenario) -> None:
        with contextlib.suppress(SearchError):
            self.nnfactory(s)

    def _entry(self, compact: Any, s: Scenario, meter: AgentMeter, shape: tuple[int, ...],
               accuracy: float | None = None) -> dict[str, Any]:
        counts = counts_of(compact)
        lat_p, mem_p = predict_counts(self.predictor, [counts])
        lat_b, mem_b = predict_counts(self.predictor, [counts], bound=True)
        measured = meter.measure(compact, shape)
        acc = self.score(compact, s.task) if accuracy is None else accuracy
        return {
            "accuracy": round(acc, 6),
            "measured_latency_ms": round(measured.latency_ms, 4),
            "measured_memory_mb": round(measured.memory_mb, 3),
            "measured_median_ms": round(measured.median_ms, 4),
            "predicted_latency_ms": round(float(lat_p[0]), 4),
            "predicted_memory_mb": round(float(mem_p[0]), 3),
            "bound_latency_ms": round(float(lat_b[0]), 4),
            "bound_memory_mb": round(float(mem_b[0]), 3),
            "meets_budget": bool(s.budget.fits(measured.latency_ms, measured.memory_mb)),
            "activation_ratio": round(compact.spec.activation_ratio, 6),
            "params": compact.spec.params(),
            "counts": counts,
        }

    # ---- the result ------------------------------------------------------------------------------------

    def result(self, rows: list[dict[str, Any]], device_info: dict | None = None) -> dict[str, Any]:
        margins = getattr(self.predictor, "margins", None)
        return {
            "format": RESULT_FORMAT, "version": RESULT_VERSION,
            "scenarios": rows,
            **aggregate(rows),
            "one_time_seconds": self.one_time_costs(),
            "metric": self.adapter.metric,
            "device": {"name": self.settings.device, "latency_statistic": latency_statistic(self.predictor),
                       "runtime": str(self.predictor.runtime), "margins": margins() if callable(margins) else None,
                       "info": device_info or {}},
            "space": self.space.name,
            "checkpoint": {"path": str(self.factory.checkpoint), "model_sha256": self.checkpoint_sha,
                           "step": self.factory.meta.get("train_state", {}).get("step")},
            "baseline_init": self.init_net()[1],
            "settings": self.settings.to_json(),
        }

    def one_time_costs(self) -> dict[str, Any]:
        """Preparation paid once: NN-Factory's generator training, the baselines' backbone and unified model."""
        ts = self.factory.meta.get("train_state", {})
        warm = ts.get("warm_start") or {}
        out: dict[str, Any] = {
            "nnfactory_generator_training": round(float(ts["seconds"]) + float(warm.get("source_seconds") or 0.0), 1)
            if ts.get("seconds") is not None else None,
        }
        _, facts = self.init_net()
        out["baselines_backbone_pretraining"] = facts.get("seconds") if facts["init"] == "pretrained" else None
        meta_path = self.work_dir / f"unified-{self._unified_key()}" / "unified.json"
        meta = self._unified[1] if self._unified is not None else _read_json(meta_path)
        out["prune_tune_unified_training"] = (meta or {}).get("train_log", {}).get("seconds")
        campaign = self.predictor.entry.get("campaign", {}) or {}
        out["device_campaign"] = campaign.get("seconds")
        out["device_campaign_samples"] = campaign.get("samples_measured")
        return out


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means, customization seconds and the targets over scenario rows (one task space's metric)."""
    means: dict[str, float | None] = {}
    seconds: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    for m in METHODS:
        accs = [r[m]["accuracy"] for r in rows if r[m].get("accuracy") is not None]
        secs = [r[m]["seconds"] for r in rows if r[m].get("seconds") is not None]
        cpus = [r[m]["cpu_seconds"] for r in rows if r[m].get("cpu_seconds") is not None]
        means[m] = round(statistics.fmean(accs), 6) if accs else None
        seconds[m] = round(statistics.fmean(secs), 4) if secs else None
        cpu[m] = round(statistics.fmean(cpus), 4) if cpus else None
    complete = [r for r in rows if all(r[m].get("accuracy") is not None for m in METHODS)]
    paired = {m: round(statistics.fmean(r[m]["accuracy"] for r in complete), 6) if complete else None
              for m in METHODS}
    speedup = (seconds["retrain"] / seconds["nnfactory"]) if seconds["retrain"] and seconds["nnfactory"] else None
    targets = {
        "nnfactory_within_2_points_of_retrain": (paired["nnfactory"] is not None and paired["retrain"] is not None
                                                 and paired["nnfactory"] >= paired["retrain"] - 0.02),
        "nnfactory_above_prune_tune": (paired["nnfactory"] is not None and paired["prune_tune"] is not None
                                       and paired["nnfactory"] > paired["prune_tune"]),
        "nnfactory_meets_every_budget": bool(rows) and all(r["nnfactory"].get("meets_budget", False) for r in rows),
        "speedup_vs_retrain": round(speedup, 1) if speedup else None,
        "speedup_at_least_1000": bool(speedup and speedup >= 1000),
        # the same ratio in process CPU seconds: independent of how busy the machine was in each phase
        "cpu_speedup_vs_retrain": round(cpu["retrain"] / cpu["nnfactory"], 1) if cpu["retrain"] and cpu["nnfactory"]
        else None,
    }
    return {"mean": means, "mean_over_complete_scenarios": {"scenarios": len(complete), **paired},
            "customize_seconds": seconds, "customize_cpu_seconds": cpu, "targets": targets}


def merge_results(parts: list[dict[str, Any]], skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """One result from per-space results: all scenario rows, the per-space figures under ``by_space``.

    The top-level means mix metrics only if several spaces ran (each row says its space; ``by_space`` keeps
    them apart); the top-level targets hold when they hold in every space.
    """
    if len(parts) == 1 and not skipped:
        return parts[0]
    rows = [r for p in parts for r in p["scenarios"]]
    out: dict[str, Any] = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "scenarios": rows, **aggregate(rows)}
    out["by_space"] = {p["space"]: {k: v for k, v in p.items() if k != "scenarios"} for p in parts}
    if parts:
        out["targets"] = {k: (all(p["targets"][k] for p in parts) if isinstance(parts[0]["targets"][k], bool)
                              else out["targets"][k]) for k in parts[0]["targets"]}
        for key in ("device", "metric", "space", "checkpoint", "baseline_init", "settings", "one_time_seconds"):
            if key in parts[0]:
                out[key] = parts[0][key]
    out["spaces"] = [p["space"] for p in parts]
    out["skipped_spaces"] = dict(skipped or {})
    return out


def _failed(message: str) -> dict[str, Any]:
    return {"accuracy": None, "measured_latency_ms": None, "seconds": None, "meets_budget": False, "error": message}


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}"


def budgets_from_profile(predictor: Any, layout: Any, fractions: Sequence[float]) -> list[float]:
    """Latency budgets (ms, 2 decimals) at fractions of what the device profile holds the full supernet (every
    module on) to: its predicted latency plus the profile's calibrated margin, when it has one — the figure a
    budget search compares with the budget, so a fraction f leaves room for models of roughly f of its cost."""
    full = [layer.modules for layer in layout.layers]
    lat, _ = predict_counts(predictor, [full], bound=True)
    return [round(float(lat[0]) * f, 2) for f in fractions]


def scenarios_for(tasks: Sequence[str], budgets_ms: Sequence[float], memory_mb: float | None = None) -> list[Scenario]:
    return [Scenario(t, ScenarioBudget(b, memory_mb)) for t in tasks for b in budgets_ms]

