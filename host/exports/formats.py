"""The artifact formats NN-Factory exports, and which runtime loads each one.

One table is the single source of truth for a format's name, file suffix, the runtime a device uses to
load it, the optional extra it needs and whether int8 post-training quantisation is offered. The file
suffix is a contract with the on-device agent (which picks its runtime by suffix):

    name           suffix   exporter             -> loader on the device       agent runtime  (typical device)
    torchscript    .pt      torch.jit.trace      -> torch.jit.load             torchscript    (desktop / Jetson)
    torch-export   .pt2     torch.export.export  -> torch.export.load          torch_export   (desktop / Jetson)
    onnx           .onnx    torch.onnx (dynamo)  -> onnxruntime                onnxruntime    (anything with ORT)
    tflite         .tflite  litert-torch         -> ai_edge_litert Interpreter litert         (Android phones)

The *name* is what users type, for ``--format`` and ``--runtime`` alike (a format has exactly one runtime,
see ``host/commands/options.py``). The *agent runtime* is the name on the wire (the ``Runtime`` enum of
the agent's ``.proto``) and in campaign stores and device profiles; :func:`resolve_format` also accepts it,
and the older spellings in :data:`ALIASES`.
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
    int8: whether int8 post-training quantisation is offered for it. agent_runtime: the agent's name for the
    runtime (wire protocol, campaign stores, device profiles). runtime_family: the runtime package a deployed
    agent needs for it (``host.deploy.package.RUNTIME_MODULES``).
    """

    name: str
    suffix: str
    exporter: str
    runtime: str
    extra: str
    int8: bool
    agent_runtime: str
    runtime_family: str


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("torchscript", ".pt", "torch.jit.trace", "torch.jit.load", "host", int8=False,
                     agent_runtime="torchscript", runtime_family="torch"),
        ExportFormat("torch-export", ".pt2", "torch.export.export", "torch.export.load", "host", int8=False,
                     agent_runtime="torch_export", runtime_family="torch"),
        ExportFormat("onnx", ".onnx", "torch.onnx.export(dynamo=True)", "onnxruntime", "onnx", int8=True,
                     agent_runtime="onnxruntime", runtime_family="onnx"),
        ExportFormat("tflite", ".tflite", "litert_torch.convert", "ai_edge_litert.interpreter", "tflite", int8=True,
                     agent_runtime="litert", runtime_family="litert"),
    )
}

#: Older and alternative spellings of a format/runtime name -> its name. Accepted everywhere a runtime or
#: format is named (the CLI prints a deprecation note for them); the agent's runtime names are among them.
ALIASES: dict[str, str] = {
    "torch_export": "torch-export",
    "torchexport": "torch-export",
    "pt2": "torch-export",
    "onnxruntime": "onnx",
    "ort": "onnx",
    "litert": "tflite",
    "tflite_runtime": "tflite",
    "torch": "torchscript",
    "pt": "torchscript",
}


def resolve_format(name: str) -> tuple[ExportFormat, bool]:
    """``(format, is_alias)`` for a format or runtime name, any accepted spelling (case-insensitive)."""
    key = str(name).strip().lower()
    if key in FORMATS:
        return FORMATS[key], False
    if key in ALIASES:
        return FORMATS[ALIASES[key]], True
    known = list(FORMATS)
    raise ConfigError(f"unknown runtime/format {name!r}; choose one of {', '.join(known)}.{suggest(key, known)}")


def format_for_agent_runtime(agent_runtime: str) -> ExportFormat:
    """The format whose agent runtime name is ``agent_runtime`` (e.g. 'litert' -> tflite)."""
    for fmt in FORMATS.values():
        if fmt.agent_runtime == agent_runtime:
            return fmt
    return resolve_format(agent_runtime)[0]


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


#: Python modules each extra provides that exporting needs (checked before any work; none are imported).
EXTRA_MODULES: dict[str, tuple[tuple[str, str], ...]] = {
    "host": (),
    "onnx": (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")),
    "tflite": (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")),
}


def check_installed(fmt: ExportFormat) -> None:
    """Raise MissingExtraError (with the pip command) unless ``fmt``'s exporter and runtime are installed.

    Cheap (``importlib.util.find_spec``, nothing is imported): commands call it before writing anything.
    """
    import importlib.util

    from host.errors import MissingExtraError

    for module, package in EXTRA_MODULES.get(fmt.extra, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(f"the {fmt.name} format", fmt.extra, package)


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
