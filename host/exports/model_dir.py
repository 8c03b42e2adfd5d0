"""Export a compact model directory (``spec.json`` + ``model.safetensors``, see host.artifact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from host.errors import SpecError
from host.exports.export import ExportResult, default_out, export_artifact
from host.exports.inputs import InputSampler, InputSet, from_sampler
from host.fileio import sha256_file

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"


def _not_compact(path: Path, why: str) -> SpecError:
    return SpecError(
        f"{str(path)!r} is not a compact model directory ({why}); expected a directory with {SPEC_FILE} "
        f"and {WEIGHTS_FILE} as written by `nnf generate` / host.artifact.save_compact"
    )


def read_spec_json(model_dir: str | Path) -> dict[str, Any]:
    """The raw ``spec.json`` of a compact model dir, after checking the dir looks like one."""
    p = Path(model_dir)
    if not p.exists():
        raise _not_compact(p, "it does not exist")
    if not p.is_dir():
        raise _not_compact(p, "it is a file, not a directory")
    spec_file = p / SPEC_FILE
    if not spec_file.is_file():
        raise _not_compact(p, f"it has no {SPEC_FILE}")
    if not (p / WEIGHTS_FILE).is_file():
        raise _not_compact(p, f"it has no {WEIGHTS_FILE}")
    try:
        data = json.loads(spec_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_compact(p, f"{SPEC_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _not_compact(p, f"{SPEC_FILE} is not a JSON object")
    return data


def load_compact_dir(model_dir: str | Path) -> torch.nn.Module:
    """Load a compact model dir with host.artifact.load_compact (no pickle), after a friendly check."""
    read_spec_json(model_dir)
    from host.artifact import load_compact

    return load_compact(Path(model_dir))


def export_model_dir(
    model_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    int8: bool = False,
    calibration_samples: int = 64,
    verify_samples: int = 32,
    sampler: InputSampler | None = None,
    seed: int = 0,
) -> ExportResult:
    """Export the compact model in ``model_dir`` to ``out`` (default ``MODEL_DIR/model[.int8].SUFFIX``).

    sampler: input sampler for calibration/verification when the model names no task space.
    """
    spec_json = read_spec_json(model_dir)
    compact = load_compact_dir(model_dir)
    target = Path(out) if out is not None else default_out(model_dir, fmt, int8)
    calibration: InputSet | None = None
    verify: InputSet | None = None
    if sampler is not None:
        verify = from_sampler(sampler, verify_samples, seed + 1, "input sampler")
        if int8:
            calibration = from_sampler(sampler, calibration_samples, seed, "input sampler")
    source = {
        "model_dir": str(Path(model_dir).resolve()),
        "spec_sha256": sha256_file(Path(model_dir) / SPEC_FILE),
        "weights_sha256": (spec_json.get("weights") or {}).get("sha256"),
    }
    return export_artifact(
        compact, fmt, target, source=source, int8=int8, calibration=calibration,
        calibration_samples=calibration_samples, verify=verify, verify_samples=verify_samples, seed=seed,
    )
