"""Export a compact model to a deployable artifact, check it, verify it, and write its sidecar JSON.

:func:`export_artifact` is the one entry point (``nnf export`` and ``nnf generate --format`` call it):

1. trace/convert the model with the format's exporter into a temporary file next to the target;
2. check it structurally (TorchScript: ``check_trace`` on a second input; ONNX: ``onnx.checker`` with
   full check, strict shape inference, and the fixed opset);
3. load it in the runtime a device would use and compare it with the PyTorch model on real inputs
   (max abs diff <= 1e-4 for float32; int8 reports agreement and, with labels, the accuracy drop);
4. only then move it into place atomically and write ``FILE.json`` (source spec, input/output
   shapes and dtypes, format, exporter and versions, sha256 of the artifact, verification).

A float export that fails verification raises :class:`~host.errors.ArtifactError` and leaves no file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from host.errors import ArtifactError, ConfigError
from host.exports._util import quiet_exporters, quiet_torch_jit, require, stdout_to_stderr, versions
from host.exports.formats import ONNX_OPSET, ExportFormat, check_combination, get_format
from host.exports.inputs import InputSet, default_inputs
from host.exports.runtime import FLOAT_ATOL, ArtifactRunner, VerifyReport, verify_export
from host.fileio import atomic_target, sha256_file, write_json_atomic

SIDECAR_SCHEMA = "nnf-export"
SIDECAR_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAME = "output"

_VERSIONS = {
    "torchscript": ("torch",),
    "torch-export": ("torch",),
    "onnx": ("torch", "onnx", "onnxscript", "onnxruntime"),
    "tflite": ("torch", "litert-torch", "torchao", "ai-edge-litert", "tensorflow-cpu", "tensorflow"),
}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_artifact` wrote."""

    format: str
    path: str
    sidecar: str
    precision: str
    size_bytes: int
    sha256: str
    export_seconds: float
    verification: VerifyReport | None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["verification"] = self.verification.to_json() if self.verification else None
        return d


def sidecar_path(artifact: str | Path) -> Path:
    """The sidecar JSON of an artifact: ``FILE.json`` next to ``FILE``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def read_sidecar(artifact: str | Path, *, check_hash: bool = True) -> dict[str, Any]:
    """The sidecar of ``artifact``, checked: right schema, and (``check_hash``) the artifact's sha256.

    Consumers (deploy, profiling campaigns) take input shapes/dtypes from ``["inputs"]``.
    """
    import json

    p = Path(artifact)
    side = sidecar_path(p)
    if not side.is_file():
        raise ArtifactError(f"{str(side)!r} is missing: {str(p)!r} was not written by `nnf export`")
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(side)!r} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(data, dict) or data.get("schema") != SIDECAR_SCHEMA:
        raise ArtifactError(f"{str(side)!r} is not an NN-Factory export sidecar (schema {SIDECAR_SCHEMA!r})")
    if int(data.get("version", 0)) > SIDECAR_VERSION:
        raise ArtifactError(
            f"{str(side)!r} has sidecar version {data.get('version')}, newer than this NN-Factory reads "
            f"({SIDECAR_VERSION}); upgrade nn-factory"
        )
    if check_hash:
        if not p.is_file():
            raise ArtifactError(f"{str(p)!r} does not exist (its sidecar does)")
        if sha256_file(p) != data.get("sha256"):
            raise ArtifactError(
                f"{str(p)!r} does not match the sha256 in its sidecar: it was changed or truncated after export"
            )
    return data


def default_out(model_dir: str | Path, fmt: str, int8: bool = False) -> Path:
    """Default artifact path inside a model dir: ``model.pt`` / ``model.int8.tflite`` ..."""
    return Path(model_dir) / ("model" + (".int8" if int8 else "") + get_format(fmt).suffix)


def source_spec(model: torch.nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance recorded in the sidecar: backbone, config, task, limit, gates fingerprint, ...

    Read from a compact model's ``spec`` (host.compact.CompactSpec) when there is one; ``extra`` (e.g.
    the model dir) is merged on top, ``None`` values dropped.
    """
    spec = getattr(model, "spec", None)
    src: dict[str, Any] = {}
    if spec is not None:
        meta = getattr(spec, "meta", None) or {}
        fields = {
            "backbone": getattr(spec, "backbone", None),
            "config": getattr(spec, "config_name", None),
            "config_params": getattr(spec, "config", None),
            "task": meta.get("task"),
            "limit": meta.get("limit", meta.get("activation_limit")),  # nnf generate writes activation_limit
            "gates_fingerprint": getattr(spec, "gates_fingerprint", None),
            "layout_fingerprint": getattr(spec, "layout_fingerprint", None),
            "activation_ratio": getattr(spec, "activation_ratio", None),
            "widths": getattr(spec, "widths", None),
            "meta": meta or None,
        }
        for key in ("params", "macs", "peak_activation_bytes"):
            method = getattr(spec, key, None)
            fields[key] = int(method()) if callable(method) else None
        src.update(fields)
    if extra:
        src.update(extra)
    return {k: v for k, v in src.items() if v is not None}


