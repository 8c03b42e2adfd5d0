"""Gated ResNets (BasicBlock: ResNet-18/34 shapes; Bottleneck: ResNet-50 shape).

Modules are the filters of the gated convs: conv1 of a BasicBlock; conv1 and conv2 of a Bottleneck. The last
conv of each block is never gated, so residual shapes never change. A gate multiplies the filter's output after
BN and ReLU: ``O = relu(BN(F * x)) * g``.

When a block's branch is fully switched off (all gates 0 in a BasicBlock's conv1, or in either gated conv of a
Bottleneck), its output is no longer zero: the last BN still adds its shift (and a Bottleneck whose conv1 is
off still feeds ``relu(bn2 shift)`` through conv3). The compact block keeps exactly that per-channel constant
in a ``branch_const`` buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from host.gates import GatedLayer, GateLayout
from host.supernets.base import Supernet, conv_out, gate_channels


@dataclass(frozen=True)
class ResNetConfig:
    block: str  # "basic" | "bottleneck"
    layers: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...]  # planes per stage (a Bottleneck outputs 4x planes)
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "small": 3x3/1 conv, no pool
    stem_width: int = 64
    in_chans: int = 3
    num_classes: int = 1000
    image_size: int = 224
    # 0: the standard classifier (pooled features -> Linear). > 0: an ungated MLP head
    # (Linear -> ReLU -> Linear) with this many hidden units. A single linear read-out of pooled features is
    # monotonic in any feature that counts objects additively over the image, so it cannot answer
    # non-monotonic questions such as "exactly two 0"; one hidden layer can.
    head_hidden: int = 0

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class Downsample(nn.Module):
    """1x1 strided conv + BN on the shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, 1, stride)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class MLPHead(nn.Module):
    """Ungated classifier head: Linear -> ReLU -> Linear (``fc1``, ``fc2``)."""

    def __init__(self, cin: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.relu = nn.ReLU(inplace=False)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))  # (B, C) -> (B, hidden) -> (B, num_classes)


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> gate -> conv3x3 -> BN, + shortcut, ReLU. Gated: conv1 (``mid`` filters)."""

    def __init__(self, cin: int, planes: int, stride: int, mid: int) -> None:
        super().__init__()
        self.mid = mid
        if mid > 0:
            self.conv1 = _conv(cin, mid, 3, stride)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = _conv(mid, planes, 3)
            self.bn2 = nn.BatchNorm2d(planes)
        else:  # branch switched off: only bn2's shift remains
            self.register_buffer("branch_const", torch.zeros(planes))
        self.relu = nn.ReLU(inplace=False)
        self.downsample = Downsample(cin, planes, stride) if stride != 1 or cin != planes else None

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.mid > 0:
            out = gate_channels(self.relu(self.bn1(self.conv1(x))), g)  # (B, mid, H', W')
            out = self.bn2(self.conv2(out))  # (B, planes, H', W')
        else:
            out = self.branch_const.view(1, -1, 1, 1)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3(stride) -> 1x1 (x4), each with BN; gated: conv1 (``mid1``) and conv2 (``mid2``)."""

    def __init__(self, cin: int, planes: int, stride: int, mid1: int, mid2: int) -> None:
        super().__init__()
        out = planes * 4
        self.active = mid1 > 0 and mid2 > 0
        if self.active:
            self.conv1 = _conv(cin, mid1, 1)
            self.bn1 = nn.BatchNorm2d(mid1)
            self.conv2 = _conv(mid1, mid2, 3, stride)
            self.bn2 = nn.BatchNorm2d(mid2)
            self.conv3 = _conv(mid2, out, 1)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.register_buffer("branch_const", torch.zeros(out))
        self.relu = nn.ReLU(inplace=False)
        self.downsample = Downsample(cin, out, stride) if stride != 1 or cin != out else None

    def forward(
        self, x: torch.Tensor, g1: torch.Tensor | None = None, g2: torch.Tensor | None = None
    ) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.active:
            out = gate_channels(self.relu(self.bn1(self.conv1(x))), g1)  # (B, mid1, H, W)
            out = gate_channels(self.relu(self.bn2(self.conv2(out))), g2)  # (B, mid2, H', W')
            out = self.bn3(self.conv3(out))  # (B, 4*planes, H', W')
        else:
            out = self.branch_const.view(1, -1, 1, 1)
        return self.relu(out + identity)


