"""Gated Vision Transformer: every FFN hidden neuron is a module (docs/design.md §1).

``h = x W1 + b1;  h' = GELU(h) * g;  F(x) = h' W2 + b2``. GELU(0) = 0, so gating after the activation equals
the paper's ``σ(h·g)``. A block whose FFN is entirely off still adds ``b2`` to the residual stream.
Attention is written explicitly (matmul + softmax) so that tracing and every exporter handle it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from host.gates import GatedLayer, GateLayout
from host.supernets.base import Supernet, gate_features


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int = 16
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    in_chans: int = 3
    num_classes: int = 1000
    image_size: int = 224

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (B, h, N, N)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(out)


class FFN(nn.Module):
    """fc1 -> GELU -> gate -> fc2; ``hidden`` neurons are the modules."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        if hidden > 0:
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)
        else:  # every neuron off: only fc2's bias remains
            self.register_buffer("branch_const", torch.zeros(dim))

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if self.hidden == 0:
            return self.branch_const.view(1, 1, -1).expand_as(x)
        return self.fc2(gate_features(self.act(self.fc1(x)), g))  # (B, N, hidden) -> (B, N, D)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        if hidden > 0:  # an FFN with every neuron off needs no norm: its output is a constant
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FFN(dim, hidden)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        if self.ffn.hidden == 0:
            return x + self.ffn.branch_const.view(1, 1, -1)
        return x + self.ffn(self.norm2(x), g)


class ViT(Supernet):
    backbone = "vit"

    def __init__(self, config: ViTConfig, config_name: str = "custom", widths: dict[str, int] | None = None):
        super().__init__(config, config_name, widths)
        c = config
        if c.image_size % c.patch_size or c.dim % c.heads:
            raise ValueError("ViT needs image_size divisible by patch_size and dim divisible by heads")
        self.patch_embed = nn.Conv2d(c.in_chans, c.dim, c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.tokens, c.dim))
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, self.widths.get(f"blocks.{i}.ffn", c.hidden)) for i in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.head = nn.Linear(c.dim, c.num_classes)

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        # x: (B, C, H, W) -> logits (B, num_classes)
        by_name = self._gates_by_name(gates)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N-1, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, N, D)
        for i, block in enumerate(self.blocks):
            x = block(x, by_name.get(f"blocks.{i}.ffn"))
        return self.head(self.norm(x)[:, 0])

    def _build_layout(self) -> GateLayout:
        c = self.config
        layers = tuple(
            GatedLayer(
                name=f"blocks.{i}.ffn", modules=self.widths.get(f"blocks.{i}.ffn", c.hidden),
                params_per_module=2 * c.dim + 1, macs_per_module=2 * c.dim * c.tokens,
                out_hw=(c.tokens, 1), kind="ffn",
            )
            for i in range(c.depth)
        )
        return GateLayout(backbone=self.backbone, config=self.config_name, layers=layers)
