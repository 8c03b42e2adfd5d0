"""Helpers shared by the deploy tests: a tiny ONNX model and inventory files."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np


def onnx_mlp(path: Path, n: int = 64, seed: int = 0) -> Path:
    """y = relu(x @ W1) @ W2 with x: (1, n) float32 — a small model the agent's ONNX Runtime can time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n, n)).astype(np.float32)
    w2 = rng.standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnf-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_inventory(path: Path, devices: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, table in devices.items():
        lines.append(f"[devices.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


DEVICE_PYTHON = sys.executable  # the "device" is this machine: its Python has the agent's requirements


def count_measurements(path: Path) -> tuple[int, int]:
    """(measurements, distinct measurement keys) in a campaign store (0, 0 while it does not exist yet)."""
    if not path.exists():
        return 0, 0
    with sqlite3.connect(str(path)) as c:
        try:
            rows = c.execute("SELECT kind, pass, idx, seq FROM measurements").fetchall()
        except sqlite3.OperationalError:
            return 0, 0
    return len(rows), len(set(rows))
