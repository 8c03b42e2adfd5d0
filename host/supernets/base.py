"""Base class and small shared pieces of the gated supernets.

A supernet is an ordinary backbone whose *modules* (conv filters, expanded channels, FFN neurons) are
multiplied by gate values right after their activation, so a gate of 0 feeds an exact zero into the next,
ungated layer. The same classes build the *compact* (extracted) network: every gated layer then has a
reduced width and no gate is applied (``gates=None``).

Gate tensors passed to ``forward`` follow :class:`host.gates.GateLayout`: one tensor per gated layer, shape
``(D_l,)`` (shared by the batch) or ``(B, D_l)`` (one row per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from host.gates import GateLayout


def gate_channels(x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """Multiply an NCHW feature map by per-channel gates of shape (C,) or (B, C)."""
    if g is None:
        return x
    g = g.to(x.dtype)
    if g.dim() == 1:
        return x * g.view(1, -1, 1, 1)
    return x * g.view(g.shape[0], -1, 1, 1)


def gate_features(x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """Multiply a (B, N, D) token tensor by per-feature gates of shape (D,) or (B, D)."""
    if g is None:
        return x
    g = g.to(x.dtype)
    if g.dim() == 1:
        return x * g.view(1, 1, -1)
    return x * g.view(g.shape[0], 1, -1)


def bn_shift(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> torch.Tensor:
    """Eval-mode output of a BatchNorm for an all-zero input: a per-channel constant."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return bn.bias - bn.running_mean * scale


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class Supernet(nn.Module):
    """Common interface of every gated backbone.

    Subclasses set ``backbone`` (family name), ``config_name`` and ``config`` (a dataclass), implement
    ``forward(x, gates)``, ``gate_layout()`` and ``gated_widths()`` (name -> current width of each gated layer).
    """

    backbone: str = ""

    def __init__(self, config: Any, config_name: str, widths: dict[str, int] | None) -> None:
        super().__init__()
        self.config = config
        self.config_name = config_name
        self.widths = dict(widths or {})
        self._layout: GateLayout | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c.in_chans, c.image_size, c.image_size)

    @property
    def is_compact(self) -> bool:
        return bool(self.widths)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def gate_layout(self) -> GateLayout:
        """The gate layout of this network (cached; for a compact network: its reduced widths)."""
        if self._layout is None:
            self._layout = self._build_layout()
        return self._layout

    def _build_layout(self) -> GateLayout:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _gates_by_name(self, gates: Sequence[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        if gates is None:
            return {}
        layout = self.gate_layout()
        layout.check(gates, values=False)
        return {layer.name: g for layer, g in zip(layout.layers, gates, strict=True)}