class ResNet(Supernet):
    backbone = "resnet"

    def __init__(self, config: ResNetConfig, config_name: str = "custom", widths: dict[str, int] | None = None):
        super().__init__(config, config_name, widths)
        c = config
        if c.stem == "imagenet":
            self.conv1 = nn.Conv2d(c.in_chans, c.stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        elif c.stem == "small":
            self.conv1 = _conv(c.in_chans, c.stem_width, 3)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown ResNet stem {c.stem!r}")
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        self.relu = nn.ReLU(inplace=False)
        cin = c.stem_width
        self.stages = nn.ModuleList()
        for si, (n, planes) in enumerate(zip(c.layers, c.widths, strict=True)):
            blocks = nn.ModuleList()
            for bi in range(n):
                stride = 2 if (si > 0 and bi == 0) else 1
                prefix = f"stages.{si}.{bi}"
                if c.block == "basic":
                    mid = self.widths.get(f"{prefix}.conv1", planes)
                    blocks.append(BasicBlock(cin, planes, stride, mid))
                else:
                    m1 = self.widths.get(f"{prefix}.conv1", planes)
                    m2 = self.widths.get(f"{prefix}.conv2", planes)
                    blocks.append(Bottleneck(cin, planes, stride, m1, m2))
                cin = planes * c.expansion
            self.stages.append(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = MLPHead(cin, c.head_hidden, c.num_classes) if c.head_hidden > 0 else nn.Linear(
            cin, c.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        # x: (B, C, H, W) -> logits (B, num_classes)
        by_name = self._gates_by_name(gates)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for si, blocks in enumerate(self.stages):
            for bi, block in enumerate(blocks):
                p = f"stages.{si}.{bi}"
                if isinstance(block, BasicBlock):
                    x = block(x, by_name.get(f"{p}.conv1"))
                else:
                    x = block(x, by_name.get(f"{p}.conv1"), by_name.get(f"{p}.conv2"))
        x = torch.flatten(self.pool(x), 1)  # (B, C_last)
        return self.fc(x)

    def _build_layout(self) -> GateLayout:
        c = self.config
        size = c.image_size
        if c.stem == "imagenet":
            size = conv_out(conv_out(size, 7, 2, 3), 3, 2, 1)
        cin = c.stem_width
        layers: list[GatedLayer] = []
        for si, (n, planes) in enumerate(zip(c.layers, c.widths, strict=True)):
            for bi in range(n):
                stride = 2 if (si > 0 and bi == 0) else 1
                p = f"stages.{si}.{bi}"
                out_size = conv_out(size, 3, stride, 1)
                hw = out_size * out_size
                if c.block == "basic":
                    layers.append(GatedLayer(
                        name=f"{p}.conv1", modules=self.widths.get(f"{p}.conv1", planes),
                        params_per_module=cin * 9 + 2 + planes * 9,
                        macs_per_module=(cin * 9 + planes * 9) * hw,
                        out_hw=(out_size, out_size), kind="conv",
                    ))
                else:
                    m1 = self.widths.get(f"{p}.conv1", planes)
                    m2 = self.widths.get(f"{p}.conv2", planes)
                    out = planes * 4
                    layers.append(GatedLayer(
                        name=f"{p}.conv1", modules=m1,
                        params_per_module=cin + 2 + m2 * 9,
                        macs_per_module=cin * size * size + m2 * 9 * hw,
                        out_hw=(size, size), kind="conv",
                    ))
                    layers.append(GatedLayer(
                        name=f"{p}.conv2", modules=m2,
                        params_per_module=m1 * 9 + 2 + out,
                        macs_per_module=(m1 * 9 + out) * hw,
                        out_hw=(out_size, out_size), kind="conv", inputs_from=(f"{p}.conv1",),
                    ))
                cin = planes * c.expansion
                size = out_size
        return GateLayout(backbone=self.backbone, config=self.config_name, layers=tuple(layers))
