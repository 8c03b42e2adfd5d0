"""Inference runtimes behind one small interface.

A :class:`Backend` knows how to tell whether its runtime is installed *without importing it* (the agent's
server process stays light: it never imports torch/onnxruntime/litert), and, inside a measurement worker,
how to load an artifact into a :class:`LoadedModel` whose ``run()`` performs exactly one synchronous
inference on inputs prepared beforehand.

Backends and the artifact formats they accept:

=================  ===========  ======================================  =============
name               suffix       loader                                  carries code?
=================  ===========  ======================================  =============
``torchscript``    ``.pt``      ``torch.jit.load`` (TorchScript zip)     yes: TorchScript programs
``torch_export``   ``.pt2``     ``torch.export.load`` (ExportedProgram)  yes: an FX graph of ATen ops,
                                                                        and pickled data (see below)
``onnxruntime``    ``.onnx``    ``onnxruntime.InferenceSession``         no (operator graph), but a
                                                                        native parser is exposed
``litert``         ``.tflite``  ``ai_edge_litert.interpreter``           no (operator graph), same
=================  ===========  ======================================  =============

TorchScript archives are read by TorchScript's own C++ deserialiser (its pickle subset builds only
TorchScript types; Python's ``pickle`` is not involved), but the archive's code *runs*: TorchScript can
call operators with side effects (e.g. ``aten::save`` writes a file). ``torch.export.load`` is worse: for
members of the archive it calls ``torch.load`` with ``weights_only=True`` and, when that fails, falls back to
``weights_only=False``, i.e. Python's unpickler, which executes arbitrary Python while *loading*. Such
**pickle-bearing** formats (``BackendInfo.pickle_bearing``) are refused unless the operator starts the
agent with ``--allow-pickle-formats``. Measuring children run
under a Landlock sandbox where the kernel supports it (``agent.sandbox``): no file creation or writes, no
TCP. See the trust model in ``agent/__init__.py``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Values of the proto enum nnfactory.agent.v1.Runtime (kept here so workers need no protobuf import).
RUNTIME_UNSPECIFIED = 0
RUNTIME_TORCHSCRIPT = 1
RUNTIME_TORCH_EXPORT = 2
RUNTIME_ONNXRUNTIME = 3
RUNTIME_LITERT = 4

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
DTYPE_BYTES = {"float32": 4, "float16": 2, "float64": 8, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}

PICKLE_REFUSAL = (
    "runtime {name!r}: this artifact format carries pickled data that its loader unpickles with Python's pickle "
    "(torch.export.load falls back to torch.load with weights_only=False), which runs arbitrary code while loading. This agent "
    "refuses pickle-bearing formats: export TorchScript (.pt), ONNX or TFLite instead, or start the agent with "
    "--allow-pickle-formats if every client that holds its token is trusted"
)


@dataclass(frozen=True)
class BackendInfo:
    """Static facts about one backend (no import of the runtime needed)."""

    runtime: int
    name: str
    suffixes: tuple[str, ...]
    module: str  # importable module that must exist
    dist: str  # distribution whose version we report
    carries_code: bool
    options: tuple[str, ...] = ()  # accepted ProfileRequest.options keys
    devices: tuple[str, ...] = ("cpu",)
    pickle_bearing: bool = False  # the loader runs Python's unpickler on the artifact (refused by default)


BACKENDS: dict[int, BackendInfo] = {
    RUNTIME_TORCHSCRIPT: BackendInfo(
        RUNTIME_TORCHSCRIPT, "torchscript", (".pt", ".ts", ".torchscript"), "torch", "torch", True,
        options=("inference_mode",), devices=("cpu", "cuda"),
    ),
    RUNTIME_TORCH_EXPORT: BackendInfo(
        RUNTIME_TORCH_EXPORT, "torch_export", (".pt2",), "torch", "torch", True,
        options=("inference_mode",), devices=("cpu", "cuda"), pickle_bearing=True,
    ),
    RUNTIME_ONNXRUNTIME: BackendInfo(
        RUNTIME_ONNXRUNTIME, "onnxruntime", (".onnx",), "onnxruntime", "onnxruntime", False,
        options=("graph_optimization_level",), devices=("cpu", "cuda"),
    ),
    RUNTIME_LITERT: BackendInfo(
        RUNTIME_LITERT, "litert", (".tflite",), "ai_edge_litert", "ai-edge-litert", False,
        options=("xnnpack",),
    ),
}

NAME_TO_RUNTIME = {b.name: r for r, b in BACKENDS.items()}


def runtime_name(runtime: int) -> str:
    info = BACKENDS.get(runtime)
    return info.name if info else f"runtime#{runtime}"


def is_installed(runtime: int) -> bool:
    """Whether the runtime's Python module can be imported (checked without importing it)."""
    info = BACKENDS.get(runtime)
    if info is None:
        return False
    try:
        return importlib.util.find_spec(info.module) is not None
    except (ImportError, ValueError):
        return False


def dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def installed_runtimes() -> list[BackendInfo]:
    return [info for r, info in BACKENDS.items() if is_installed(r)]


def runtime_from_suffix(path: str | Path) -> int:
    """Runtime implied by a file name (RUNTIME_UNSPECIFIED when the suffix is unknown)."""
    suffix = Path(path).suffix.lower()
    for r, info in BACKENDS.items():
        if suffix in info.suffixes:
            return r
    return RUNTIME_UNSPECIFIED


def sniff_runtime(path: str | Path) -> int:
    """Guess the runtime from an artifact's bytes (RUNTIME_UNSPECIFIED when unsure).

    TFLite flatbuffers carry the identifier ``TFL3`` at offset 4; TorchScript and torch.export archives
    are zip files told apart by their members; ONNX is a protobuf ModelProto, which starts with field 1
    (``ir_version``, tag byte 0x08).
    """
    p = Path(path)
    with p.open("rb") as fh:
        head = fh.read(8)
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return RUNTIME_LITERT
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return RUNTIME_UNSPECIFIED
        if any(n.endswith("serialized_exported_program.json") or n.endswith("/archive_format")
               or n == "archive_format" for n in names):
            return RUNTIME_TORCH_EXPORT
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return RUNTIME_TORCHSCRIPT
        return RUNTIME_UNSPECIFIED
    if head[:1] == b"\x08":
        return RUNTIME_ONNXRUNTIME
    return RUNTIME_UNSPECIFIED


# --------------------------------------------------------------------------------------------------
# Worker side: everything below imports the runtime lazily and is only used inside a worker process.
# --------------------------------------------------------------------------------------------------


class ModelLoadError(Exception):
    """The runtime could not load the artifact (corrupt, wrong format, unsupported ops)."""


class InputError(Exception):
    """The requested inputs do not fit the model."""


class UnavailableError(Exception):
    """The runtime or the device is not available here."""


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass
class LoadedModel:
    """A loaded model with its inputs bound; ``run()`` does one synchronous inference."""

    run: Any
    inputs: list[InputSpec]
    device: str = "cpu"
    device_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    cuda: bool = False
    reset_cuda_peak: Any = None
    cuda_peak_bytes: Any = None


def make_arrays(specs: list[InputSpec], seed: int) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        if s.dtype.startswith("float"):
            out.append(rng.standard_normal(s.shape).astype(s.dtype))
        elif s.dtype == "bool":
            out.append(np.zeros(s.shape, dtype=bool))
        else:
            out.append(np.zeros(s.shape, dtype=s.dtype))
    return out


def describe_inputs(specs: list[InputSpec]) -> str:
    """``'x' [1, 64] float32, 'y' [-1, 3] int64`` (-1: a dynamic dimension)."""
    return ", ".join(f"{s.name!r} {list(s.shape)} {s.dtype}" for s in specs) or "none"


