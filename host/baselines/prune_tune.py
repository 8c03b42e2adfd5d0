"""The Prune&Tune baseline: one unified model for all tasks, pruned per scenario with Torch-Pruning, fine-tuned.

**Unified model** (:class:`UnifiedModel`, trained once): the supernet's full architecture, every module
on, answering *any* task of the space: the task's multi-hot attribute encoding (the same one the
assembler reads) is projected and added to the output of one ungated layer (the classifier head's first
linear layer; a detector's neck BatchNorm), before its activation. It is
trained on the tasks NN-Factory trains on (seen + extra combinations, never the unseen ones), from a
pre-trained network of the same architecture (``host.baselines.backbone``) or from scratch.

**Per scenario** (:func:`prune_tune`):

1. *prune* — Torch-Pruning (DepGraph, the authors' library) removes filters of the gated layers, i.e. each
   group "gated conv's output channels + its BN + the next conv's input channels" that DepGraph finds,
   ranked globally by group L2 magnitude (``GroupMagnitudeImportance``). Pruning stays inside the
   supernet's architecture space (stem, block outputs and head are left whole), so the device profile
   predicts the pruned model like any other; the pruning ratio is the smallest one (bisection) whose
   predicted latency/memory meet the budget.
2. *fold* — the task is fixed now: its projected encoding is folded into that layer's bias
   (``W x + b + P e`` = ``W x + (b + P e)``; for a BatchNorm its shift ``beta``; exact in training and
   evaluation alike), leaving an ordinary compact model.
3. *fine-tune* — on the scenario's task data, with a step/time cap.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from host.baselines.data import TaskAdapter, training_task_ids
from host.baselines.device import predict_counts
from host.baselines.models import BaselineModel, ScenarioBudget, condition_point, gated_module
from host.baselines.train import TrainLog, TrainSettings, run_training
from host.errors import ArtifactError, ConfigError, MissingExtraError, SearchError, SpecError
from host.supernets import Supernet
from host.tasks import Task, TaskSpace

UNIFIED_FORMAT = "nnfactory.unified-model"
UNIFIED_VERSION = 1


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError as exc:
        raise MissingExtraError("the Prune&Tune baseline", "baselines", "torch-pruning") from exc
    return torch_pruning


class ConditionedLinear(nn.Linear):
    """``y = W x + b + P e``: a linear layer plus a projection of the current task encoding ``e``.

    ``e`` is set by :class:`UnifiedModel` for each forward (shape (B, vocab)); ``P`` has no bias.
    """

    def __init__(self, base: nn.Linear, vocab_size: int) -> None:
        super().__init__(base.in_features, base.out_features, bias=True)
        with torch.no_grad():
            self.weight.copy_(base.weight)
            if base.bias is not None:
                self.bias.copy_(base.bias)
            else:
                self.bias.zero_()
        self.proj = nn.Linear(vocab_size, base.out_features, bias=False)
        nn.init.normal_(self.proj.weight, std=0.1)
        self.task: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task is None:
            raise RuntimeError("UnifiedModel: no task encoding set for this forward")
        return super().forward(x) + self.proj(self.task)  # (B, out)


class ConditionedBatchNorm2d(nn.BatchNorm2d):
    """``BN(x) + P e`` per channel: a BatchNorm whose shift gets a projection of the task encoding ``e``."""

    def __init__(self, base: nn.BatchNorm2d, vocab_size: int) -> None:
        super().__init__(base.num_features, eps=base.eps, momentum=base.momentum, affine=True)
        self.load_state_dict(base.state_dict())
        self.proj = nn.Linear(vocab_size, base.num_features, bias=False)
        nn.init.normal_(self.proj.weight, std=0.1)
        self.task: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task is None:
            raise RuntimeError("UnifiedModel: no task encoding set for this forward")
        return super().forward(x) + self.proj(self.task)[:, :, None, None]  # (B, C, H, W)


def _conditioned(base: nn.Module, vocab_size: int) -> ConditionedLinear | ConditionedBatchNorm2d:
    if isinstance(base, nn.Linear):
        return ConditionedLinear(base, vocab_size)
    if isinstance(base, nn.BatchNorm2d) and base.affine:
        return ConditionedBatchNorm2d(base, vocab_size)
    raise ConfigError(f"cannot add a task embedding to a {type(base).__name__}")


class UnifiedModel(nn.Module):
    """The supernet's architecture (all modules on) answering any task: ``forward(x, task_encoding)``.

    ``head``: the conditioned layer (:class:`ConditionedLinear` / :class:`ConditionedBatchNorm2d`), at
    ``head_name`` inside ``trunk``; its parameter names are the plain layer's plus ``proj.weight``.
    """

    def __init__(self, trunk: Supernet, vocab_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head_name = condition_point(trunk)
        parent_name, _, leaf = self.head_name.rpartition(".")
        parent = trunk.get_submodule(parent_name) if parent_name else trunk
        self.head: ConditionedLinear | ConditionedBatchNorm2d = _conditioned(getattr(parent, leaf), vocab_size)
        if parent_name and isinstance(parent, nn.Sequential):
            parent[int(leaf)] = self.head
        else:
            setattr(parent, leaf, self.head)
        self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); task: (B, vocab) multi-hot -> logits (B, classes)
        self.head.task = task
        try:
            return self.trunk(x)
        finally:
            self.head.task = None


@dataclass
class UnifiedConfig:
    init: str = "generator"  # what the init network is (a label for the record): see host.baselines.compare
    train: TrainSettings = field(default_factory=lambda: TrainSettings(steps=1500, lr=1e-3))
    extra_fraction: float = 0.2  # share of samples from extra attribute combinations (as NN-Factory's training)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_json()
        return d


@dataclass
class PruneTuneConfig:
    finetune: TrainSettings = field(default_factory=lambda: TrainSettings(steps=150, lr=5e-4, warmup_steps=10))
    max_pruning_ratio: float = 0.95  # largest global pruning ratio tried
    scan_step: float = 0.05  # upward scan of the ratio before the bisection
    tolerance: float = 0.005  # bisection stops when the ratio interval is this narrow

    def to_json(self) -> dict[str, Any]:
        return {"finetune": self.finetune.to_json(), "max_pruning_ratio": self.max_pruning_ratio,
                "tolerance": self.tolerance, "scan_step": self.scan_step, "importance": "GroupMagnitudeImportance(p=2)",
                "pruning": "global, else uniform per layer"}


def build_unified(supernet: Supernet, space: TaskSpace, *, init_net: Supernet | None = None, seed: int = 0
                  ) -> UnifiedModel:
    """A unified model of the supernet's architecture, with ``init_net``'s weights (None: fresh ones)."""
    from host.supernets import build_network

    torch.manual_seed(seed)
    trunk = build_network(supernet.backbone, supernet.config, supernet.config_name, {})
    if init_net is not None:
        if init_net.gate_layout().fingerprint() != supernet.gate_layout().fingerprint():
            raise ConfigError("the unified model's init network must have the supernet's architecture")
        trunk.load_state_dict(init_net.state_dict(), strict=True)
    return UnifiedModel(trunk, space.vocab_size)


def train_unified(supernet: Supernet, space: TaskSpace, adapter: TaskAdapter, cfg: UnifiedConfig | None = None,
                  *, init_net: Supernet | None = None) -> tuple[UnifiedModel, TrainLog]:
    """Train the unified model on all training tasks (seen + extra), mixed and shuffled."""
    cfg = cfg or UnifiedConfig()
    model = build_unified(supernet, space, init_net=init_net, seed=cfg.train.seed)
    seen, extra = training_task_ids(space)
    enc = space.encode(space.tasks)
    b = cfg.train.batch_size

    def step(gen: torch.Generator) -> tuple[torch.Tensor, int, int]:
        x, y, tids = adapter.train_mixed(seen, extra, cfg.extra_fraction, b, gen)
        out = model(x, enc[tids])
        return adapter.loss(out, y), adapter.correct(out, y), b

    log = run_training(step, list(model.parameters()), [model], cfg.train, stream="unified")
    model.eval()
    return model, log


def save_unified(model: UnifiedModel, log: TrainLog, cfg: UnifiedConfig, space: TaskSpace, out_dir: Path) -> Path:
    """``out_dir/unified.safetensors`` + ``unified.json`` (config, training log, space fingerprint)."""
    from safetensors.torch import save_file

    from host.fileio import staging_dir, write_json_atomic

    out_dir = Path(out_dir)
    trunk = model.trunk
    with staging_dir(out_dir) as build:
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
                  str(build / "unified.safetensors"))
        write_json_atomic(build / "unified.json", {
            "format": UNIFIED_FORMAT, "version": UNIFIED_VERSION, "backbone": trunk.backbone,
            "config_name": trunk.config_name, "config": trunk.config_dict(), "vocab_size": model.vocab_size,
            "space": {"name": space.name, "fingerprint": space.fingerprint()}, "unified": cfg.to_json(),
            "train_log": log.to_json(),
        })
    return out_dir


def load_unified(path: Path, supernet: Supernet, space: TaskSpace) -> tuple[UnifiedModel, dict]:
    """Load a unified model saved by :func:`save_unified` (checked against the space and the supernet)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads((path / "unified.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path} holds no readable unified model ({exc}); train one with the benchmark") from exc
    if meta.get("format") != UNIFIED_FORMAT or int(meta.get("version", 0)) > UNIFIED_VERSION:
        raise SpecError(f"{path}/unified.json is not a unified model this NN-Factory reads")
    if meta["space"]["fingerprint"] != space.fingerprint() or meta["config_name"] != supernet.config_name:
        raise SpecError(f"unified model {path} was trained for another task space or backbone; train it again")
    model = build_unified(supernet, space)
    try:
        model.load_state_dict(load_file(str(path / "unified.safetensors")), strict=True)
    except (OSError, RuntimeError) as exc:
        raise ArtifactError(f"{path}/unified.safetensors does not fit the unified model: {exc}") from exc
    return model.eval(), meta


# ---- pruning --------------------------------------------------------------------------------------------


def _prune(unified: UnifiedModel, layer_names: list[str], ratio: float, max_ratio: float, *,
           global_pruning: bool = True) -> tuple[UnifiedModel, dict[str, torch.Tensor]]:
    """A pruned copy of ``unified`` and, per gated layer, the kept module indices (of the original layer).

    global_pruning: one magnitude threshold across the gated layers (DepGraph's global mode); False prunes
    every gated layer by ``ratio`` of its own modules (uniform).
    """
    tp = _tp()
    model = copy.deepcopy(unified).eval()
    roots = {id(gated_module(model.trunk, n)): n for n in layer_names}
    ignored = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in roots]
    shape = tuple(unified.trunk.input_shape)
    example = (torch.zeros(1, *shape), torch.zeros(1, unified.vocab_size))
    kept = {n: torch.arange(gated_module(model.trunk, n).weight.shape[0]) for n in layer_names}
    if ratio > 0:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=global_pruning,
            pruning_ratio=ratio, max_pruning_ratio=max_ratio, ignored_layers=ignored,
        )
        for group in pruner.step(interactive=True):
            dep, idxs = group[0]
            name = roots.get(id(dep.target.module))
            if name is None:
                raise RuntimeError(f"Torch-Pruning proposed pruning outside the gated layers: {dep}")
            drop = torch.zeros(len(kept[name]), dtype=torch.bool)
            drop[list(idxs)] = True
            kept[name] = kept[name][~drop]
            group.prune()
    return model, kept


