"""A gated anchor-free detector (CenterNet style) on a gated ResNet backbone.

    image (B, C, S, S)
      -> stem: 3x3 stride-2 conv, BN, ReLU                                  stride 2
      -> ResNet stages (BasicBlock / Bottleneck, gated as in host.supernets.resnet) strides 2, 4, 8, 16
      -> neck: FPN-lite; 1x1 laterals of stages 1-3, nearest 2x upsampling, sums, one 3x3 conv   stride 4
      -> heads: ``heatmap`` (num_classes centre heatmaps, logits) and ``box`` (w, h in output cells,
         x/y offset of the centre inside its cell), each 3x3 conv -> BN -> ReLU -> gate -> 1x1 conv
    output (B, num_classes + 4, S/4, S/4): the heads' maps concatenated (decode with host.detection).

Modules (gated) are the filters of each block's first conv (as in the classifier ResNet) and the hidden
filters of both heads. The heads' 1x1 output convs are ungated, so a head whose hidden filters are all
off outputs its bias everywhere; the compact head keeps exactly that constant (``branch_const``).
The output is one tensor, so every export format and runtime treats the detector like a classifier (int8
included: see the note in ``forward`` on why the two heads' maps are joined by an add).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from host.gates import GatedLayer, GateLayout
from host.supernets.base import Supernet, conv_out, gate_channels
from host.supernets.resnet import BasicBlock, Bottleneck, _conv

#: output stride of the neck and heads
OUT_STRIDE = 4
#: heatmap bias at initialisation: sigmoid(-2.19) = 0.1 (CenterNet's prior)
HEATMAP_PRIOR_BIAS = -2.19


@dataclass(frozen=True)
class CenterNetConfig:
    block: str = "basic"  # "basic" | "bottleneck"
    layers: tuple[int, ...] = (1, 1, 1, 1)  # blocks per stage (4 stages)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    stem_width: int = 16
    in_chans: int = 3
    image_size: int = 64
    num_classes: int = 4  # heatmap channels (categories)
    neck_width: int = 64
    head_width: int = 64  # hidden filters of each head (gated)

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def out_channels(self) -> int:
        return self.num_classes + 4


class GatedHead(nn.Module):
    """3x3 conv -> BN -> ReLU -> gate -> 1x1 conv (+bias). Gated: the ``mid`` hidden filters."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.mid = mid
        if mid > 0:
            self.conv = _conv(cin, mid, 3)
            self.bn = nn.BatchNorm2d(mid)
            self.relu = nn.ReLU(inplace=False)
            self.out = nn.Conv2d(mid, cout, 1)
        else:  # every hidden filter off: the output conv's bias everywhere
            self.register_buffer("branch_const", torch.zeros(cout))

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if self.mid > 0:
            h = gate_channels(self.relu(self.bn(self.conv(x))), g)  # (B, mid, H, W)
            return self.out(h)  # (B, cout, H, W)
        return self.branch_const.view(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], x.shape[3])


class Neck(nn.Module):
    """FPN-lite: laterals of the stride-4/8/16 features summed top-down to stride 4, then a 3x3 conv."""

    def __init__(self, cins: Sequence[int], width: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width))
                                      for c in cins)
        self.smooth = nn.Sequential(_conv(width, width, 3), nn.BatchNorm2d(width), nn.ReLU(inplace=False))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        p = self.laterals[-1](feats[-1])  # coarsest
        for lat, f in zip(list(self.laterals)[-2::-1], list(feats)[-2::-1], strict=True):
            p = lat(f) + F.interpolate(p, scale_factor=2.0, mode="nearest")
        return self.smooth(p)  # (B, width, S/4, S/4)


