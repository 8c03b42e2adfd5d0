"""Checkpoints of a trained supernet + assembler: safetensors + versioned JSON, never pickle.

A *checkpoint directory* holds

- ``checkpoint.json``: kind/version, the task space (name, fingerprint, full definition), the backbone
  config name and gate-layout fingerprint, the assembler config, the training config and state
  (phase, step, seconds trained, metrics), and the sha256 of every tensor file;
- ``model.safetensors``: ``supernet.*`` and ``assembler.*`` tensors (``aux.*`` during pre-training);
- ``optimizer.safetensors`` (training runs only): the optimizer's per-parameter state tensors, its
  scalar state and param groups being in the JSON.

Everything is written into a fresh temporary directory first and renamed into place, so a crash
never leaves a half-written checkpoint. A *run directory* (``nnf train --out``) holds numbered
checkpoint directories plus ``latest.json`` (replaced atomically) naming the latest and the best.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from host.errors import ArtifactError, SpecError
from host.fileio import replace_dir, sha256_file, staging_dir

CHECKPOINT_KIND = "nnf-generator-checkpoint"
CHECKPOINT_VERSION = 1
RUN_INDEX = "latest.json"
SHIPPED_DIR = Path(__file__).parent / "checkpoints"


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-able metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{key}"] = val.detach().contiguous().cpu().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    for pid, vals in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(vals)
    return {"state": state, "param_groups": meta["param_groups"]}


@dataclass
class Checkpoint:
    """A loaded checkpoint: its JSON metadata and tensors (optimizer tensors only if present)."""

    path: Path
    meta: dict
    model: dict[str, torch.Tensor]
    optimizer: dict | None

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors whose names start with ``prefix + '.'``, with the prefix removed."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.model.items() if k.startswith(p)}


def write_checkpoint(
    path: Path,
    meta: dict,
    model_tensors: dict[str, torch.Tensor],
    optimizer_state: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temporary directory, then rename). Returns ``path``."""
    path = Path(path)
    if path.exists():
        raise ArtifactError(f"checkpoint directory {path} already exists; refusing to overwrite it")
    with staging_dir(path, replace=False) as tmp:
        tensors = {k: v.detach().contiguous().cpu().clone() for k, v in model_tensors.items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        files = {"model.safetensors": sha256_file(tmp / "model.safetensors")}
        meta = dict(meta)
        if optimizer_state is not None:
            otensors, ometa = optimizer_to_tensors(optimizer_state)
            save_file(otensors, str(tmp / "optimizer.safetensors"))
            files["optimizer.safetensors"] = sha256_file(tmp / "optimizer.safetensors")
            meta["optimizer"] = ometa
        meta["kind"] = CHECKPOINT_KIND
        meta["version"] = CHECKPOINT_VERSION
        meta["files"] = files
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return path


def resolve_checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory itself, or the best (else latest) checkpoint of a run directory."""
    path = Path(path)
    if (path / "checkpoint.json").is_file():
        return path
    index = path / RUN_INDEX
    if index.is_file():
        try:
            data = json.loads(index.read_text())
            name = data.get("best") or data["latest"]
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise SpecError(f"{index} is not a valid run index ({exc}); it should name the latest checkpoint") from exc
        return path / name
    if not path.exists():
        raise SpecError(f"checkpoint {path} does not exist")
    raise SpecError(
        f"{path} is neither a checkpoint directory (no checkpoint.json) nor a training run directory "
        f"(no {RUN_INDEX}); an interrupted run that never reached its first checkpoint has nothing to load"
    )


def read_checkpoint(path: Path, *, with_optimizer: bool = False) -> Checkpoint:
    """Load and verify a checkpoint (checksums, kind, version). Raises SpecError/ArtifactError."""
    path = resolve_checkpoint_dir(Path(path))
    meta_path = path / "checkpoint.json"
    if not meta_path.is_file():
        raise SpecError(f"{path} has no checkpoint.json; it is not a checkpoint directory")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{meta_path} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    if not isinstance(meta, dict) or meta.get("kind") != CHECKPOINT_KIND:
        raise SpecError(f"{meta_path} is not an NN-Factory generator checkpoint (kind {meta.get('kind')!r})")
    if int(meta.get("version", 0)) > CHECKPOINT_VERSION:
        raise SpecError(
            f"{meta_path} has version {meta.get('version')}, newer than this NN-Factory "
            f"({CHECKPOINT_VERSION}); upgrade NN-Factory"
        )
    files = meta.get("files", {})
    wanted = ["model.safetensors"] + (["optimizer.safetensors"] if with_optimizer else [])
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name in wanted:
        fpath = path / name
        if name not in files:
            raise SpecError(f"checkpoint {path} has no {name} (it was saved without it)")
        if not fpath.is_file():
            raise ArtifactError(f"checkpoint {path} is missing {name}")
        digest = sha256_file(fpath)
        if digest != files[name]:
            raise ArtifactError(
                f"{fpath} has sha256 {digest[:16]}… but the checkpoint records {files[name][:16]}…: "
                "the file is truncated or corrupt; use another checkpoint"
            )
        try:
            loaded[name] = load_file(str(fpath))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{fpath} cannot be read as safetensors: {exc}") from exc
    optimizer = None
    if with_optimizer:
        optimizer = optimizer_from_tensors(loaded["optimizer.safetensors"], meta["optimizer"])
    return Checkpoint(path=path, meta=meta, model=loaded["model.safetensors"], optimizer=optimizer)


def shipped_checkpoint(space: str) -> Path:
    """The checkpoint shipped in the package for ``space`` (host/checkpoints/<space>_*)."""
    candidates = sorted(SHIPPED_DIR.glob(f"{space}_*")) if SHIPPED_DIR.is_dir() else []
    candidates = [c for c in candidates if (c / "checkpoint.json").is_file()]
    if not candidates:
        raise SpecError(
            f"no checkpoint for task space {space!r} ships with this package; train one with "
            f"`nnf train --space {space} --out DIR` and pass --checkpoint DIR"
        )
    return candidates[0]


def export_slim(source: Path, dest: Path, *, note: str = "") -> Path:
    """Copy a checkpoint (or a run's best) without optimizer state and pre-training head: what ships.

    ``dest`` is replaced atomically if it already holds a checkpoint. A run continued from a slim
    checkpoint (``nnf train --init-from``) restarts the optimizer's moments; everything else carries on.
    """
    ckpt = read_checkpoint(Path(source))
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("optimizer", "files", "kind", "version")}
    meta["exported_from"] = {"path": str(ckpt.path), "step": meta.get("train_state", {}).get("step"), "note": note}
    tensors = {k: v for k, v in ckpt.model.items() if not k.startswith("aux.")}
    dest = Path(dest)
    if dest.exists() and not (dest / "checkpoint.json").is_file():
        raise ArtifactError(f"{dest} exists and is not a checkpoint directory; refusing to replace it")
    staging = dest.with_name(f".{dest.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    write_checkpoint(staging, meta, tensors)
    return replace_dir(staging, dest)
