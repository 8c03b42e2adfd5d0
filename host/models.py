"""The model bundle a checkpoint holds: task space, gated supernet, module assembler (+ pre-training head).

:func:`build_models` builds a fresh bundle for a task space and backbone; :func:`load_models` rebuilds one
from a checkpoint after checking that it was trained for that space, backbone and gate layout
(:func:`check_compatible`, :func:`check_layout`); :func:`warm_start` copies a checkpoint's weights into a
fresh bundle of possibly different head structure. Inference (``host.generate``) uses this module;
training (``host.training``) builds on it. Nothing here imports the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from host.assembler import AssemblerConfig, ModuleAssembler
from host.checkpoint import Checkpoint
from host.errors import ConfigError, SpecError
from host.supernets.base import Supernet
from host.tasks import TaskSpace, get_family, load_space


class AssemblerDims(Protocol):
    """The assembler settings :func:`build_models` needs (a ``TrainConfig`` or an ``AssemblerConfig``)."""

    @property
    def hidden(self) -> int: ...

    @property
    def experts(self) -> int: ...

    @property
    def limit_dims(self) -> int: ...

def final_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The supernet's classifier: its last nn.Linear."""
    found = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError(f"supernet {type(net).__name__} has no nn.Linear classifier to pre-train through")
    return found[-1]


def build_supernet_for(space: TaskSpace, backbone: str, sampler_shape: tuple[int, ...]) -> Supernet:
    from host.supernets import build_supernet, list_configs

    names = list(list_configs())
    if backbone not in names:
        from host.errors import suggest

        raise ConfigError(f"unknown backbone {backbone!r}.{suggest(backbone, names)} Known: {', '.join(names)}")
    net = build_supernet(backbone)
    if tuple(net.input_shape) != tuple(sampler_shape):
        c, h, w = sampler_shape
        try:
            net = build_supernet(backbone, num_classes=2, in_chans=c, image_size=h)
        except TypeError as exc:  # pragma: no cover - depends on the registry's signature
            raise ConfigError(f"backbone {backbone} takes {net.input_shape} inputs, task space gives {sampler_shape}") from exc
        if tuple(net.input_shape) != tuple(sampler_shape):
            raise ConfigError(
                f"backbone {backbone} takes {tuple(net.input_shape)} inputs but task space {space.name} "
                f"produces {tuple(sampler_shape)} images"
            )
    _, head = final_linear(net)
    if head.out_features != 2:
        net = build_supernet(backbone, num_classes=2)
    return net


class AuxCountHead(nn.Module):
    """Pre-training head: per class attribute, the number of cells (0..cells) holding it."""

    def __init__(self, in_features: int, classes: int, cells: int) -> None:
        super().__init__()
        self.classes, self.cells = classes, cells
        self.fc = nn.Linear(in_features, classes * (cells + 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats).reshape(feats.shape[0], self.classes, self.cells + 1)



@dataclass
class Models:
    """What a checkpoint holds: the space, the supernet, the assembler (+ aux head when training)."""

    space: TaskSpace
    supernet: Supernet
    assembler: ModuleAssembler
    aux: nn.Module | None  # pre-training head (AuxCountHead, or the family objective's)
    backbone: str

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"supernet.{k}": v for k, v in self.supernet.state_dict().items()}
        out.update({f"assembler.{k}": v for k, v in self.assembler.state_dict().items()})
        if self.aux is not None:
            out.update({f"aux.{k}": v for k, v in self.aux.state_dict().items()})
        return out

    def parameters(self) -> list[nn.Parameter]:
        mods: list[nn.Module] = [self.supernet, self.assembler] + ([self.aux] if self.aux is not None else [])
        return [p for m in mods for p in m.parameters()]

    def meta(self) -> dict:
        layout = self.supernet.gate_layout()
        return {
            "space": {"name": self.space.name, "fingerprint": self.space.fingerprint(), "definition": self.space.to_json()},
            "backbone": self.backbone,
            "gate_layout": {"fingerprint": layout.fingerprint(), "layout": layout.to_json()},
            "assembler": self.assembler.config.to_json(),
        }


