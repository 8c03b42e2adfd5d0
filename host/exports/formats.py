"""The artifact formats NN-Factory exports, and which runtime loads each one.

One table is the single source of truth for a format's name, file suffix, the runtime a device uses to
load it, the optional extra it needs and whether int8 post-training quantisation is offered. The file
suffix is a contract with the on-device agent (which picks its runtime by suffix):

    torchscript    .pt      torch.jit.trace      -> torch.jit.load            (desktop / Jetson, PyTorch)
    torch-export   .pt2     torch.export.export  -> torch.export.load         (desktop / Jetson, PyTorch 2)
    onnx           .onnx    torch.onnx (dynamo)  -> onnxruntime               (anything with ONNX Runtime)
    tflite         .tflite  litert-torch         -> ai_edge_litert Interpreter (Android phones)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host.errors import ConfigError, suggest

#: ONNX opset every export is written with (and checked against). 18 is the torch.onnx dynamo
#: exporter's native opset in torch 2.13, so no version conversion pass runs on the graph.
ONNX_OPSET = 18

#: Backbones whose compact models every format can export.
SUPPORTED_BACKBONES: tuple[str, ...] = ("resnet", "mobilenetv2", "vit", "centernet")


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    name: the ``--format`` value. suffix: file suffix of the artifact (the agent dispatches on it).
    runtime: what loads it on a device. extra: the pyproject extra that provides exporter + runtime.
    int8: whether int8 post-training quantisation is offered for it.
    """

    name: str
    suffix: str
    exporter: str
    runtime: str
    extra: str
    int8: bool


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("torchscript", ".pt", "torch.jit.trace", "torch.jit.load", "host", int8=False),
        ExportFormat("torch-export", ".pt2", "torch.export.export", "torch.export.load", "host", int8=False),
        ExportFormat("onnx", ".onnx", "torch.onnx.export(dynamo=True)", "onnxruntime", "onnx", int8=True),
        ExportFormat("tflite", ".tflite", "litert_torch.convert", "ai_edge_litert.interpreter", "tflite", int8=True),
    )
}


def get_format(name: str) -> ExportFormat:
    """The format called ``name``; a ConfigError listing the valid names otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}.{suggest(name, FORMATS)}"
        ) from None


def format_for_path(path: str | Path) -> ExportFormat:
    """The format of an artifact file, from its suffix."""
    suffix = Path(path).suffix
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    raise ConfigError(
        f"cannot tell the export format of {str(path)!r} from its suffix {suffix!r}; expected one of "
        + ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS.values())
    )


def check_combination(backbone: str | None, fmt: ExportFormat, int8: bool) -> None:
    """Refuse backbone/format/precision combinations that are not supported, saying what is.

    backbone None (a plain module without a spec) skips the backbone check.
    """
    if backbone is not None and backbone not in SUPPORTED_BACKBONES:
        raise ConfigError(
            f"exporting backbone {backbone!r} is not supported; exportable backbones: "
            f"{', '.join(SUPPORTED_BACKBONES)}"
        )
    if int8 and not fmt.int8:
        offered = ", ".join(f.name for f in FORMATS.values() if f.int8)
        raise ConfigError(
            f"int8 quantisation is not offered for format {fmt.name!r} (the PyTorch CPU runtime has no "
            f"portable int8 kernels for it); use --int8 with one of: {offered}, or drop --int8"
        )