def _merge_specs(requested: list[InputSpec], recorded: list[InputSpec] | None, what: str, *,
                 static_dims: bool = True) -> list[InputSpec]:
    """Requested specs win; missing ones come from what the model records (static shapes only).

    Where the model records its inputs, a requested name must be one of them, and the rank, the dtype and
    (``static_dims``) every static dimension must agree: the error names the field and the real inputs.
    """
    if requested:
        if recorded is not None and len(requested) != len(recorded):
            raise InputError(f"inputs: the {what} has {len(recorded)} input(s) ({describe_inputs(recorded)}), "
                             f"the request gave {len(requested)}")
        merged = []
        by_name = {r.name: r for r in recorded or ()}
        for i, r in enumerate(requested):
            rec = None
            if recorded is not None:
                if r.name and r.name not in by_name:
                    raise InputError(f"inputs[{i}].name {r.name[:80]!r} is not an input of the {what}; its inputs are "
                                     f"{describe_inputs(recorded)}")
                rec = by_name[r.name] if r.name else recorded[i]
            name = r.name or (rec.name if rec else f"input{i}")
            spec = InputSpec(name, tuple(r.shape), r.dtype or "float32")
            if rec is not None:
                if len(spec.shape) != len(rec.shape) or (static_dims and any(
                        d >= 0 and d != want for d, want in zip(rec.shape, spec.shape, strict=True))):
                    raise InputError(f"inputs[{i}].shape {list(spec.shape)} does not fit the {what}'s input {rec.name!r} "
                                     f"{list(rec.shape)} (-1: any size); its inputs are {describe_inputs(recorded or [])}")
                if rec.dtype in DTYPES and spec.dtype != rec.dtype:
                    raise InputError(f"inputs[{i}].dtype {spec.dtype} does not fit the {what}'s input {rec.name!r} "
                                     f"({rec.dtype}); its inputs are {describe_inputs(recorded or [])}")
            merged.append(spec)
        return merged
    if recorded is None:
        raise InputError(f"inputs: the {what} does not record its input shapes: pass input shapes in the request "
                         f"(nnf profile-model: --input-shape)")
    for r in recorded:
        if any((d is None or d < 0) for d in r.shape):
            raise InputError(
                f"inputs: the {what} input {r.name!r} has a dynamic shape {list(r.shape)}: pass concrete input shapes"
            )
    return recorded


def _torch_versions(torch: Any) -> dict[str, str]:
    v = {"torch": torch.__version__}
    if torch.version.cuda:
        v["cuda"] = str(torch.version.cuda)
    return v


def _torch_device(torch: Any, device: str) -> tuple[Any, str]:
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UnavailableError(f"device {device!r} requested but torch.cuda.is_available() is False here")
        dev = torch.device(device)
        return dev, torch.cuda.get_device_name(dev)
    if device not in ("", "cpu"):
        raise UnavailableError(f"unknown device {device!r} for the PyTorch runtimes: use 'cpu' or 'cuda[:N]'")
    return torch.device("cpu"), ""


def _load_torch(runtime: int, path: str, device: str, threads: int, specs: list[InputSpec], seed: int,
                options: dict[str, str]) -> LoadedModel:
    import torch

    torch.set_num_threads(max(1, threads))
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    dev, dev_name = _torch_device(torch, device)
    recorded: list[InputSpec] | None = None
    try:
        if runtime == RUNTIME_TORCHSCRIPT:
            module = torch.jit.load(path, map_location=dev)
            module.eval()
            what = "TorchScript artifact"
        else:
            ep = torch.export.load(path)
            recorded = _export_input_specs(ep)
            module = ep.module()
            if dev.type != "cpu":
                module = module.to(dev)
            what = "torch.export artifact"
    except Exception as exc:  # the loaders raise many types (RuntimeError, zip errors, KeyError...)
        raise ModelLoadError(f"{runtime_name(runtime)} could not load the artifact: {exc}") from exc
    specs = _merge_specs(specs, recorded, what)
    arrays = make_arrays(specs, seed)
    tensors = [torch.from_numpy(a).to(dev) for a in arrays]
    use_inference_mode = options.get("inference_mode", "1") not in ("0", "false")
    cuda = dev.type == "cuda"
    mode = torch.inference_mode if use_inference_mode else torch.no_grad

    if cuda:
        sync = torch.cuda.synchronize

        def run() -> None:
            with mode():
                module(*tensors)
            sync(dev)
    else:

        def run() -> None:
            with mode():
                module(*tensors)

    lm = LoadedModel(run=run, inputs=specs, device=str(dev), device_name=dev_name, versions=_torch_versions(torch),
                     cuda=cuda, extra={"inference_mode": str(use_inference_mode).lower()})
    if cuda:
        def reset_cuda_peak() -> None:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)

        lm.reset_cuda_peak = reset_cuda_peak
        lm.cuda_peak_bytes = lambda: int(torch.cuda.max_memory_allocated(dev))
    return lm


def _export_input_specs(ep: Any) -> list[InputSpec] | None:
    try:
        user_inputs = list(ep.graph_signature.user_inputs)
        by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        specs = []
        for name in user_inputs:
            val = by_name[name].meta.get("val")
            if val is None or not hasattr(val, "shape"):
                return None
            shape = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else -1 for d in val.shape)
            specs.append(InputSpec(name, shape, str(val.dtype).replace("torch.", "")))
        return specs
    except (AttributeError, KeyError, TypeError):
        return None


