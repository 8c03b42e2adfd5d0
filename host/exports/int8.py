"""int8 post-training quantisation for the ONNX and TFLite exports.

Both use static quantisation: weights int8 (per output channel), activations int8 with ranges observed
on a calibration set of real inputs (``--calibration N`` samples from the task space when the model
names one, otherwise from an input sampler).

- TFLite: PyTorch 2 export quantisation (PT2E) with litert-torch's ``PT2EQuantizer`` (symmetric,
  per-channel weights, histogram observers for activations); the quantised graph is converted by
  ``litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))``. The model's input and
  output tensors are int8; their scale / zero point are stored in the model (the interpreter's
  ``get_input_details()[0]["quantization"]``).
- ONNX: ONNX Runtime's ``quantize_static`` in QDQ form on the float export (after
  ``quant_pre_process``), per-channel int8 weights and int8 activations; inputs/outputs stay float32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from host.exports._util import quiet_exporters, require


def tflite_int8(model: torch.nn.Module, sample: torch.Tensor, calibration: torch.Tensor, out: Path) -> None:
    """Quantise ``model`` with PT2E on ``calibration`` (N, *input) and write the int8 .tflite to ``out``."""
    litert_torch = require("litert_torch", "TFLite export", "tflite", "litert-torch")
    pt2e = require("litert_torch.quantize.pt2e_quantizer", "TFLite int8 export", "tflite", "litert-torch")
    qcfg = require("litert_torch.quantize.quant_config", "TFLite int8 export", "tflite", "litert-torch")
    quantize_pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "TFLite int8 export", "tflite", "torchao")
    quantizer = pt2e.PT2EQuantizer().set_global(
        pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    with quiet_exporters():
        graph = torch.export.export(model.eval(), (sample,)).module()
        graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for i in range(calibration.shape[0]):
                graph(calibration[i : i + 1].float())
        graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        # The graph was exported from an eval-mode model (BN already in inference form); the flag on the
        # GraphModule wrapper still says "training", which litert-torch warns about.
        graph.training = False
        edge = litert_torch.convert(graph, (sample,), quant_config=qcfg.QuantConfig(pt2e_quantizer=quantizer))
        edge.export(str(out))


def onnx_int8(float_onnx: Path, input_name: str, calibration: torch.Tensor, out: Path) -> None:
    """Quantise the float ONNX model ``float_onnx`` statically (QDQ) on ``calibration``, write ``out``."""
    quant = require("onnxruntime.quantization", "ONNX int8 export", "onnx", "onnxruntime")
    shape_inf = require("onnxruntime.quantization.shape_inference", "ONNX int8 export", "onnx", "onnxruntime")
    samples = [{input_name: calibration[i : i + 1].float().numpy()} for i in range(calibration.shape[0])]

    class _Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="nnf-onnx-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        shape_inf.quant_pre_process(str(float_onnx), str(pre))
        quant.quantize_static(
            str(pre),
            str(out),
            _Reader(),
            quant_format=quant.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quant.QuantType.QInt8,
            weight_type=quant.QuantType.QInt8,
            calibrate_method=quant.CalibrationMethod.MinMax,
        )
