"""Deployable artifacts: TorchScript, torch.export, ONNX and TFLite exports of compact models.

A generated (extracted) compact model is an ordinary static ``nn.Module``; this package turns it into
the file a device runtime loads, checks that file in that runtime against PyTorch, and records where
it came from in a sidecar JSON (``FILE.json``). See ``docs/exports.md``.

    from host.exports import export_artifact, verify_export, load_runner
    result = export_artifact(compact, "tflite", "model.tflite")      # writes model.tflite + model.tflite.json
    runner = load_runner("model.tflite")                             # ai_edge_litert Interpreter
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from host.exports.formats import (
    FORMATS,
    ONNX_OPSET,
    SUPPORTED_BACKBONES,
    ExportFormat,
    format_for_path,
    get_format,
)

# The exporters import torch; the format table does not. The rest is imported on first use, so that
# ``from host.exports.formats import ...`` (the CLI's option parsing) stays cheap.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("ExportResult", "default_out", "export_artifact", "read_sidecar", "sidecar_path",
                     "source_spec"), "host.exports.export"),
    **dict.fromkeys(("InputSampler", "InputSet", "default_inputs", "from_sampler", "gaussian_sampler"),
                    "host.exports.inputs"),
    **dict.fromkeys(("FLOAT_ATOL", "ArtifactRunner", "VerifyReport", "load_runner", "verify_export"),
                    "host.exports.runtime"),
}

if TYPE_CHECKING:
    from host.exports.export import (
        ExportResult,
        default_out,
        export_artifact,
        read_sidecar,
        sidecar_path,
        source_spec,
    )
    from host.exports.inputs import InputSampler, InputSet, default_inputs, from_sampler, gaussian_sampler
    from host.exports.runtime import FLOAT_ATOL, ArtifactRunner, VerifyReport, load_runner, verify_export


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'host.exports' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FLOAT_ATOL",
    "FORMATS",
    "ONNX_OPSET",
    "SUPPORTED_BACKBONES",
    "ArtifactRunner",
    "ExportFormat",
    "ExportResult",
    "InputSampler",
    "InputSet",
    "VerifyReport",
    "default_inputs",
    "default_out",
    "export_artifact",
    "format_for_path",
    "from_sampler",
    "gaussian_sampler",
    "get_format",
    "load_runner",
    "read_sidecar",
    "sidecar_path",
    "source_spec",
    "verify_export",
]
