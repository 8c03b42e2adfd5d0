"""Building artifacts: one hard gate vector -> extracted compact subnet -> runtime artifact + its facts.

Artifacts are content-addressed (sha256): the agent is asked first, and reference subnets, repeated passes
and resumed runs re-upload nothing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from host.exports.formats import ExportFormat


def gates_sha256(gates: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for g in gates:
        bits = (g.detach().cpu() > 0.5).to(torch.uint8).numpy()
        h.update(len(bits).to_bytes(4, "little"))
        h.update(np.packbits(bits).tobytes())
    return h.hexdigest()


@dataclass
class BuiltArtifact:
    data: bytes
    artifact_sha256: str
    param_bytes: int
    peak_activation_bytes: int
    macs: int | None

    def facts(self) -> dict:
        return {
            "artifact_sha256": self.artifact_sha256,
            "artifact_bytes": len(self.data),
            "param_bytes": self.param_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "macs": self.macs,
        }


class SubnetBuilder(Protocol):
    """Turn one hard gate vector into a runtime artifact plus its structural facts."""

    runtime: str

    def __call__(self, gates: Sequence[torch.Tensor]) -> BuiltArtifact: ...


def torchscript_bytes(module: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """Trace a static (compact) module and serialise it as a TorchScript archive."""
    import warnings

    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export; the PyTorch agent runtime still loads it
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit\.")
        with torch.no_grad():
            traced = torch.jit.trace(module.eval(), example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def format_for_runtime(runtime: str) -> ExportFormat:
    """The export format a device runtime loads (the one table: ``host.exports.formats``; any spelling)."""
    from host.exports.formats import format_for_agent_runtime

    return format_for_agent_runtime(runtime)


class ExtractingBuilder:
    """Extract the subnet from a gated supernet (``host.extraction.extract``) and export it.

    runtime "torchscript" traces with ``torch.jit.trace`` in memory (fast path); "torch_export",
    "onnxruntime" and "litert" go through ``host.exports.export_artifact`` (checked against PyTorch on one
    input). Structural facts (``param_bytes`` of float32 parameters and buffers, ``peak_activation_bytes``)
    come from the exact structure model (``host.profiling.predictor.StructureModel``, calibrated once and checked
    against real specs), which saves building each compact spec on the meta device (~50-200 ms);
    ``exact_costs=True`` reads them from each spec instead (and ``macs`` too).
    """

    def __init__(self, net: torch.nn.Module, runtime: str = "torchscript", *, exact_costs: bool = False,
                 constant_weights: bool = False) -> None:
        self.format = format_for_runtime(runtime)
        self.net = net.eval()
        self.runtime = self.format.agent_runtime  # any spelling in; the agent's name on the wire
        self.input_shape = tuple(net.input_shape)
        self.constant_weights = constant_weights
        self.structure = None
        if not exact_costs:
            from host.profiling.predictor import StructureModel

            model = StructureModel.calibrate(net)
            if model.max_rel_error < 1e-9:  # exact for every registered backbone; otherwise use the specs
                self.structure = model

    def _export(self, compact: torch.nn.Module) -> bytes:
        if self.runtime == "torchscript":
            return torchscript_bytes(compact, self.input_shape)
        import tempfile

        from host.exports import export_artifact

        with tempfile.TemporaryDirectory(prefix="nnf-export-") as tmp:
            out = Path(tmp) / f"model{self.format.suffix}"
            export_artifact(compact, self.format.name, out, verify_samples=2)
            return out.read_bytes()

    def __call__(self, gates: Sequence[torch.Tensor]) -> BuiltArtifact:
        from host.extraction import extract

        compact = extract(self.net, list(gates))
        if self.constant_weights:
            _constant_weights(compact)
        data = self._export(compact)
        if self.structure is not None:
            counts = np.array([[int(g.sum().item()) for g in gates]])
            param_bytes = int(round(float(self.structure.param_bytes(counts)[0])))
            peak = int(round(float(self.structure.peak_activation_bytes(counts)[0])))
            macs = None
        else:
            spec = compact.spec
            param_bytes, peak, macs = int(spec.param_bytes()), int(spec.peak_activation_bytes()), int(spec.macs())
        return BuiltArtifact(
            data=data,
            artifact_sha256=hashlib.sha256(data).hexdigest(),
            param_bytes=param_bytes,
            peak_activation_bytes=peak,
            macs=macs,
        )


def _constant_weights(module: torch.nn.Module) -> None:
    """Zero every floating tensor (BatchNorm running variance one): same architecture, same cost, and the
    exported file is mostly zeros (a few KB after gzip). Latency does not depend on weight values."""
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dtype.is_floating_point:
                t.fill_(1.0 if name.endswith("running_var") else 0.0)
