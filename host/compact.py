"""Compact models: the static networks extraction produces, and their versioned JSON spec.

A compact model is the backbone rebuilt with reduced widths for every gated layer (no gates, no assembler).
Its :class:`CompactSpec` records everything needed to rebuild the architecture without pickle: backbone
family, config, and the kept module indices of every gated layer. Costs (params, MACs, the largest intermediate
activation) are computed from the spec alone by building the architecture on the ``meta`` device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from host.errors import ConfigError, SpecError
from host.supernets import BACKBONES, Supernet, build_network, config_from_dict

SPEC_FORMAT = "nnfactory.compact-model"
SPEC_VERSION = 1
BYTES_PER_FLOAT = 4


@dataclass
class CompactSpec:
    """What a compact model is: enough to rebuild it (with its weights file) and to describe it."""

    backbone: str
    config_name: str
    config: dict[str, Any]
    kept: dict[str, list[int]]  # gated layer name -> kept module indices (ascending)
    layer_modules: dict[str, int]  # gated layer name -> D_l of the supernet
    layout_fingerprint: str  # GateLayout.fingerprint() of the supernet the model came from
    meta: dict[str, Any] = field(default_factory=dict)  # free-form provenance: task, limit, ...
    version: int = SPEC_VERSION
    _costs: dict[str, int] | None = field(default=None, repr=False, compare=False)

    # ---- derived --------------------------------------------------------------------------------------

    @property
    def widths(self) -> dict[str, int]:
        return {name: len(idx) for name, idx in self.kept.items()}

    @property
    def activation_ratio(self) -> float:
        total = sum(self.layer_modules.values())
        return sum(self.widths.values()) / total if total else 1.0

    @property
    def gates_fingerprint(self) -> str:
        """sha256 of the hard gate bits (layer order) and the supernet layout fingerprint."""
        h = hashlib.sha256(self.layout_fingerprint.encode())
        for name, d in self.layer_modules.items():
            bits = torch.zeros(d, dtype=torch.uint8)
            bits[self.kept[name]] = 1
            h.update(name.encode() + b":" + bytes(bits.tolist()))
        return h.hexdigest()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (int(c["in_chans"]), int(c["image_size"]), int(c["image_size"]))

    def gates(self) -> list[torch.Tensor]:
        """The hard gate vectors this model was extracted with."""
        out = []
        for name, d in self.layer_modules.items():
            g = torch.zeros(d)
            g[self.kept[name]] = 1.0
            out.append(g)
        return out

    def build(self, device: str | torch.device = "meta") -> Supernet:
        """The compact architecture (weights uninitialised on ``meta``)."""
        cfg = config_from_dict(self.backbone, self.config)
        with torch.device(device):
            return build_network(self.backbone, cfg, self.config_name, self.widths)

    def _compute_costs(self) -> dict[str, int]:
        if self._costs is None:
            net = self.build("meta").eval()
            params = sum(p.numel() for p in net.parameters())
            buffers = sum(b.numel() for b in net.buffers() if b.dtype.is_floating_point)
            peak = [int(torch.Size(self.input_shape).numel())]

            def hook(_m: nn.Module, _i: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor):
                    peak[0] = max(peak[0], out.numel())

            handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
            try:
                with FlopCounterMode(display=False) as counter, torch.no_grad():
                    net(torch.empty(1, *self.input_shape, device="meta"))
            finally:
                for h in handles:
                    h.remove()
            self._costs = {
                "params": int(params),
                "buffer_elems": int(buffers),
                "macs": int(counter.get_total_flops() // 2),
                "peak_activation_elems": int(peak[0]),
            }
        return self._costs

    def params(self) -> int:
        """Number of parameters of the compact model."""
        return self._compute_costs()["params"]

    def param_bytes(self) -> int:
        """Bytes of float32 parameters and floating buffers (BN statistics, constants)."""
        c = self._compute_costs()
        return (c["params"] + c["buffer_elems"]) * BYTES_PER_FLOAT

    def macs(self) -> int:
        """Multiply-accumulates of one forward pass at batch 1."""
        return self._compute_costs()["macs"]

    def peak_activation_bytes(self) -> int:
        """Bytes of the largest single intermediate activation (float32, batch 1)."""
        return self._compute_costs()["peak_activation_elems"] * BYTES_PER_FLOAT

    def summary(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone, "config": self.config_name,
            "activation_ratio": round(self.activation_ratio, 6),
            "params": self.params(), "macs": self.macs(),
            "param_bytes": self.param_bytes(), "peak_activation_bytes": self.peak_activation_bytes(),
            "gates_fingerprint": self.gates_fingerprint,
        }

    # ---- JSON ---------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT, "version": self.version, "backbone": self.backbone,
            "config_name": self.config_name, "config": self.config, "kept": self.kept,
            "layer_modules": self.layer_modules, "layout_fingerprint": self.layout_fingerprint,
            "gates_fingerprint": self.gates_fingerprint, "activation_ratio": self.activation_ratio,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str = "spec") -> CompactSpec:
        if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
            raise SpecError(f"{source} is not an NN-Factory compact-model spec (missing format {SPEC_FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int):
            raise SpecError(f"{source} has no integer 'version'")
        if version > SPEC_VERSION:
            raise SpecError(
                f"{source} was written by a newer NN-Factory (spec version {version}, this one reads up to "
                f"{SPEC_VERSION}); upgrade nn-factory to load it"
            )
        try:
            if data["backbone"] not in BACKBONES:
                raise ConfigError(f"{source} names unknown backbone {data['backbone']!r}; known: {', '.join(BACKBONES)}")
            spec = cls(
                backbone=data["backbone"], config_name=str(data["config_name"]), config=dict(data["config"]),
                kept={str(k): [int(i) for i in v] for k, v in data["kept"].items()},
                layer_modules={str(k): int(v) for k, v in data["layer_modules"].items()},
                layout_fingerprint=str(data["layout_fingerprint"]), meta=dict(data.get("meta", {})),
                version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise SpecError(f"{source} is malformed ({type(exc).__name__}: {exc})") from exc
        if set(spec.kept) != set(spec.layer_modules):
            raise SpecError(f"{source}: 'kept' and 'layer_modules' name different layers")
        for name, idx in spec.kept.items():
            d = spec.layer_modules[name]
            if idx != sorted(set(idx)) or (idx and (idx[0] < 0 or idx[-1] >= d)):
                raise SpecError(f"{source}: kept indices of {name!r} must be ascending, unique and in [0, {d})")
        return spec


class CompactModel(nn.Module):
    """A static compact network plus its spec. ``forward(x)`` takes (B, C, H, W) and returns logits."""

    def __init__(self, net: Supernet, spec: CompactSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
