"""The Retrain baseline: a fixed architecture sized to the budget, trained on the scenario's task alone.

Per scenario (task + device budget):

1. **size** — the supernet's architecture at one *uniform* width: every gated layer keeps the same
   fraction ``w`` of its modules (at least one). The largest ``w`` on a grid (1 %, 2 %, ...) whose
   predicted latency and memory on the device (its profile) meet the budget is taken
   (:func:`size_uniform`). The rest of the network (stem, block outputs, head) is the supernet's.
2. **initialise** — from scratch (fresh weights), or from a pre-trained network of the same architecture
   (``init_net``: the pre-trained backbone of ``host.baselines.backbone``, or the generator's supernet),
   keeping in each gated layer the filters with the largest L1 norm (the paper allows retraining from a
   pre-trained backbone).
3. **train** — on the task's training data only, with an epoch/time cap (:class:`RetrainConfig`).

The result is an ordinary compact model (``host.compact.CompactModel``: spec + weights), measured and
evaluated exactly like a generated one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from host.baselines.backbone import INIT_CHOICES
from host.baselines.data import TaskAdapter
from host.baselines.device import predict_counts
from host.baselines.models import BaselineModel, ScenarioBudget, compact_with_fresh_weights, gates_from_counts
from host.baselines.train import TrainSettings, run_training
from host.errors import ConfigError, SearchError
from host.gates import GateLayout
from host.supernets import Supernet
from host.tasks import Task


@dataclass
class RetrainConfig:
    init: str = "generator"  # what init_net is (a label for the record): see host.baselines.compare
    train: TrainSettings = field(default_factory=lambda: TrainSettings(steps=400, lr=1e-3))
    width_grid: int = 100  # uniform widths tried: 1/grid, 2/grid, ..., 1

    def __post_init__(self) -> None:
        if self.init not in INIT_CHOICES:
            raise ConfigError(f"Retrain init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        if self.width_grid < 1:
            raise ConfigError(f"width_grid must be >= 1, got {self.width_grid}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_json()
        return d


@dataclass
class UniformWidth:
    fraction: float
    counts: list[int]
    predicted_latency_ms: float
    predicted_memory_mb: float

    def to_json(self) -> dict[str, Any]:
        return {"width_fraction": round(self.fraction, 4), "counts": self.counts,
                "predicted_latency_ms": round(self.predicted_latency_ms, 4),
                "predicted_memory_mb": round(self.predicted_memory_mb, 3)}


def uniform_counts(layout: GateLayout, fraction: float) -> list[int]:
    """Active modules per gated layer at a uniform width (at least one module each)."""
    return [max(1, min(layer.modules, int(round(fraction * layer.modules)))) for layer in layout.layers]


def size_uniform(layout: GateLayout, predictor: Any, budget: ScenarioBudget, grid: int = 100) -> UniformWidth:
    """The widest uniform-width model whose predicted latency/memory meet ``budget``."""
    fractions = np.arange(1, grid + 1) / grid
    counts = np.array([uniform_counts(layout, f) for f in fractions])
    lat, mem = predict_counts(predictor, counts, bound=True)
    ok = budget.fits(lat, mem)
    if not ok.any():
        raise SearchError(
            f"no uniform width of {layout.config} meets {budget.describe()} on this device: the narrowest "
            f"(one module per gated layer) is predicted at {lat[0]:.3f} ms / {mem[0]:.2f} MB"
        )
    i = int(np.nonzero(ok)[0].max())
    return UniformWidth(float(fractions[i]), [int(c) for c in counts[i]], float(lat[i]), float(mem[i]))


def l1_kept_gates(supernet: Supernet, counts: list[int]) -> list[torch.Tensor]:
    """Hard gates keeping, in each gated layer, the ``count`` filters with the largest L1 norm."""
    from host.baselines.models import gated_module

    gates = []
    for layer, k in zip(supernet.gate_layout().layers, counts, strict=True):
        w = gated_module(supernet, layer.name).weight.detach()
        score = w.abs().reshape(w.shape[0], -1).sum(1)
        g = torch.zeros(layer.modules)
        g[torch.topk(score, k).indices] = 1.0
        gates.append(g)
    return gates


def retrain(supernet: Supernet, adapter: TaskAdapter, task: Task, budget: ScenarioBudget, predictor: Any,
            cfg: RetrainConfig | None = None, *, init_net: Supernet | None = None,
            size: UniformWidth | None = None) -> BaselineModel:
    """Size, initialise and train the Retrain model of one scenario (see the module docstring).

    ``init_net``: a network of the supernet's architecture to start from (None: from scratch).
    ``size``: the sizing, when already computed (:func:`size_uniform`).
    """
    from host.extraction import extract

    cfg = cfg or RetrainConfig()
    t0 = time.perf_counter()
    c0 = time.process_time()
    layout = supernet.gate_layout()
    size = size or size_uniform(layout, predictor, budget, cfg.width_grid)
    meta = {"method": "retrain", "task": task.name, "init": cfg.init if init_net is not None else "scratch",
            "budget": budget.to_json(), "width_fraction": size.fraction}
    if init_net is not None:
        if init_net.gate_layout().fingerprint() != layout.fingerprint():
            raise ConfigError("Retrain's init_net must have the supernet's architecture (same gate layout)")
        compact = extract(init_net, l1_kept_gates(init_net, size.counts), meta=meta)
    else:
        compact = compact_with_fresh_weights(supernet, gates_from_counts(layout, size.counts), meta=meta,
                                             seed=cfg.train.seed)
    tid = torch.tensor([adapter.task_id(task)])
    b = cfg.train.batch_size

    def step(gen: torch.Generator) -> tuple[torch.Tensor, int, int]:
        x, y, _ = adapter.train_batch(tid, b, gen)
        out = compact(x)
        return adapter.loss(out, y), adapter.correct(out, y), b

    log = run_training(step, list(compact.parameters()), [compact], cfg.train, stream=f"retrain:{task.name}")
    compact.eval()
    return BaselineModel(
        method="retrain", compact=compact, counts=size.counts, sizing=size.to_json(), train=log,
        seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0, config=cfg.to_json(),
    )
