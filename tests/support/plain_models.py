"""Hand-built plain modules with the op vocabulary of NN-Factory's compact models.

They exist so the export paths can be proven independently of the supernet/extraction code: the same
ops (Conv2d, BatchNorm2d, ReLU/ReLU6, depthwise conv, residual add, adaptive average pooling, Linear;
ViT with LayerNorm, GELU, explicit matmul+softmax attention, class token and positional embedding) and
the *zero-width* case, where every module of a block was gated off and the block is replaced by a
constant buffer (its last BN's shift) added to the residual.
"""

from __future__ import annotations

import torch
from torch import nn


def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorms non-trivial running statistics so eval-mode BN is not an identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


class ConstBlock(nn.Module):
    """A block whose gated modules are all off: output = act(x + shift), shift a (C, 1, 1) buffer."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__()
        self.register_buffer("shift", torch.linspace(-0.1, 0.1, channels).reshape(channels, 1, 1))
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.shift)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + self.down(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid1: int, mid2: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid1)
        self.conv2 = nn.Conv2d(mid1, mid2, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid2)
        self.conv3 = nn.Conv2d(mid2, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.down(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int) -> None:
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.dw = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.use_res else y


class ConvHead(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def plain_resnet_basic(in_chans: int = 1, num_classes: int = 2, seed: int = 0) -> nn.Module:
    """Stem + BasicBlocks (one pruned to width 3, one zero-width -> constant) + head."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        BasicBlock(8, 3, 8, 1), ConstBlock(8),
        BasicBlock(8, 5, 16, 2), BasicBlock(16, 7, 16, 1),
        ConvHead(16, num_classes),
    )
    _randomize_bn(m, gen)
    return m.eval()


def plain_resnet_bottleneck(in_chans: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Bottleneck(8, 3, 2, 16, 1), ConstBlock(16), Bottleneck(16, 4, 5, 32, 2),
        ConvHead(32, num_classes),
    )
    _randomize_bn(m, gen)
    return m.eval()


def plain_mobilenetv2(in_chans: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        InvertedResidual(8, 13, 8, 1), ConstBlock(8, act=False),
        InvertedResidual(8, 20, 16, 2), InvertedResidual(16, 5, 16, 1),
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        ConvHead(32, num_classes),
    )
    _randomize_bn(m, gen)
    return m.eval()


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(y)


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.hidden = hidden
        if hidden > 0:
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)
        else:  # zero-width FFN: only fc2's bias is left, a constant added to the residual
            self.register_buffer("ffn_const", torch.linspace(-0.05, 0.05, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        if self.hidden > 0:
            return x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return x + self.ffn_const


class PlainViT(nn.Module):
    def __init__(self, in_chans: int, image_size: int, patch: int, dim: int, heads: int,
                 hiddens: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, patch)
        tokens = (image_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, h) for h in hiddens])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def plain_vit(in_chans: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return PlainViT(in_chans, 32, 8, 32, 4, (17, 0, 40), num_classes).eval()


PLAIN_MODELS = {
    "resnet_basic": (plain_resnet_basic, (1, 56, 56)),
    "resnet_bottleneck": (plain_resnet_bottleneck, (3, 32, 32)),
    "mobilenetv2": (plain_mobilenetv2, (3, 32, 32)),
    "vit": (plain_vit, (3, 32, 32)),
}
