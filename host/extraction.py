"""Exact extraction: hard gates -> a static compact model with the inactive modules physically removed.

Per-block surgery sits behind one interface keyed by block type (as Torch-Pruning does per layer type):
each ``_surgery_*`` function gets the block, its state-dict prefix, the kept indices of its gated layers and
the state dict being built, and rewrites that block's tensors:

- the gated conv's filters and its BN entries are sliced (``W[keep]``), the next layer's input channels too
  (``W_next[:, keep]``); an FFN's fc1 rows/bias and fc2 columns likewise;
- a branch with every module off becomes a per-channel constant (``branch_const``) computed from the tensors
  that still act on the zero input: the last BN's shift, fc2's bias, or for a Bottleneck whose conv1 is off,
  ``bn3(conv3(relu(bn2 shift)))``. That keeps extraction exact.

The compact architecture is built on the ``meta`` device and the sliced tensors are assigned to it
(``load_state_dict(assign=True)``), so nothing is initialised twice. Every tensor is copied: the compact
model never aliases the supernet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from host.compact import CompactModel, CompactSpec
from host.errors import ConfigError, GateError
from host.supernets import Supernet, build_network
from host.supernets.base import bn_shift
from host.supernets.centernet import GatedHead
from host.supernets.mobilenetv2 import InvertedResidual
from host.supernets.resnet import BasicBlock, Bottleneck
from host.supernets.vit import FFN

StateDict = dict[str, torch.Tensor]
Keep = dict[str, torch.Tensor]  # full gated-layer name -> kept indices (int64, ascending)


def _bn_keys(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var"))


def _slice_bn(sd: StateDict, prefix: str, idx: torch.Tensor) -> None:
    for key in _bn_keys(prefix):
        sd[key] = sd[key].index_select(0, idx)


def _drop(sd: StateDict, prefix: str, subs: Sequence[str]) -> None:
    for sub in subs:
        start = f"{prefix}.{sub}."
        for key in [k for k in sd if k.startswith(start)]:
            del sd[key]


def _surgery_basic(block: BasicBlock, p: str, keep: Keep, sd: StateDict) -> None:
    k = keep[f"{p}.conv1"]
    if k.numel() == 0:
        sd[f"{p}.branch_const"] = bn_shift(block.bn2).detach().clone()
        _drop(sd, p, ("conv1", "bn1", "conv2", "bn2"))
        return
    sd[f"{p}.conv1.weight"] = sd[f"{p}.conv1.weight"].index_select(0, k)
    _slice_bn(sd, f"{p}.bn1", k)
    sd[f"{p}.conv2.weight"] = sd[f"{p}.conv2.weight"].index_select(1, k)


def _surgery_bottleneck(block: Bottleneck, p: str, keep: Keep, sd: StateDict) -> None:
    k1, k2 = keep[f"{p}.conv1"], keep[f"{p}.conv2"]
    if k1.numel() and k2.numel():
        sd[f"{p}.conv1.weight"] = sd[f"{p}.conv1.weight"].index_select(0, k1)
        _slice_bn(sd, f"{p}.bn1", k1)
        sd[f"{p}.conv2.weight"] = sd[f"{p}.conv2.weight"].index_select(0, k2).index_select(1, k1)
        _slice_bn(sd, f"{p}.bn2", k2)
        sd[f"{p}.conv3.weight"] = sd[f"{p}.conv3.weight"].index_select(1, k2)
        return
    if k2.numel() == 0:  # conv3 sees zeros: bn3's shift
        const = bn_shift(block.bn3)
    else:  # conv2 sees zeros: its kept channels carry relu(bn2 shift), a spatial constant through conv3
        c2 = torch.relu(bn_shift(block.bn2)).index_select(0, k2)  # (m2,)
        v = block.conv3.weight[:, :, 0, 0].index_select(1, k2) @ c2  # (out,)
        bn3 = block.bn3
        assert bn3.running_mean is not None and bn3.running_var is not None  # BN with running stats
        const = (v - bn3.running_mean) / torch.sqrt(bn3.running_var + bn3.eps) * bn3.weight + bn3.bias
    sd[f"{p}.branch_const"] = const.detach().clone()
    _drop(sd, p, ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"))


def _surgery_inverted_residual(block: InvertedResidual, p: str, keep: Keep, sd: StateDict) -> None:
    if not block.gated:
        return
    k = keep[f"{p}.hidden"]
    if k.numel() == 0:
        sd[f"{p}.branch_const"] = bn_shift(block.project.bn).detach().clone()
        _drop(sd, p, ("expand", "dw", "project"))
        return
    sd[f"{p}.expand.conv.weight"] = sd[f"{p}.expand.conv.weight"].index_select(0, k)
    _slice_bn(sd, f"{p}.expand.bn", k)
    sd[f"{p}.dw.conv.weight"] = sd[f"{p}.dw.conv.weight"].index_select(0, k)
    _slice_bn(sd, f"{p}.dw.bn", k)
    sd[f"{p}.project.conv.weight"] = sd[f"{p}.project.conv.weight"].index_select(1, k)


def _surgery_ffn(ffn: FFN, p: str, keep: Keep, sd: StateDict) -> None:
    k = keep[p]
    block = p.rsplit(".", 1)[0]
    if k.numel() == 0:
        sd[f"{p}.branch_const"] = ffn.fc2.bias.detach().clone()
        _drop(sd, p, ("fc1", "fc2"))
        _drop(sd, block, ("norm2",))
        return
    sd[f"{p}.fc1.weight"] = sd[f"{p}.fc1.weight"].index_select(0, k)
    sd[f"{p}.fc1.bias"] = sd[f"{p}.fc1.bias"].index_select(0, k)
    sd[f"{p}.fc2.weight"] = sd[f"{p}.fc2.weight"].index_select(1, k)


def _surgery_head(head: GatedHead, p: str, keep: Keep, sd: StateDict) -> None:
    k = keep[f"{p}.hidden"]
    if k.numel() == 0:  # the output conv sees zeros: its bias everywhere
        assert head.out.bias is not None  # the output conv has a bias
        sd[f"{p}.branch_const"] = head.out.bias.detach().clone()
        _drop(sd, p, ("conv", "bn", "out"))
        return
    sd[f"{p}.conv.weight"] = sd[f"{p}.conv.weight"].index_select(0, k)
    _slice_bn(sd, f"{p}.bn", k)
    sd[f"{p}.out.weight"] = sd[f"{p}.out.weight"].index_select(1, k)


SURGERY: dict[type[nn.Module], Callable[..., None]] = {
    BasicBlock: _surgery_basic,
    Bottleneck: _surgery_bottleneck,
    InvertedResidual: _surgery_inverted_residual,
    FFN: _surgery_ffn,
    GatedHead: _surgery_head,
}


def _normalise_gates(supernet: Supernet, gates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(gates, torch.Tensor):
        raise GateError("pass a list with one gate tensor per gated layer (GateLayout.split() splits a flat one)")
    gates = [g.squeeze(0) if isinstance(g, torch.Tensor) and g.dim() == 2 and g.shape[0] == 1 else g
             for g in gates]
    supernet.gate_layout().check(gates, hard=True, batched=False)
    return [g.detach().to("cpu") for g in gates]


@torch.no_grad()
def extract(supernet: Supernet, gates: Sequence[torch.Tensor], *, meta: dict | None = None) -> CompactModel:
    """Build the static compact model for ``gates`` (one hard {0,1} vector per gated layer).

    In eval mode the result's output equals ``supernet(x, gates)`` (to float rounding). ``meta`` is stored in
    the spec (e.g. task, limit).
    """
    if supernet.is_compact:
        raise ConfigError("extract() needs the full supernet, not an already-compact network")
    layout = supernet.gate_layout()
    gates = _normalise_gates(supernet, gates)
    keep: Keep = {layer.name: torch.nonzero(g, as_tuple=False).flatten()
                  for layer, g in zip(layout.layers, gates, strict=True)}
    sd: StateDict = dict(supernet.state_dict())
    for name, module in supernet.named_modules():
        surgery = SURGERY.get(type(module))
        if surgery is not None:
            surgery(module, name, keep, sd)
    widths = {name: int(k.numel()) for name, k in keep.items()}
    with torch.device("meta"):
        net = build_network(supernet.backbone, supernet.config, supernet.config_name, widths)
    # copy every tensor (sliced ones are fresh already; clone() is cheap next to the forward it enables)
    shared = {t.data_ptr() for t in supernet.state_dict().values()}
    sd = {k: (v.clone() if v.data_ptr() in shared else v) for k, v in sd.items()}
    net.load_state_dict(sd, strict=True, assign=True)
    spec = CompactSpec(
        backbone=supernet.backbone, config_name=supernet.config_name, config=supernet.config_dict(),
        kept={name: k.tolist() for name, k in keep.items()},
        layer_modules={layer.name: layer.modules for layer in layout.layers},
        layout_fingerprint=layout.fingerprint(), meta=dict(meta or {}),
    )
    return CompactModel(net, spec).eval()
