"""The requirement-aware module assembler (docs/design.md §2): request in, gate vectors out.

A request is ``<task, activation_limit>``. The task is a multi-hot vector over the task space's
attribute vocabulary; the limit is encoded sinusoidally (like a transformer's positional encoding,
at position ``100 * limit``). Their concatenation goes through the *selection encoder*
(FC → BN → ReLU), whose output feeds, for every gated layer ``l``, ``K`` *gater experts*
(FC → BN, real-valued logits, no ReLU) mixed by a small *gating network* (softmax over the K experts,
per layer). Hard gates are ``logits > 0``. Because a generated ratio can still exceed the limit (most
often at very low limits), :meth:`ModuleAssembler.generate` finally switches off the lowest-logit
active modules until the activation ratio is at or below the limit: the returned ratio never exceeds
the requested limit. One forward pass serves a whole batch of requests.

Training uses :func:`semhash_gates` (Improved SemHash): hard gates with a straight-through gradient for
a random half of the samples, the soft ``clamp(1.2·sigmoid(w) − 0.1, 0, 1)`` for the rest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from host.errors import ConfigError, GateError

ASSEMBLER_VERSION = 1


@dataclass(frozen=True)
class AssemblerConfig:
    """Shape of an assembler. module_counts = the supernet's ``GateLayout.module_counts``."""

    vocab_size: int
    module_counts: tuple[int, ...]
    hidden: int = 128
    experts: int = 4
    limit_dims: int = 16

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or not self.module_counts or min(self.module_counts) < 1:
            raise ConfigError("assembler needs vocab_size >= 1 and at least one gated layer with >= 1 module")
        if self.hidden < 1 or self.experts < 1 or self.limit_dims < 2 or self.limit_dims % 2:
            raise ConfigError("assembler needs hidden >= 1, experts >= 1 and an even limit_dims >= 2")

    def to_json(self) -> dict:
        d = asdict(self)
        d["module_counts"] = list(self.module_counts)
        d["version"] = ASSEMBLER_VERSION
        return d

    @classmethod
    def from_json(cls, data: dict) -> AssemblerConfig:
        if int(data.get("version", 0)) > ASSEMBLER_VERSION:
            raise ConfigError(
                f"assembler config version {data.get('version')} is newer than this NN-Factory "
                f"({ASSEMBLER_VERSION}); upgrade NN-Factory"
            )
        return cls(
            vocab_size=int(data["vocab_size"]),
            module_counts=tuple(int(x) for x in data["module_counts"]),
            hidden=int(data["hidden"]),
            experts=int(data["experts"]),
            limit_dims=int(data["limit_dims"]),
        )


def check_limits(limits: torch.Tensor) -> None:
    """Raise unless every limit lies in (0, 1]."""
    if limits.numel() == 0:
        return
    bad = ~torch.isfinite(limits) | (limits <= 0) | (limits > 1)
    if bad.any():
        val = limits[bad].flatten()[0].item()
        raise ConfigError(
            f"activation limit {val!r} is outside (0, 1]; it is the largest fraction of gated modules "
            "the generated model may keep (e.g. 0.3)"
        )


def limit_encoding(limits: torch.Tensor, dims: int) -> torch.Tensor:
    """Sinusoidal encoding of limits (B,) -> (B, dims), at position ``100 * limit``."""
    pos = 100.0 * limits.float()[:, None]
    i = torch.arange(dims // 2, dtype=torch.float32)
    freq = torch.exp(-math.log(10000.0) * (2 * i / dims))
    ang = pos * freq[None, :]
    return torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).reshape(limits.shape[0], dims)


@dataclass
class GateResult:
    """Output of :meth:`ModuleAssembler.generate` for B requests.

    gates: hard {0, 1} gates, one (B, D_l) tensor per gated layer, ratio <= limit guaranteed.
    logits: the raw per-layer logits (B, D_l).
    ratios: (B,) activation ratio of ``gates`` (float64). trimmed: (B,) how many modules the final trim switched off.
    """

    gates: list[torch.Tensor]
    logits: list[torch.Tensor]
    ratios: torch.Tensor
    trimmed: torch.Tensor

    def request(self, i: int) -> list[torch.Tensor]:
        """The unbatched gates ((D_l,) per layer) of request ``i``."""
        return [g[i] for g in self.gates]