def prune_to_budget(unified: UnifiedModel, predictor: Any, budget: ScenarioBudget, cfg: PruneTuneConfig
                    ) -> tuple[UnifiedModel, dict[str, torch.Tensor], dict[str, Any]]:
    """The least-pruned copy of ``unified`` whose predicted latency/memory meet ``budget``.

    Global pruning is monotone in the ratio only until some gated layer falls wholly below the global
    threshold (Torch-Pruning then leaves that layer whole rather than empty it). So the ratio is scanned
    upwards in steps of ``cfg.scan_step`` to the first one that fits, then bisected between it and the last
    one that did not. When no global ratio fits (tight budgets: the layers left whole keep the model slow),
    the same scan is made with uniform per-layer pruning (each gated layer loses the same share of its
    modules, monotone up to ``cfg.max_pruning_ratio``), the way a practitioner would fall back; the info says
    which mode was used.
    """
    layout = unified.trunk.gate_layout()
    names = [layer.name for layer in layout.layers]
    trials: list[dict[str, Any]] = []

    def trial(r: float, global_pruning: bool) -> tuple[UnifiedModel, dict[str, torch.Tensor], float, float, bool]:
        model, kept = _prune(unified, names, r, cfg.max_pruning_ratio, global_pruning=global_pruning)
        counts = [len(kept[n]) for n in names]
        lat, mem = predict_counts(predictor, [counts], bound=True)
        ok = bool(budget.fits(lat[0], mem[0]))
        trials.append({"ratio": round(r, 5), "global": global_pruning, "counts": counts,
                       "latency_ms": round(float(lat[0]), 4), "fits": ok})
        return model, kept, float(lat[0]), float(mem[0]), ok

    for global_pruning in (True, False):
        found = _scan(lambda r, g=global_pruning: trial(r, g), cfg)
        if found is not None:
            break
    if found is None:
        smallest = min(trials, key=lambda d: d["latency_ms"])
        raise SearchError(
            f"Prune&Tune cannot meet {budget.describe()}: the smallest model Torch-Pruning produced (ratio "
            f"{smallest['ratio']:g}, {'global' if smallest['global'] else 'uniform per layer'}) is predicted at "
            f"{smallest['latency_ms']:.3f} ms"
        )
    ratio, (model, kept, lat, mem, _) = found
    info = {"pruning_ratio": round(ratio, 5), "pruning": "global" if global_pruning else "uniform per layer",
            "predicted_latency_ms": round(lat, 4), "predicted_memory_mb": round(mem, 3),
            "counts": [len(kept[n]) for n in names], "trials": len(trials)}
    return model, kept, info


