"""Gate layouts: which layers of a supernet are gated, how many modules each has, what a module costs.

A *gate vector* for a supernet is a list with one tensor per gated layer ``l``, of shape ``(D_l,)``
(one request) or ``(B, D_l)`` (a batch, each sample with its own gates). Hard gates are {0, 1};
soft gates lie in [0, 1]. The *activation ratio* is the fraction of ones over all gate bits.

The layout is the contract between the supernet, the assembler (one gater per layer, ``D_l`` outputs),
extraction, the predictors (feature schema) and reports (per-module cost figures).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from host.errors import GateError


@dataclass(frozen=True)
class GatedLayer:
    """One gated layer.

    name: dotted name of the gated module inside the supernet (e.g. ``"layer1.0.conv1"``).
    modules: D_l, the number of modules (filters / expanded channels / FFN neurons).
    params_per_module: parameters removed with one module, all neighbours kept.
    macs_per_module: multiply-accumulates removed with one module at the config's input size.
    out_hw: spatial size (H, W) of the gated feature map ((tokens, 1) for a ViT FFN).
    kind: "conv", "expand" (MobileNetV2 expanded channel) or "ffn".
    inputs_from: names of gated layers whose active count changes this layer's input width
        (e.g. a Bottleneck's conv2 reads conv1's modules); predictors use it for interaction features.
    """

    name: str
    modules: int
    params_per_module: int
    macs_per_module: int
    out_hw: tuple[int, int]
    kind: str
    inputs_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateLayout:
    """All gated layers of one supernet config, in forward order."""

    backbone: str
    config: str
    layers: tuple[GatedLayer, ...]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def module_counts(self) -> list[int]:
        return [layer.modules for layer in self.layers]

    @property
    def total_modules(self) -> int:
        return sum(self.module_counts)

    def index(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise GateError(f"no gated layer named {name!r} in {self.backbone}/{self.config}")

    def to_json(self) -> dict:
        return {"backbone": self.backbone, "config": self.config, "layers": [asdict(x) for x in self.layers]}

    @classmethod
    def from_json(cls, data: dict) -> GateLayout:
        layers = tuple(
            GatedLayer(**{**x, "out_hw": tuple(x["out_hw"]), "inputs_from": tuple(x.get("inputs_from", ()))})
            for x in data["layers"]
        )
        return cls(backbone=data["backbone"], config=data["config"], layers=layers)

    def fingerprint(self) -> str:
        """sha256 over the layout's canonical JSON: two supernets with the same fingerprint take the same gates."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    # ---- gate vectors -------------------------------------------------------------------------

    def ones(self, batch: int | None = None) -> list[torch.Tensor]:
        shape = (lambda d: (d,)) if batch is None else (lambda d: (batch, d))
        return [torch.ones(shape(d)) for d in self.module_counts]

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Split a ``(..., total_modules)`` tensor into per-layer tensors."""
        if flat.shape[-1] != self.total_modules:
            raise GateError(
                f"flat gate vector has {flat.shape[-1]} entries but {self.backbone}/{self.config} "
                f"has {self.total_modules} modules"
            )
        return list(torch.split(flat, self.module_counts, dim=-1))

    def flatten(self, gates: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-layer gates into one ``(..., total_modules)`` tensor."""
        self.check(gates)
        return torch.cat([g.float() for g in gates], dim=-1)

    def check(
        self, gates: Sequence[torch.Tensor], *, hard: bool = False, batched: bool | None = None, values: bool = True
    ) -> None:
        """Raise :class:`GateError` unless ``gates`` fits this layout.

        hard: require values in {0, 1}. batched: require (B, D_l) (True), (D_l,) (False) or either (None).
        values: also check the values (finite, in [0, 1]); ``False`` checks shapes only (cheap, for hot loops).
        """
        if len(gates) != self.num_layers:
            raise GateError(
                f"expected {self.num_layers} gate tensors (one per gated layer of "
                f"{self.backbone}/{self.config}), got {len(gates)}"
            )
        batch = None
        for layer, g in zip(self.layers, gates, strict=True):
            if not isinstance(g, torch.Tensor):
                raise GateError(f"gates for {layer.name!r} must be a torch.Tensor, got {type(g).__name__}")
            if g.dim() not in (1, 2) or g.shape[-1] != layer.modules:
                raise GateError(
                    f"gates for {layer.name!r} have shape {tuple(g.shape)}; expected "
                    f"({layer.modules},) or (batch, {layer.modules})"
                )
            if batched is True and g.dim() != 2:
                raise GateError(f"gates for {layer.name!r} need a batch dimension: (batch, {layer.modules})")
            if batched is False and g.dim() != 1:
                raise GateError(f"gates for {layer.name!r} must be one vector of shape ({layer.modules},)")
            if g.dim() == 2:
                if batch is not None and g.shape[0] != batch:
                    raise GateError(f"gate batch sizes differ: {batch} vs {g.shape[0]} at {layer.name!r}")
                batch = g.shape[0]
            if not values:
                continue
            if not torch.isfinite(g.float()).all():
                raise GateError(f"gates for {layer.name!r} contain NaN or inf")
            if hard:
                bad = (g != 0) & (g != 1)
                if bad.any():
                    val = g[bad].flatten()[0].item()
                    raise GateError(
                        f"gates for {layer.name!r} must be hard (0 or 1) here but contain {val!r}; "
                        "threshold soft gates first (g > 0.5) or use the assembler's hard output"
                    )
            elif ((g < 0) | (g > 1)).any():
                raise GateError(f"gates for {layer.name!r} must lie in [0, 1]")


def activation_ratio(gates: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fraction of active modules over all gate bits: scalar for unbatched gates, ``(B,)`` for batched."""
    total = sum(g.shape[-1] for g in gates)
    active = torch.stack([g.float().sum(dim=-1) for g in gates]).sum(dim=0)
    return active / total


def random_gates(
    layout: GateLayout, ratio: float, *, generator: torch.Generator | None = None, per_layer_jitter: float = 0.0
) -> list[torch.Tensor]:
    """Random hard gates with about ``ratio`` of modules on in each layer.

    per_layer_jitter > 0 varies each layer's keep ratio independently (uniform in ratio ± jitter, clipped to
    [0, 1]), which spreads per-layer counts for predictor fitting. Layers can end up all-zero or all-one.
    """
    gates = []
    for layer in layout.layers:
        r = ratio
        if per_layer_jitter > 0:
            u = torch.rand((), generator=generator).item()
            r = min(1.0, max(0.0, ratio + (2 * u - 1) * per_layer_jitter))
        k = int(round(r * layer.modules))
        perm = torch.randperm(layer.modules, generator=generator)[:k]
        g = torch.zeros(layer.modules)
        g[perm] = 1.0
        gates.append(g)
    return gates