class CenterNet(Supernet):
    backbone = "centernet"

    def __init__(self, config: CenterNetConfig, config_name: str = "custom", widths: dict[str, int] | None = None):
        super().__init__(config, config_name, widths)
        c = config
        if len(c.layers) != 4 or len(c.widths) != 4:
            raise ValueError("a CenterNet backbone has exactly 4 stages")
        if c.image_size % 32:
            raise ValueError(f"CenterNet image_size must be a multiple of 32, got {c.image_size}")
        self.conv1 = nn.Conv2d(c.in_chans, c.stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        self.relu = nn.ReLU(inplace=False)
        cin = c.stem_width
        self.stages = nn.ModuleList()
        outs = []
        for si, (n, planes) in enumerate(zip(c.layers, c.widths, strict=True)):
            blocks = nn.ModuleList()
            for bi in range(n):
                stride = 2 if (si > 0 and bi == 0) else 1
                p = f"stages.{si}.{bi}"
                if c.block == "basic":
                    blocks.append(BasicBlock(cin, planes, stride, self.widths.get(f"{p}.conv1", planes)))
                else:
                    blocks.append(Bottleneck(cin, planes, stride, self.widths.get(f"{p}.conv1", planes),
                                             self.widths.get(f"{p}.conv2", planes)))
                cin = planes * c.expansion
            self.stages.append(blocks)
            outs.append(cin)
        self.neck = Neck(outs[1:], c.neck_width)
        self.heatmap = GatedHead(c.neck_width, self.widths.get("heatmap.hidden", c.head_width), c.num_classes)
        self.box = GatedHead(c.neck_width, self.widths.get("box.hidden", c.head_width), 4)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.heatmap.mid > 0 and not self.heatmap.out.bias.is_meta:
            nn.init.normal_(self.heatmap.out.weight, std=0.01)
            nn.init.constant_(self.heatmap.out.bias, HEATMAP_PRIOR_BIAS)
            nn.init.normal_(self.box.out.weight, std=0.01)
            nn.init.constant_(self.box.out.bias, 0.0)

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        # x: (B, C, S, S) -> (B, num_classes + 4, S/4, S/4)
        by_name = self._gates_by_name(gates)
        x = self.relu(self.bn1(self.conv1(x)))  # (B, stem, S/2, S/2)
        feats = []
        for si, blocks in enumerate(self.stages):
            for bi, block in enumerate(blocks):
                p = f"stages.{si}.{bi}"
                if isinstance(block, BasicBlock):
                    x = block(x, by_name.get(f"{p}.conv1"))
                else:
                    x = block(x, by_name.get(f"{p}.conv1"), by_name.get(f"{p}.conv2"))
            feats.append(x)
        p = self.neck(feats[1:])  # (B, neck, S/4, S/4)
        hm = self.heatmap(p, by_name.get("heatmap.hidden"))  # (B, K, S/4, S/4)
        box = self.box(p, by_name.get("box.hidden"))  # (B, 4, S/4, S/4)
        # = torch.cat([hm, box], dim=1), exactly (x + 0 = x). Not a cat: int8 quantisers give a cat's output
        # the scale of its *first* input (PT2E's shared spec), which clipped the box sizes (0..8 cells) to the
        # heatmap logits' range and left TFLite int8 detectors with mAP 0; an add observes its own range.
        return F.pad(hm, (0, 0, 0, 0, 0, box.shape[1])) + F.pad(box, (0, 0, 0, 0, hm.shape[1], 0))

    def _build_layout(self) -> GateLayout:
        c = self.config
        size = conv_out(c.image_size, 3, 2, 1)
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
                        params_per_module=cin * 9 + 2 + planes * 9, macs_per_module=(cin * 9 + planes * 9) * hw,
                        out_hw=(out_size, out_size), kind="conv"))
                else:
                    m1 = self.widths.get(f"{p}.conv1", planes)
                    m2 = self.widths.get(f"{p}.conv2", planes)
                    layers.append(GatedLayer(
                        name=f"{p}.conv1", modules=m1, params_per_module=cin + 2 + m2 * 9,
                        macs_per_module=cin * size * size + m2 * 9 * hw, out_hw=(size, size), kind="conv"))
                    layers.append(GatedLayer(
                        name=f"{p}.conv2", modules=m2, params_per_module=m1 * 9 + 2 + planes * 4,
                        macs_per_module=(m1 * 9 + planes * 4) * hw, out_hw=(out_size, out_size), kind="conv",
                        inputs_from=(f"{p}.conv1",)))
                cin = planes * c.expansion
                size = out_size
        side = c.image_size // OUT_STRIDE
        for head, cout in (("heatmap", c.num_classes), ("box", 4)):
            layers.append(GatedLayer(
                name=f"{head}.hidden", modules=self.widths.get(f"{head}.hidden", c.head_width),
                params_per_module=c.neck_width * 9 + 2 + cout, macs_per_module=(c.neck_width * 9 + cout) * side * side,
                out_hw=(side, side), kind="conv"))
        return GateLayout(backbone=self.backbone, config=self.config_name, layers=tuple(layers))