def _scan(trial: Any, cfg: PruneTuneConfig) -> tuple[float, Any] | None:
    """(smallest fitting ratio, its trial) by an upward scan then bisection; None when no ratio fits."""
    found = None
    prev = 0.0
    for r in np.arange(0.0, cfg.max_pruning_ratio + 1e-9, cfg.scan_step):
        t = trial(float(r))
        if t[4]:
            found = (float(r), t)
            break
        prev = float(r)
    if found is None:
        return None
    hi, best = found
    lo = prev
    if hi > 0:
        while hi - lo > cfg.tolerance:
            mid = 0.5 * (lo + hi)
            t = trial(mid)
            if t[4]:
                hi, best = mid, t
            else:
                lo = mid
    return hi, best


def fold_task(pruned: UnifiedModel, kept: dict[str, torch.Tensor], task_encoding: torch.Tensor,
              supernet: Supernet, meta: dict) -> Any:
    """The compact model of a pruned unified model with the task fixed (exactly the same outputs)."""
    from host.extraction import extract

    layout = supernet.gate_layout()
    gates = []
    for layer in layout.layers:
        g = torch.zeros(layer.modules)
        g[kept[layer.name]] = 1.0
        gates.append(g)
    compact = extract(supernet, gates, meta=meta)  # the spec (kept indices); weights replaced below
    sd = dict(pruned.trunk.state_dict())
    head = pruned.head_name
    proj = sd.pop(f"{head}.proj.weight")
    with torch.no_grad():
        sd[f"{head}.bias"] = sd[f"{head}.bias"] + proj @ task_encoding.reshape(-1).to(proj.dtype)
    compact.net.load_state_dict(sd, strict=True)
    return compact.eval()