def build_models(space: TaskSpace, backbone: str, cfg: AssemblerDims, *, with_aux: bool = True) -> Models:
    family = get_family(space.family)
    objective = family.objective(space)  # None: the built-in yes/no-question supernet and head
    if objective is not None:
        net = objective.build_supernet(backbone)
    else:
        net = build_supernet_for(space, backbone, family.image_shape(space))
    layout = net.gate_layout()
    acfg = AssemblerConfig(
        vocab_size=space.vocab_size,
        module_counts=tuple(layout.module_counts),
        hidden=cfg.hidden,
        experts=cfg.experts,
        limit_dims=cfg.limit_dims,
    )
    assembler = ModuleAssembler(acfg)
    aux = None
    if with_aux and objective is not None:
        aux = objective.build_aux(net)
    elif with_aux:
        head = final_linear(net)[1]
        classes = len(space.groups.get("class", ())) or 1
        cells = int(space.params.get("grid", {}).get("rows", 1)) * int(space.params.get("grid", {}).get("cols", 1))
        aux = AuxCountHead(head.in_features, classes, cells)
    return Models(space, net, assembler, aux, backbone)


def check_compatible(ckpt: Checkpoint, space: TaskSpace, backbone: str, *, exact: bool = False) -> None:
    """Raise SpecError unless the checkpoint was trained for this space and backbone.

    ``exact`` (resuming a run): the space definition must be the one the run was trained on. Otherwise
    (generating, evaluating, warm starts) another definition of the same space is accepted when the
    attribute vocabulary, the family and its parameters are unchanged and no task that ``space`` holds out
    as unseen was trained by the checkpoint: tasks may move from unseen to trained, never back.
    """
    sp = ckpt.meta.get("space", {})
    if sp.get("name") != space.name:
        raise SpecError(
            f"checkpoint {ckpt.path} was trained for task space {sp.get('name')!r}, not {space.name!r}; "
            f"pass --space {sp.get('name')} or another checkpoint"
        )
    if sp.get("fingerprint") != space.fingerprint():
        _check_definition(ckpt, sp.get("definition") if not exact else None, space)
    if ckpt.meta.get("backbone") != backbone:
        raise SpecError(
            f"checkpoint {ckpt.path} holds backbone {ckpt.meta.get('backbone')!r}, not {backbone!r}; "
            f"pass --backbone {ckpt.meta.get('backbone')} or another checkpoint"
        )


def _check_definition(ckpt: Checkpoint, trained: dict | None, space: TaskSpace) -> None:
    changed = f"checkpoint {ckpt.path} was trained on a different definition of task space {space.name!r}"
    if trained is None:
        raise SpecError(f"{changed} (tasks or attributes changed); retrain or use the matching space file")
    now = space.to_json()
    for key in ("family", "groups", "params"):
        if trained.get(key) != now[key]:
            raise SpecError(
                f"{changed}: its {key} differ, so the attribute encoding or the inputs mean something else; "
                "retrain or use the matching space file"
            )
    was_trained = {tuple(t["attributes"]) for t in trained.get("tasks", []) if t.get("split") in ("seen", "extra")}
    leaked = [t.name for t in space.tasks if t.split == "unseen" and t.attributes in was_trained]
    if leaked:
        raise SpecError(
            f"{changed}: it trained on {', '.join(repr(n) for n in leaked)}, which this space holds out as "
            "unseen, so results on it would not be unseen; use the space file the checkpoint was trained on"
        )


def check_layout(ckpt: Checkpoint, supernet: Supernet, backbone: str) -> None:
    """Raise SpecError unless the checkpoint was trained on this supernet's gate layout."""
    if ckpt.meta.get("gate_layout", {}).get("fingerprint") != supernet.gate_layout().fingerprint():
        raise SpecError(
            f"checkpoint {ckpt.path} was trained on a different gate layout of {backbone!r} than this "
            "NN-Factory builds; it cannot be used with this version"
        )


