"""The pre-trained backbone both baselines may start from (the paper lets Retrain start from one).

The paper's baselines start from an ImageNet backbone; here the counterpart is a backbone pre-trained on
what every task of the space is built from: NN-Factory's own pre-training phase (``host.training``, phase 1,
e.g. per digit class the number of cells holding it), run with **every module on** (no gates, no assembler,
nothing task-specific). The shipped NN-Factory generator began from the same kind of pre-training, so all
three methods start from comparable knowledge; what differs is what each does per scenario.

The backbone is trained once per (space, backbone config, steps) and kept as an ordinary NN-Factory
checkpoint directory; its training seconds are a one-time cost of the baselines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host.errors import SpecError
from host.supernets import Supernet

INIT_CHOICES = ("generator", "pretrained", "scratch")


def pretrain_backbone(space: str, backbone: str, out_dir: Path, *, steps: int, batch_size: int = 64,
                      lr: float = 2e-3, seed: int = 0, threads: int = 1, progress: bool = False) -> Path:
    """Run NN-Factory's pre-training phase alone, every module on; returns the checkpoint directory."""
    from host.checkpoint import resolve_checkpoint_dir
    from host.training import TrainConfig, Trainer

    cfg = TrainConfig(space=space, backbone=backbone, seed=seed, steps=steps, pretrain_steps=steps,
                      batch_size=batch_size, pretrain_lr=lr, lr=lr, warmup_steps=min(50, max(1, steps // 10)),
                      pretrain_keep_min=1.0, checkpoint_every=max(1, min(100, steps)), keep_checkpoints=1)
    out_dir = Path(out_dir)
    resume = (out_dir / "latest.json").is_file()
    trainer = Trainer(cfg, out_dir, resume=resume, threads=threads, progress=progress)
    try:
        trainer.run()
    finally:
        trainer.close()
    return resolve_checkpoint_dir(out_dir)


def load_backbone(path: Path, space: Any, *, phase: str | None = "pretrain") -> tuple[Supernet, dict[str, Any]]:
    """The supernet of a checkpoint and facts about it (steps, seconds, last metrics).

    ``phase="pretrain"`` insists on a pre-training checkpoint; ``None`` takes any checkpoint of the space.
    """
    from host.checkpoint import read_checkpoint
    from host.training import load_models

    ckpt = read_checkpoint(Path(path))
    state = ckpt.meta.get("train_state", {})
    if phase is not None and state.get("phase") not in (None, phase):
        raise SpecError(f"{path} is not a pre-training checkpoint (phase {state.get('phase')!r})")
    models = load_models(ckpt, space)
    facts = {"path": str(ckpt.path), "step": state.get("step"), "seconds": state.get("seconds"),
             "last": state.get("last", {}), "model_sha256": ckpt.meta.get("files", {}).get("model.safetensors"),
             "config": {k: ckpt.meta.get("train_config", {}).get(k) for k in ("steps", "batch_size", "pretrain_lr",
                                                                            "pretrain_keep_min", "seed")}}
    return models.supernet.eval(), facts

