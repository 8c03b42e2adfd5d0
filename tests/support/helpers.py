"""Test helpers (importable from tests as ``from tests.support.helpers import ...``)."""

from __future__ import annotations

import torch
from torch import nn


def randomize_norms(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN/LN and bias non-trivial values, so constants kept by extraction are really exercised."""
    g = torch.Generator().manual_seed(seed)

    def u(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                u(m.weight, 0.5, 1.5)
                u(m.bias, -0.5, 0.5)
                u(m.running_mean, -0.5, 0.5)
                u(m.running_var, 0.5, 1.5)
            elif isinstance(m, nn.LayerNorm):
                u(m.weight, 0.5, 1.5)
                u(m.bias, -0.5, 0.5)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                u(m.bias, -0.5, 0.5)
    return net
