"""Shared pieces of the baselines: budgets, their resulting models, and the supernet's gated modules.

Every baseline model is a ``host.compact.CompactModel`` of the supernet's architecture (only the widths of
the gated layers differ), so it is saved, exported, measured and evaluated exactly like a generated model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from host.baselines.train import TrainLog
from host.errors import ConfigError
from host.supernets import Supernet

# gated layer name -> name of the module whose output channels/neurons are the layer's modules
_ROOTS = {
    "resnet": lambda name: name,  # stages.i.j.conv1 / conv2 are the convs themselves
    "mobilenetv2": lambda name: name.rsplit(".", 1)[0] + ".expand.conv",  # blocks.k.hidden -> expansion conv
    # stages.i.j.convN are the convs; heatmap.hidden / box.hidden -> the head's 3x3 conv
    "centernet": lambda name: name[: -len(".hidden")] + ".conv" if name.endswith(".hidden") else name,
}
# backbone -> where a unified model adds its task embedding: an ungated nn.Linear or nn.BatchNorm2d (first
# name that exists) whose output feeds every gated layer after it or the head; the embedding is folded into
# its bias exactly once the task is fixed
_CONDITION_AT = {"resnet": ("fc.fc1", "fc"), "mobilenetv2": ("classifier",), "centernet": ("neck.smooth.1",)}


@dataclass(frozen=True)
class ScenarioBudget:
    """A device budget: latency (ms, at the profile's statistic) and optionally peak memory (MB)."""

    latency_ms: float
    memory_mb: float | None = None

    def __post_init__(self) -> None:
        if not (self.latency_ms > 0 and np.isfinite(self.latency_ms)):
            raise ConfigError(f"latency budget must be a positive number of ms, got {self.latency_ms!r}")
        if self.memory_mb is not None and not (self.memory_mb > 0 and np.isfinite(self.memory_mb)):
            raise ConfigError(f"memory budget must be a positive number of MB, got {self.memory_mb!r}")

    def fits(self, latency_ms: Any, memory_mb: Any) -> np.ndarray:
        ok = np.asarray(latency_ms, dtype=np.float64) <= self.latency_ms
        if self.memory_mb is not None:
            ok &= np.asarray(memory_mb, dtype=np.float64) <= self.memory_mb
        return ok

    def describe(self) -> str:
        s = f"latency <= {self.latency_ms:g} ms"
        return s + (f" and memory <= {self.memory_mb:g} MB" if self.memory_mb is not None else "")

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "memory_mb": self.memory_mb}


@dataclass
class BaselineModel:
    """A baseline's model for one scenario and what making it cost."""

    method: str
    compact: Any  # host.compact.CompactModel
    counts: list[int]  # active modules per gated layer
    sizing: dict[str, Any]
    train: TrainLog
    seconds: float  # wall clock of the whole customisation (sizing/pruning + training)
    cpu_seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "counts": self.counts, "sizing": self.sizing, "train": self.train.to_json(),
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3), "config": self.config,
                "activation_ratio": round(self.compact.spec.activation_ratio, 6), "params": self.compact.spec.params()}

    def save(self, out_dir: Path) -> Path:
        from host.artifact import save_compact

        return save_compact(self.compact, out_dir, meta={"baseline": self.summary()})


def gated_module(net: Supernet, layer_name: str) -> nn.Conv2d | nn.Linear:
    """The conv/linear module whose output channels are the modules of a gated layer."""
    backbone = getattr(net, "backbone", "")
    if backbone not in _ROOTS:
        raise ConfigError(f"the baselines support backbones {', '.join(_ROOTS)}, not {backbone!r}")
    mod = net.get_submodule(_ROOTS[backbone](layer_name))
    if not isinstance(mod, (nn.Conv2d, nn.Linear)):
        raise ConfigError(f"gated layer {layer_name!r} of {backbone} maps to a {type(mod).__name__}, not a conv/linear")
    return mod


def condition_point(net: Supernet) -> str:
    """Name of the ungated nn.Linear / nn.BatchNorm2d where a unified model adds its task embedding."""
    backbone = getattr(net, "backbone", "")
    for name in _CONDITION_AT.get(backbone, ()):
        try:
            mod = net.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, (nn.Linear, nn.BatchNorm2d)) and getattr(mod, "bias", None) is not None:
            return name
    raise ConfigError(f"backbone {backbone!r}: no place for a task embedding known (see _CONDITION_AT)")


def gates_from_counts(layout: Any, counts: list[int]) -> list[torch.Tensor]:
    """Hard gates keeping the first ``count`` modules of each gated layer."""
    out = []
    for layer, k in zip(layout.layers, counts, strict=True):
        g = torch.zeros(layer.modules)
        g[:k] = 1.0
        out.append(g)
    return out


def compact_with_fresh_weights(supernet: Supernet, gates: list[torch.Tensor], *, meta: dict, seed: int) -> Any:
    """The compact model of ``gates`` with freshly initialised weights (training from scratch)."""
    from host.extraction import extract
    from host.supernets import build_network

    compact = extract(supernet, gates, meta=meta)
    torch.manual_seed(seed)
    compact.net = build_network(supernet.backbone, supernet.config, supernet.config_name, compact.spec.widths)
    return compact


def counts_of(compact: Any) -> list[int]:
    return [len(compact.spec.kept[name]) for name in compact.spec.layer_modules]
