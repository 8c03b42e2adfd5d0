"""Tiny model artifacts for the agent tests, made on the spot (no committed binaries).

``onnx_*`` builders use only the ``onnx`` package (fast); the torch/TFLite ones import their frameworks
lazily. The hostile models are real: ``onnx_hang`` is a Loop of 10^15 iterations (it never finishes),
``onnx_oom`` allocates a 64 GiB tensor (fails under the worker's address-space limit).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _save_onnx(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnf-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_matmul(path: Path, n: int = 64, seed: int = 0) -> Path:
    """y = relu(x @ W), x: (1, n) float32."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _save_onnx(graph, path)


def onnx_hang(path: Path) -> Path:
    """A Loop with 10^15 iterations: runs far past any test deadline."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)],
        "hang", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[helper.make_tensor("M", TensorProto.INT64, [], [10**15]),
                     helper.make_tensor("cond", TensorProto.BOOL, [], [True])],
    )
    return _save_onnx(graph, path)


def onnx_oom(path: Path) -> Path:
    """Adds x to a 2^34-element float tensor (64 GiB) built at run time from x's shape."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Mul", ["s", "big"], ["s2"]),
         helper.make_node("ConstantOfShape", ["s2"], ["z"],
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("ReduceSum", ["z"], ["y"], keepdims=0)],
        "oom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=[helper.make_tensor("big", TensorProto.INT64, [1], [1 << 34])],
    )
    return _save_onnx(graph, path)


def _tiny_torch_module():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def torchscript(path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks torch.jit.trace deprecated
        torch.jit.trace(_tiny_torch_module(), torch.randn(1, 3, 16, 16)).save(str(path))
    return path


def torch_export(path: Path) -> Path:
    import torch

    ep = torch.export.export(_tiny_torch_module(), (torch.randn(1, 3, 16, 16),))
    torch.export.save(ep, str(path))
    return path


def onnx_from_torch(path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (dynamo=False) exporter announces its deprecation
        torch.onnx.export(_tiny_torch_module(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False)
    return path


def tflite(path: Path) -> Path:
    """A tiny conv model converted with tf.lite.TFLiteConverter from a tf.function."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    k = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def f(x):
        return tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME")), axis=[1, 2])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path.write_bytes(conv.convert())
    return path


def torchscript_file_writer(path: Path, marker: Path) -> Path:
    """A TorchScript model whose forward writes a file (``torch.save`` -> ``aten::save``) at ``marker``."""
    import torch

    class Writer(torch.nn.Module):
        def __init__(self, target: str) -> None:
            super().__init__()
            self.target = target

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.save(x, self.target)
            return x + 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks torch.jit.script deprecated
        torch.jit.script(Writer(str(marker))).save(str(path))
    return path


class _Exec:
    """Unpickling this runs ``exec(code)``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def pt2_pickle_writer(path: Path, marker: Path) -> Path:
    """A torch.export archive whose example-inputs member is a pickle that writes ``marker`` when loaded
    (``torch.export.load`` falls back to ``torch.load`` with ``weights_only=False`` on it)."""
    import io
    import zipfile

    import torch

    good = torch_export(path.with_suffix(".good.pt2"))
    buf = io.BytesIO()
    torch.save(_Exec(f"open({str(marker)!r}, 'w').write('pwned')"), buf)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data/sample_inputs/model.pt"):
                data = buf.getvalue()
            dst.writestr(info, data)
    good.unlink()
    return path


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def has_ort() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def kernel_landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none), asked directly (landlock_create_ruleset, VERSION flag)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        v = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return int(v) if v > 0 else 0
