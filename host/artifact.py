"""Storing compact models: ``model.safetensors`` (weights) + ``spec.json`` (versioned architecture spec).

Nothing is pickled: loading rebuilds the architecture from the JSON spec and assigns the safetensors tensors.
``spec.json`` carries the sha256 of the weights file, so a truncated or corrupt file is detected before use.

Writes are atomic: the directory is assembled next to its destination and renamed into place, so a crash
leaves either the old model or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from host.compact import CompactModel, CompactSpec
from host.errors import ArtifactError, SpecError
from host.fileio import sha256_file, staging_dir, write_json_atomic

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"


def save_compact(model: CompactModel, out_dir: str | os.PathLike[str], *, meta: dict | None = None) -> Path:
    """Save ``model`` to ``out_dir`` (created or replaced atomically). Returns the directory."""
    dest = Path(out_dir)
    if dest.exists() and not dest.is_dir():
        raise ArtifactError(f"{dest} exists and is not a directory; choose another --out")
    if dest.exists() and any(dest.iterdir()) and not (dest / SPEC_FILE).exists():
        raise ArtifactError(f"{dest} is a non-empty directory that holds no compact model; refusing to replace it")
    with staging_dir(dest) as build:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.net.state_dict().items()}
        save_file(tensors, str(build / WEIGHTS_FILE), metadata={"format": "nnfactory.compact-model"})
        spec_json = model.spec.to_json()
        if meta:
            spec_json["meta"] = {**spec_json["meta"], **meta}
        spec_json["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(build / WEIGHTS_FILE)}
        write_json_atomic(build / SPEC_FILE, spec_json)
    return dest


def read_spec(model_dir: str | os.PathLike[str]) -> tuple[CompactSpec, dict[str, Any]]:
    """Read and validate ``spec.json`` of a compact model directory: (spec, raw JSON)."""
    d = Path(model_dir)
    spec_path = d / SPEC_FILE
    if not d.is_dir():
        raise SpecError(f"{d} is not a directory; pass the directory written by `nnf generate` or save_compact()")
    if not spec_path.is_file():
        raise SpecError(f"{d} holds no {SPEC_FILE}: it is not a compact model directory")
    try:
        raw = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{spec_path} is not valid JSON ({exc}); the file is corrupt, regenerate the model") from exc
    return CompactSpec.from_json(raw, source=str(spec_path)), raw


def load_compact(model_dir: str | os.PathLike[str]) -> CompactModel:
    """Rebuild a compact model saved by :func:`save_compact` (no pickle; weights checked by sha256)."""
    d = Path(model_dir)
    spec, raw = read_spec(d)
    weights = raw.get("weights") or {}
    wpath = d / str(weights.get("file", WEIGHTS_FILE))
    if not wpath.is_file():
        raise ArtifactError(f"{wpath} is missing; the model directory is incomplete, regenerate the model")
    expected = weights.get("sha256")
    if expected and sha256_file(wpath) != expected:
        raise ArtifactError(
            f"{wpath} does not match the sha256 recorded in {SPEC_FILE}: the weights file is truncated or "
            "corrupt; regenerate or re-copy the model"
        )
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{wpath} is not a readable safetensors file ({exc}); regenerate the model") from exc
    net = spec.build("meta")
    try:
        net.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{wpath} does not fit the architecture in {SPEC_FILE}: {exc}") from exc
    return CompactModel(net, spec).eval()


def model_summary(model: CompactModel) -> dict[str, Any]:
    return {**model.spec.summary(), "meta": model.spec.meta}


__all__ = ["SPEC_FILE", "WEIGHTS_FILE", "load_compact", "model_summary", "read_spec", "save_compact"]