_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _load_onnx(path: str, device: str, threads: int, specs: list[InputSpec], seed: int,
               options: dict[str, str]) -> LoadedModel:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    level = options.get("graph_optimization_level", "all")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise InputError(f"option graph_optimization_level={level!r}: use one of {sorted(levels)}")
    so.graph_optimization_level = levels[level]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UnavailableError("device 'cuda' requested but onnxruntime has no CUDAExecutionProvider here")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device in ("", "cpu"):
        providers = ["CPUExecutionProvider"]
    else:
        raise UnavailableError(f"unknown device {device!r} for onnxruntime: use 'cpu' or 'cuda'")
    try:
        sess = ort.InferenceSession(path, sess_options=so, providers=providers)
    except MemoryError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception classes (InvalidGraph, Fail, ...)
        raise ModelLoadError(f"onnxruntime could not load the artifact: {exc}") from exc
    recorded = [
        InputSpec(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape), _ORT_DTYPES.get(i.type, i.type))
        for i in sess.get_inputs()
    ]
    specs = _merge_specs(specs, recorded, "ONNX model")
    feed = {s.name: a for s, a in zip(specs, make_arrays(specs, seed), strict=True)}
    run_fn = sess.run

    def run() -> None:
        run_fn(None, feed)

    return LoadedModel(run=run, inputs=specs, device="cuda" if device.startswith("cuda") else "cpu",
                       versions={"onnxruntime": ort.__version__},
                       extra={"providers": ",".join(sess.get_providers()), "graph_optimization_level": level})


def _load_litert(path: str, device: str, threads: int, specs: list[InputSpec], seed: int,
                 options: dict[str, str]) -> LoadedModel:
    if device not in ("", "cpu"):
        raise UnavailableError(f"the litert runtime runs on 'cpu' only (asked for {device!r})")
    from ai_edge_litert import interpreter as litert

    xnnpack = options.get("xnnpack", "1") not in ("0", "false")
    resolver = (litert.OpResolverType.AUTO if xnnpack
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        interp = litert.Interpreter(model_path=path, num_threads=max(1, threads),
                                    experimental_op_resolver_type=resolver)
        details = interp.get_input_details()
    except MemoryError:
        raise
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError for bad flatbuffers
        raise ModelLoadError(f"litert could not load the artifact: {exc}") from exc
    import numpy as np

    recorded = [InputSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in details]
    specs = _merge_specs(specs, recorded, "TFLite model", static_dims=False)  # TFLite can resize
    try:
        for d, s in zip(details, specs, strict=True):
            if tuple(d["shape"]) != s.shape:
                interp.resize_tensor_input(d["index"], list(s.shape))
        interp.allocate_tensors()
        for d, a in zip(details, make_arrays(specs, seed), strict=True):
            interp.set_tensor(d["index"], a)
    except ValueError as exc:
        raise InputError(f"TFLite model rejected the inputs {[(s.name, list(s.shape), s.dtype) for s in specs]}: {exc}") from exc
    invoke = interp.invoke

    def run() -> None:
        invoke()

    return LoadedModel(run=run, inputs=specs, versions={"ai-edge-litert": dist_version("ai-edge-litert")},
                       extra={"xnnpack": str(xnnpack).lower(), "op_resolver": resolver.name})


def import_runtime(runtime: int) -> None:
    """Import the runtime's module (so the worker's memory baseline includes it)."""
    info = BACKENDS[runtime]
    if runtime == RUNTIME_LITERT:
        import ai_edge_litert.interpreter  # noqa: F401
    elif runtime == RUNTIME_TORCH_EXPORT:
        # torch.export.load pulls in its deserialiser (and sympy, FX) on first use: ~75 MiB that belong
        # to the runtime, not to the model, so they go into the baseline.
        import torch._export.serde.serialize
        import torch.export  # noqa: F401
    else:
        importlib.import_module(info.module)


def load(runtime: int, path: str, device: str, threads: int, specs: list[InputSpec], seed: int,
         options: dict[str, str]) -> LoadedModel:
    """Load ``path`` with ``runtime`` and bind seeded random inputs (worker side)."""
    if runtime in (RUNTIME_TORCHSCRIPT, RUNTIME_TORCH_EXPORT):
        return _load_torch(runtime, path, device, threads, specs, seed, options)
    if runtime == RUNTIME_ONNXRUNTIME:
        return _load_onnx(path, device, threads, specs, seed, options)
    if runtime == RUNTIME_LITERT:
        return _load_litert(path, device, threads, specs, seed, options)
    raise UnavailableError(f"unknown runtime {runtime}")