def fine_tune(compact: Any, adapter: TaskAdapter, task: Task, settings: TrainSettings) -> TrainLog:
    """Fine-tune a compact model on one task's training data (in place)."""
    tid = torch.tensor([adapter.task_id(task)])
    b = settings.batch_size

    def step(gen: torch.Generator) -> tuple[torch.Tensor, int, int]:
        x, y, _ = adapter.train_batch(tid, b, gen)
        out = compact(x)
        return adapter.loss(out, y), adapter.correct(out, y), b

    log = run_training(step, list(compact.parameters()), [compact], settings, stream=f"finetune:{task.name}")
    compact.eval()
    return log


def prune_tune(unified: UnifiedModel, supernet: Supernet, adapter: TaskAdapter, task: Task, budget: ScenarioBudget,
               predictor: Any, cfg: PruneTuneConfig | None = None) -> BaselineModel:
    """Prune the unified model to the scenario's budget, fold the task in, fine-tune on the task's data."""
    cfg = cfg or PruneTuneConfig()
    t0, c0 = time.perf_counter(), time.process_time()
    space = adapter.space
    pruned, kept, info = prune_to_budget(unified, predictor, budget, cfg)
    compact = fold_task(pruned, kept, space.encode([task])[0], supernet, pruned_meta(task, budget, info))
    info["seconds_prune"] = round(time.perf_counter() - t0, 3)
    log = fine_tune(compact, adapter, task, cfg.finetune)
    return BaselineModel(
        method="prune_tune", compact=compact, counts=[int(c) for c in info["counts"]], sizing=info, train=log,
        seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0, config=cfg.to_json(),
    )


def pruned_meta(task: Task, budget: ScenarioBudget, info: dict[str, Any]) -> dict[str, Any]:
    return {"method": "prune_tune", "task": task.name, "budget": budget.to_json(),
            "pruning_ratio": info["pruning_ratio"], "predicted_latency_ms": info["predicted_latency_ms"]}
