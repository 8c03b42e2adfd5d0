"""Load an exported artifact in the runtime a device would use, run it, and compare it with PyTorch.

:func:`load_runner` returns an :class:`ArtifactRunner`: float32 numpy in, float32 numpy out, batch 1,
whatever the format. It hides the runtimes' differences (TorchScript / torch.export programs run by
PyTorch, ONNX Runtime sessions, the LiteRT interpreter) including int8 LiteRT models, whose inputs are
quantised and outputs dequantised with the scale / zero point stored in the model.

:func:`verify_export` runs real inputs through both the artifact and the PyTorch compact model and
reports the max / mean absolute difference, top-1 agreement and, when labels are given, the accuracy
of both (the accuracy drop is what matters for int8).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from host.errors import ArtifactError
from host.exports._util import quiet_exporters, quiet_torch_jit, require
from host.exports.formats import ExportFormat, format_for_path, get_format

#: Max abs difference a float32 export may have against the PyTorch compact model.
FLOAT_ATOL = 1e-4


class ArtifactRunner:
    """One loaded artifact. Call with a float32 array of the export's input shape (batch 1)."""

    def __init__(self, path: Path, fmt: ExportFormat, threads: int = 1) -> None:
        self.path = path
        self.fmt = fmt
        self.threads = threads
        self._quant_in: tuple[float, int] | None = None
        self._quant_out: tuple[float, int] | None = None
        self._in_dtype: Any = np.float32
        try:
            self._load()
        except (ImportError, ArtifactError):
            raise
        except Exception as exc:  # the runtimes raise many types for unreadable files
            raise ArtifactError(f"{fmt.runtime} cannot load {str(path)!r}: {exc}") from exc

    def _load(self) -> None:
        name = self.fmt.name
        if name == "torchscript":
            with quiet_torch_jit():
                self._module = torch.jit.load(str(self.path), map_location="cpu").eval()
        elif name == "torch-export":
            with quiet_exporters():
                self._module = torch.export.load(str(self.path)).module()
        elif name == "onnx":
            ort = require("onnxruntime", "running ONNX exports", "onnx")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            self._in_name = self._session.get_inputs()[0].name
        elif name == "tflite":
            interp = require("ai_edge_litert.interpreter", "running TFLite exports", "tflite", "ai-edge-litert")
            self._interp = interp.Interpreter(model_path=str(self.path), num_threads=self.threads)
            self._interp.allocate_tensors()
            inp = self._interp.get_input_details()[0]
            out = self._interp.get_output_details()[0]
            self._in_index, self._out_index = inp["index"], out["index"]
            self._in_dtype = inp["dtype"]
            if np.issubdtype(inp["dtype"], np.integer):
                self._quant_in = (float(inp["quantization"][0]), int(inp["quantization"][1]))
            if np.issubdtype(out["dtype"], np.integer):
                self._quant_out = (float(out["quantization"][0]), int(out["quantization"][1]))
        else:  # pragma: no cover - FORMATS and this dispatch are kept in step
            raise ArtifactError(f"no runtime for format {name!r}")

    def tflite_io_details(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The LiteRT interpreter's details of the (single) input and output tensor."""
        if self.fmt.name != "tflite":
            raise ArtifactError(f"tflite_io_details() is for .tflite artifacts, not {self.fmt.name}")
        return self._interp.get_input_details()[0], self._interp.get_output_details()[0]

    @property
    def quantized_io(self) -> bool:
        """True for LiteRT int8 models whose input/output tensors are int8."""
        return self._quant_in is not None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        name = self.fmt.name
        if name in ("torchscript", "torch-export"):
            with torch.inference_mode():
                return self._module(torch.from_numpy(x)).numpy()
        if name == "onnx":
            return self._session.run(None, {self._in_name: x})[0]
        if self._quant_in is not None:
            scale, zero = self._quant_in
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self._in_dtype)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_index)
        if self._quant_out is not None:
            scale, zero = self._quant_out
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, dtype=np.float32)


def load_runner(path: str | Path, fmt: str | None = None, threads: int = 1) -> ArtifactRunner:
    """Load ``path`` in its device runtime (format from ``fmt`` or the file suffix)."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"exported artifact {str(p)!r} does not exist")
    return ArtifactRunner(p, get_format(fmt) if fmt else format_for_path(p), threads=threads)


@dataclass(frozen=True)
class VerifyReport:
    """How an artifact's outputs compare with the PyTorch compact model on the same inputs.

    passed is None when no tolerance applies (int8), otherwise max_abs_diff <= tolerance.
    accuracy_* are None without labels; accuracy_drop = accuracy_reference - accuracy_artifact.
    """

    format: str
    runtime: str
    samples: int
    input_source: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    tolerance: float | None
    passed: bool | None
    accuracy_reference: float | None = None
    accuracy_artifact: float | None = None
    accuracy_drop: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_export(
    artifact: str | Path | ArtifactRunner,
    reference: torch.nn.Module,
    inputs: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    tolerance: float | None = FLOAT_ATOL,
    input_source: str = "given",
    fmt: str | None = None,
) -> VerifyReport:
    """Run ``inputs`` (N, *input_shape) one by one through the artifact and ``reference`` and compare.

    tolerance: max abs diff allowed (None: report only, as for int8 exports).
    labels: (N,) class indices; when given, the top-1 accuracy of both is reported.
    """
    runner = artifact if isinstance(artifact, ArtifactRunner) else load_runner(artifact, fmt)
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ArtifactError(f"verify_export needs a non-empty batch of inputs, got shape {tuple(inputs.shape)}")
    reference = reference.eval()
    max_diff = 0.0
    sum_diff = 0.0
    count = 0
    agree = 0
    ref_correct = art_correct = 0
    with torch.inference_mode():
        for i in range(inputs.shape[0]):
            x = inputs[i : i + 1].float().contiguous()
            ref = reference(x).numpy()
            out = runner(x.numpy())
            if out.shape != ref.shape:
                raise ArtifactError(
                    f"{runner.fmt.name} artifact {str(runner.path)!r} returned shape {out.shape}, "
                    f"the PyTorch model {ref.shape}"
                )
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.sum())
            count += diff.size
            ref_top = ref.reshape(ref.shape[0], -1).argmax(-1)
            out_top = out.reshape(out.shape[0], -1).argmax(-1)
            agree += int((ref_top == out_top).sum())
            if labels is not None:
                label = int(labels[i])
                ref_correct += int(ref_top[0] == label)
                art_correct += int(out_top[0] == label)
    n = int(inputs.shape[0])
    acc_ref = acc_art = drop = None
    if labels is not None:
        acc_ref, acc_art = ref_correct / n, art_correct / n
        drop = acc_ref - acc_art
    return VerifyReport(
        format=runner.fmt.name,
        runtime=runner.fmt.runtime,
        samples=n,
        input_source=input_source,
        max_abs_diff=max_diff,
        mean_abs_diff=sum_diff / max(count, 1),
        top1_agreement=agree / n,
        tolerance=tolerance,
        passed=None if tolerance is None else bool(max_diff <= tolerance),
        accuracy_reference=acc_ref,
        accuracy_artifact=acc_art,
        accuracy_drop=drop,
    )