def load_models(
    ckpt: Checkpoint, space: TaskSpace | None = None, backbone: str | None = None, *, exact: bool = False
) -> Models:
    """Rebuild supernet + assembler from a checkpoint (verifying space, backbone and gate layout;
    ``exact``: the very space definition it was trained on, see :func:`check_compatible`)."""
    if space is None:
        name = ckpt.meta.get("space", {}).get("name", "")
        space = load_space(name)
    backbone = backbone or ckpt.meta.get("backbone", "")
    check_compatible(ckpt, space, backbone, exact=exact)
    acfg = AssemblerConfig.from_json(ckpt.meta["assembler"])
    has_aux = any(k.startswith("aux.") for k in ckpt.model)
    models = build_models(space, backbone, acfg, with_aux=has_aux)
    check_layout(ckpt, models.supernet, backbone)
    if acfg != models.assembler.config:
        models.assembler = ModuleAssembler(acfg)
    for name, mod in (("supernet", models.supernet), ("assembler", models.assembler), ("aux", models.aux)):
        if mod is None:
            continue
        try:
            mod.load_state_dict(ckpt.section(name), strict=True)
        except RuntimeError as exc:
            raise SpecError(f"checkpoint {ckpt.path}: {name} tensors do not fit the model: {exc}") from exc
    return models


def warm_start(models: Models, ckpt: Checkpoint) -> list[str]:
    """Copy a checkpoint's supernet and assembler weights into freshly built ``models``.

    For a new run that starts from trained weights but its own settings (``nnf train --warm-start``), e.g.
    after the supernet gained a new ungated classifier head. The gate layout and every other tensor the
    checkpoint holds must fit; a classifier head of another structure is replaced. Tensors not copied keep
    their fresh initialisation and are returned by name. The auxiliary pre-training head is not copied.
    """
    check_compatible(ckpt, models.space, models.backbone)
    check_layout(ckpt, models.supernet, models.backbone)
    if AssemblerConfig.from_json(ckpt.meta["assembler"]) != models.assembler.config:
        raise SpecError(
            f"checkpoint {ckpt.path} holds an assembler of another shape ({ckpt.meta['assembler']}); warm-start "
            "with the same --hidden/--experts/--limit-dims settings"
        )
    fresh: list[str] = []
    linear = [n for n, m in models.supernet.named_modules() if isinstance(m, nn.Linear)]
    head = linear[-1].split(".")[0] + "." if linear else None  # the classifier module, e.g. "fc." (a detector: none)
    for name, mod in (("supernet", models.supernet), ("assembler", models.assembler)):
        src = ckpt.section(name)
        own = mod.state_dict()
        if name == "supernet" and head is not None:
            # A classifier of another structure (linear -> MLP head) is replaced, not copied.
            src_head = {k for k in src if k.startswith(head)}
            own_head = {k for k in own if k.startswith(head)}
            if src_head != own_head or any(src[k].shape != own[k].shape for k in src_head):
                src = {k: v for k, v in src.items() if k not in src_head}
        extra = sorted(set(src) - set(own))
        if extra:
            raise SpecError(f"checkpoint {ckpt.path}: {name} tensors {extra[:4]} have no place in this model")
        bad = [k for k in src if tuple(src[k].shape) != tuple(own[k].shape)]
        if bad:
            raise SpecError(
                f"checkpoint {ckpt.path}: {name} tensor {bad[0]} has shape {tuple(src[bad[0]].shape)}, this model "
                f"needs {tuple(own[bad[0]].shape)}"
            )
        mod.load_state_dict({**own, **src}, strict=True)
        fresh += [f"{name}.{k}" for k in own if k not in src]
    return fresh