class ModuleAssembler(nn.Module):
    """Selection encoder + per-layer mixture of K gater experts. Input: multi-hot tasks and limits."""

    def __init__(self, config: AssemblerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = nn.Sequential(
            nn.Linear(c.vocab_size + c.limit_dims, c.hidden), nn.BatchNorm1d(c.hidden), nn.ReLU()
        )
        # Each layer's K experts are FC -> BN producing D_l logits; K of them are packed into one
        # FC of K*D_l outputs and one BN over those K*D_l channels (the same computation).
        self.gaters = nn.ModuleList(
            nn.Sequential(nn.Linear(c.hidden, c.experts * d), nn.BatchNorm1d(c.experts * d))
            for d in c.module_counts
        )
        self.gating = nn.Linear(c.hidden, len(c.module_counts) * c.experts)

    @property
    def total_modules(self) -> int:
        return sum(self.config.module_counts)

    def forward(self, tasks: torch.Tensor, limits: torch.Tensor) -> list[torch.Tensor]:
        """Logits per gated layer, (B, D_l), for multi-hot ``tasks`` (B, V) and ``limits`` (B,)."""
        c = self.config
        if tasks.dim() != 2 or tasks.shape[1] != c.vocab_size:
            raise GateError(f"task encodings must have shape (batch, {c.vocab_size}), got {tuple(tasks.shape)}")
        if limits.dim() != 1 or limits.shape[0] != tasks.shape[0]:
            raise GateError(f"limits must have shape ({tasks.shape[0]},), got {tuple(limits.shape)}")
        b = tasks.shape[0]
        req = torch.cat([tasks.float(), limit_encoding(limits, c.limit_dims)], dim=1)
        sel = self.encoder(req)
        mix = torch.softmax(self.gating(sel).reshape(b, len(c.module_counts), c.experts), dim=-1)
        out = []
        for layer, (gater, d) in enumerate(zip(self.gaters, c.module_counts, strict=True)):
            experts = gater(sel).reshape(b, c.experts, d)
            out.append((mix[:, layer, :, None] * experts).sum(dim=1))
        return out

    @torch.no_grad()
    def generate(self, tasks: torch.Tensor, limits: torch.Tensor) -> GateResult:
        """Hard gates for a batch of requests, trimmed so each ratio is <= its limit (eval mode)."""
        limits = limits.double()  # the guarantee is checked in float64 against the requested value
        check_limits(limits)
        was_training = self.training
        self.eval()
        try:
            logits = self(tasks, limits.float())
        finally:
            self.train(was_training)
        gates, trimmed = trim_to_limit(logits, limits)
        flat = torch.cat(gates, dim=1)
        return GateResult(gates=gates, logits=logits, ratios=flat.double().mean(dim=1), trimmed=trimmed)


def max_active(limits: torch.Tensor, total: int) -> torch.Tensor:
    """Largest module count whose ratio ``count / total`` is <= limit, per limit (exact in float)."""
    allowed = torch.floor(limits.double() * total).long().clamp(0, total)
    over = (allowed.double() / total) > limits.double()
    return allowed - over.long()


def trim_to_limit(logits: list[torch.Tensor], limits: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hard gates ``logits > 0``, then the lowest-logit active modules off until ratio <= limit."""
    counts = [x.shape[1] for x in logits]
    flat = torch.cat(logits, dim=1)
    total = flat.shape[1]
    hard = flat > 0
    allowed = max_active(limits, total)  # (B,)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.argsort(order, dim=1)  # rank of each module by logit, 0 = largest
    keep = hard & (rank < allowed[:, None])
    trimmed = hard.sum(dim=1) - keep.sum(dim=1)
    return list(torch.split(keep.float(), counts, dim=1)), trimmed


class _StraightThrough(torch.autograd.Function):
    """Forward: the hard gates exactly; backward: the gradient goes to the soft gates unchanged."""

    @staticmethod
    def forward(ctx, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad


def soft_gates(logits: torch.Tensor) -> torch.Tensor:
    """Improved SemHash's soft gate g_β = clamp(1.2·sigmoid(w) − 0.1, 0, 1)."""
    return torch.clamp(1.2 * torch.sigmoid(logits) - 0.1, 0.0, 1.0)


def hard_gates_st(logits: torch.Tensor) -> torch.Tensor:
    """Hard gates 1(w > 0) whose gradient is the soft gate's (straight-through), for every row."""
    return _StraightThrough.apply((logits > 0).to(logits.dtype), soft_gates(logits))


def semhash_gates(logits: torch.Tensor, use_hard: torch.Tensor) -> torch.Tensor:
    """Improved SemHash for (B, D) logits: rows with ``use_hard`` (B,) get g_α = 1(w > 0) whose gradient
    is g_β's (straight-through); the other rows get g_β."""
    soft = soft_gates(logits)
    hard = _StraightThrough.apply((logits > 0).to(logits.dtype), soft)
    return torch.where(use_hard[:, None], hard, soft)


def gate_loss(gates: list[torch.Tensor], limits: torch.Tensor) -> torch.Tensor:
    """GL = mean over samples of (ratio − limit)² where ratio > limit, else 0.

    Training passes :func:`hard_gates_st` gates here: the activation ratio is that of the hard gates
    deployment will use (with the straight-through gradient). Measured on soft gates (≈ 0.5 for logits
    near 0) the ratio overstates the active modules, and the assembler learns to undershoot low limits
    by an order of magnitude (seen: ratio 0.02 at limit 0.3).
    """
    total = sum(g.shape[1] for g in gates)
    ratio = sum(g.sum(dim=1) for g in gates) / total
    return torch.relu(ratio - limits).pow(2).mean()
