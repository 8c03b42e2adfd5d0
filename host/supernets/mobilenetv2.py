"""Gated MobileNetV2.

In an inverted residual (expansion t > 1) the modules are the *expanded* channels: a gate multiplies the
depthwise conv's output (after BN and ReLU6), i.e. the input of the final 1x1 projection. Dropping a module
removes its expansion filter, its depthwise filter and the projection's input column together. Blocks with
t = 1 have no expansion and are not gated. A block with every module off still adds the projection BN's shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from host.gates import GatedLayer, GateLayout
from host.supernets.base import Supernet, conv_out, gate_channels

STANDARD_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    # t (expansion), c (out channels), n (blocks), s (stride of the first)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class MobileNetV2Config:
    settings: tuple[tuple[int, int, int, int], ...] = STANDARD_SETTINGS
    width_mult: float = 1.0
    stem_width: int = 32
    stem_stride: int = 2
    last_channel: int = 1280
    in_chans: int = 3
    num_classes: int = 1000
    image_size: int = 224


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=False) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise 3x3 -> gate -> project 1x1 (linear), residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, hidden: int) -> None:
        super().__init__()
        self.stride = stride
        self.gated = expand_ratio != 1
        self.use_res = stride == 1 and cin == cout
        self.hidden = hidden
        if not self.gated:
            self.dw = ConvBNAct(cin, cin, 3, stride, groups=cin)
            self.project = ConvBNAct(cin, cout, 1, act=False)
        elif hidden > 0:
            self.expand = ConvBNAct(cin, hidden, 1)
            self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden)
            self.project = ConvBNAct(hidden, cout, 1, act=False)
        else:  # every expanded channel off: only the projection BN's shift remains
            self.register_buffer("branch_const", torch.zeros(cout))

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if not self.gated:
            out = self.project(self.dw(x))
        elif self.hidden > 0:
            h = gate_channels(self.dw(self.expand(x)), g)  # (B, hidden, H', W')
            out = self.project(h)  # (B, cout, H', W')
        else:
            const = self.branch_const.view(1, -1, 1, 1)
            if self.use_res:
                return x + const
            ho = conv_out(x.shape[2], 3, self.stride, 1)
            wo = conv_out(x.shape[3], 3, self.stride, 1)
            return const.expand(x.shape[0], -1, ho, wo)
        return x + out if self.use_res else out


class MobileNetV2(Supernet):
    backbone = "mobilenetv2"

    def __init__(
        self, config: MobileNetV2Config, config_name: str = "custom", widths: dict[str, int] | None = None
    ) -> None:
        super().__init__(config, config_name, widths)
        c = config
        stem = make_divisible(c.stem_width * c.width_mult)
        self.stem = ConvBNAct(c.in_chans, stem, 3, c.stem_stride)
        self.blocks = nn.ModuleList()
        cin = stem
        for t, ch, n, s in c.settings:
            cout = make_divisible(ch * c.width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                name = f"blocks.{len(self.blocks)}.hidden"
                hidden = self.widths.get(name, cin * t)
                self.blocks.append(InvertedResidual(cin, cout, stride, t, hidden))
                cin = cout
        last = make_divisible(c.last_channel * max(1.0, c.width_mult))
        self.head = ConvBNAct(cin, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, c.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        # x: (B, C, H, W) -> logits (B, num_classes)
        by_name = self._gates_by_name(gates)
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x, by_name.get(f"blocks.{i}.hidden"))
        x = torch.flatten(self.pool(self.head(x)), 1)
        return self.classifier(x)

    def _build_layout(self) -> GateLayout:
        c = self.config
        size = conv_out(c.image_size, 3, c.stem_stride, 1)
        cin = make_divisible(c.stem_width * c.width_mult)
        layers: list[GatedLayer] = []
        k = 0
        for t, ch, n, s in c.settings:
            cout = make_divisible(ch * c.width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                out_size = conv_out(size, 3, stride, 1)
                if t != 1:
                    name = f"blocks.{k}.hidden"
                    layers.append(GatedLayer(
                        name=name, modules=self.widths.get(name, cin * t),
                        params_per_module=cin + 2 + 9 + 2 + cout,
                        macs_per_module=cin * size * size + (9 + cout) * out_size * out_size,
                        out_hw=(out_size, out_size), kind="expand",
                    ))
                cin, size, k = cout, out_size, k + 1
        return GateLayout(backbone=self.backbone, config=self.config_name, layers=tuple(layers))