def _input_shape(model: torch.nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_shape is None:
        spec = getattr(model, "spec", None)
        input_shape = getattr(spec, "input_shape", None) or getattr(model, "input_shape", None)
    if input_shape is None:
        raise ConfigError("export needs the model's input shape (C, H, W): pass input_shape=...")
    return tuple(int(d) for d in input_shape)


def _export_torchscript(model: torch.nn.Module, sample: torch.Tensor, check: torch.Tensor, tmp: Path) -> None:
    with quiet_torch_jit(), torch.no_grad():
        try:
            traced = torch.jit.trace(model, (sample,), check_trace=True, check_inputs=[(check,)])
        except torch.jit.TracingCheckError as exc:
            raise ArtifactError(f"TorchScript trace check failed (data-dependent control flow?): {exc}") from exc
        torch.jit.save(traced, str(tmp))


def _export_torch_export(model: torch.nn.Module, sample: torch.Tensor, tmp: Path) -> None:
    with quiet_exporters():
        program = torch.export.export(model, (sample,), strict=False)
        torch.export.save(program, str(tmp))


def _export_onnx(model: torch.nn.Module, sample: torch.Tensor, out_shape: tuple[int, ...], tmp: Path) -> None:
    require("onnx", "ONNX export", "onnx")
    require("onnxscript", "ONNX export", "onnx")
    with quiet_exporters():
        torch.onnx.export(
            model, (sample,), str(tmp),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET, dynamo=True, external_data=False, verbose=False,
        )
    check_onnx(tmp, tuple(sample.shape), out_shape)


def check_onnx(path: Path, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    """onnx.checker (full), strict shape inference, fixed opset and the expected I/O shapes."""
    onnx = require("onnx", "ONNX export", "onnx")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ArtifactError(f"ONNX check of the export failed: {exc}") from exc
    opset = {o.domain: o.version for o in model.opset_import}.get("")
    if opset != ONNX_OPSET:
        raise ArtifactError(f"ONNX export has opset {opset}, expected the fixed opset {ONNX_OPSET}")

    def dims(value_info: Any) -> tuple[int, ...]:
        return tuple(d.dim_value for d in value_info.type.tensor_type.shape.dim)

    got_in, got_out = dims(model.graph.input[0]), dims(model.graph.output[0])
    if got_in != in_shape or got_out != out_shape:
        raise ArtifactError(
            f"ONNX export has input {got_in} / output {got_out}, expected {in_shape} / {out_shape}"
        )


def _export_tflite(model: torch.nn.Module, sample: torch.Tensor, tmp: Path) -> None:
    litert_torch = require("litert_torch", "TFLite export", "tflite", "litert-torch")
    with quiet_exporters():
        edge = litert_torch.convert(model, (sample,))
        edge.export(str(tmp))


def _io_spec(runner: ArtifactRunner, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[list, list]:
    inputs: list[dict[str, Any]] = [{"name": INPUT_NAME, "shape": list(in_shape), "dtype": "float32"}]
    outputs: list[dict[str, Any]] = [{"name": OUTPUT_NAME, "shape": list(out_shape), "dtype": "float32"}]
    if runner.fmt.name == "tflite":
        details_in, details_out = runner.tflite_io_details()
        for entry, det in ((inputs[0], details_in), (outputs[0], details_out)):
            entry["name"] = str(det["name"])
            entry["dtype"] = str(det["dtype"].__name__)
            if entry["dtype"] != "float32":
                entry["quantization"] = {"scale": float(det["quantization"][0]),
                                         "zero_point": int(det["quantization"][1])}
    return inputs, outputs


def export_artifact(
    model: torch.nn.Module,
    fmt: str,
    out: str | Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    backbone: str | None = None,
    source: Mapping[str, Any] | None = None,
    int8: bool = False,
    calibration: InputSet | None = None,
    calibration_samples: int = 64,
    verify: InputSet | None = None,
    verify_samples: int = 32,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` (a compact model, eval mode, batch 1) to ``out`` in format ``fmt``.

    input_shape: (C, H, W); defaults to ``model.spec.input_shape``.
    backbone: checked against the supported backbones; defaults to ``model.spec.backbone``.
    source: extra provenance for the sidecar (task, limit, model_dir, ...).
    int8: static int8 quantisation (onnx, tflite) on ``calibration`` (default: ``calibration_samples``
        inputs from :func:`host.exports.inputs.default_inputs`).
    verify: inputs (and labels) to compare the artifact with the model on (default: ``verify_samples``
        inputs from the same source, a different seed than calibration).
    """
    spec = get_format(fmt)
    model = model.eval()
    shape = _input_shape(model, input_shape)
    backbone = backbone or getattr(getattr(model, "spec", None), "backbone", None)
    check_combination(backbone, spec, int8)
    out = Path(out)
    if out.suffix != spec.suffix:
        raise ConfigError(
            f"output file {str(out)!r} must end in {spec.suffix!r} for format {spec.name!r} "
            "(the on-device agent picks its runtime by suffix)"
        )
    if verify is None:
        verify = default_inputs(model, shape, verify_samples, seed=seed + 1, split="test")
    if int8 and calibration is None:
        if calibration_samples < 1:
            raise ConfigError(f"--calibration must be at least 1 sample, got {calibration_samples}")
        calibration = default_inputs(model, shape, calibration_samples, seed=seed, split="val")
    for name, given in (("verification", verify), ("calibration", calibration)):
        if given is not None and tuple(given.inputs.shape[1:]) != shape:
            raise ConfigError(
                f"{name} inputs have shape {tuple(given.inputs.shape[1:])} per sample, the model takes {shape}"
            )
    gen = torch.Generator().manual_seed(seed)
    # clone: a view would drag the whole verification batch into archives that store sample inputs
    sample = verify.inputs[:1].float().clone()
    check = verify.inputs[1:2].float().clone() if verify.inputs.shape[0] > 1 else torch.randn(1, *shape, generator=gen)
    with torch.inference_mode():
        out_shape = tuple(model(sample).shape)

    start = time.perf_counter()
    with stdout_to_stderr(), atomic_target(out) as tmp:
        _export(model, spec, sample, check, out_shape, tmp, int8, calibration)
        export_seconds = time.perf_counter() - start
        runner = ArtifactRunner(tmp, spec)
        report = verify_export(
            runner, model, verify.inputs, labels=verify.labels,
            tolerance=None if int8 else FLOAT_ATOL, input_source=verify.source,
        )
        if report.passed is False:
            raise ArtifactError(
                f"{spec.name} export differs from the PyTorch model by {report.max_abs_diff:.3g} "
                f"(max abs, > {FLOAT_ATOL:g}) on {report.samples} inputs ({verify.source}); nothing written"
            )
        inputs, outputs = _io_spec(runner, (1, *shape), out_shape)
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        sidecar = {
            "schema": SIDECAR_SCHEMA,
            "version": SIDECAR_VERSION,
            "artifact": out.name,
            "format": spec.name,
            "suffix": spec.suffix,
            "precision": "int8" if int8 else "float32",
            "sha256": digest,
            "size_bytes": size,
            "inputs": inputs,
            "outputs": outputs,
            "batch_size": 1,
            "runtime": spec.runtime,
            "exporter": {
                "tool": spec.exporter,
                "opset": ONNX_OPSET if spec.name == "onnx" else None,
                "versions": versions(*_VERSIONS[spec.name]),
            },
            "source": source_spec(model, {"backbone": backbone, "input_shape": list(shape), **dict(source or {})}),
            "int8": None if not int8 else {
                "scheme": "static post-training: int8 weights (per output channel, symmetric), int8 "
                          "activations (per tensor, affine) with ranges from the calibration inputs",
                "calibration_samples": int(calibration.inputs.shape[0]),
                "calibration_source": calibration.source,
            },
            "verification": report.to_json(),
            "export_seconds": round(export_seconds, 4),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        side = sidecar_path(out)
    write_json_atomic(side, sidecar)
    return ExportResult(
        format=spec.name, path=str(out), sidecar=str(side), precision=sidecar["precision"],
        size_bytes=size, sha256=digest, export_seconds=export_seconds, verification=report,
    )


def _export(
    model: torch.nn.Module, spec: ExportFormat, sample: torch.Tensor, check: torch.Tensor,
    out_shape: tuple[int, ...], tmp: Path, int8: bool, calibration: InputSet | None,
) -> None:
    from host.exports import int8 as int8_mod

    try:
        if spec.name == "torchscript":
            _export_torchscript(model, sample, check, tmp)
        elif spec.name == "torch-export":
            _export_torch_export(model, sample, tmp)
        elif spec.name == "onnx":
            if not int8:
                _export_onnx(model, sample, out_shape, tmp)
            else:
                assert calibration is not None
                with tempfile.TemporaryDirectory(prefix="nnf-onnx-") as work:
                    float_tmp = Path(work) / "float.onnx"
                    _export_onnx(model, sample, out_shape, float_tmp)
                    int8_mod.onnx_int8(float_tmp, INPUT_NAME, calibration.inputs, tmp)
                    check_onnx(tmp, tuple(sample.shape), out_shape)
        elif spec.name == "tflite":
            if not int8:
                _export_tflite(model, sample, tmp)
            else:
                assert calibration is not None
                int8_mod.tflite_int8(model, sample, calibration.inputs, tmp)
    except (ArtifactError, ConfigError, ImportError):
        raise
    except Exception as exc:  # exporters raise many types; name the format and the cause
        raise ArtifactError(f"{spec.name} export failed ({spec.exporter}): {type(exc).__name__}: {exc}") from exc
    if not tmp.exists() or tmp.stat().st_size == 0:
        raise ArtifactError(f"{spec.name} exporter wrote no file")
