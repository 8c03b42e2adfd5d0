"""Validating a ``ProfileRequest`` into a typed :class:`ProfileJob` (everything checked before any work).

Every rule names the field and, where a cap applies, the cap and who can change it. Client-supplied
strings are never echoed in full (:func:`agent.protocol.echo`). Caps come from :class:`agent.config.Limits`
(derived from the device unless the operator set them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent import runtimes, sysinfo
from agent._proto.nnfactory.agent.v1 import agent_pb2 as pb
from agent.config import MIN_MEMORY_LIMIT_BYTES, Limits
from agent.errors import ProfileFailure, invalid
from agent.protocol import ErrorKind, echo
from agent.store import ArtifactStore, BadHash

DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 30
DEFAULT_MIN_TIME_S = 1.0
DEFAULT_MAX_REPEATS = 100_000
MAX_WARMUP = 10_000
MAX_MIN_TIME_S = 3600.0
MAX_COOLDOWN_MS = 60_000.0
MAX_DEADLINE_S = 86_400.0
MAX_INPUTS = 64
MAX_RANK = 8
MAX_DIM = 1 << 31
MAX_NAME_CHARS = 256
MAX_OPTION_VALUE_CHARS = 64


@dataclass(frozen=True)
class InputRequest:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ProfileJob:
    """A validated profile request: what the measuring worker receives (as JSON, :meth:`payload`)."""

    sha256: str
    path: Path
    runtime: int
    device: str
    threads: int
    inputs: tuple[InputRequest, ...]
    warmup_runs: int
    repeats: int
    min_time_s: float
    max_repeats: int
    cooldown_ms: float
    cpu_affinity: tuple[int, ...]
    memory_limit_bytes: int  # address space the model may add on top of the runtime (0 on CUDA: none)
    seed: int
    options: dict[str, str] = field(default_factory=dict)
    deadline_s: float = 0.0  # whole request including queueing
    request_id: str = ""

    def payload(self, *, nice: int | None, sandbox: bool) -> dict[str, Any]:
        d = asdict(self)
        d.update(mode="measure", path=str(self.path), inputs=[asdict(i) | {"shape": list(i.shape)} for i in self.inputs],
                 cpu_affinity=list(self.cpu_affinity), nice=nice, sandbox=sandbox)
        d.pop("deadline_s")
        d.pop("request_id")
        return d


def _finite(name: str, value: float, low: float, high: float) -> float:
    if not math.isfinite(value):
        raise invalid(f"{name}={value} is not a finite number")
    if not low <= value <= high:
        raise invalid(f"{name}={value:g} out of range [{low:g}, {high:g}]")
    return float(value)


def _runtime(req: pb.ProfileRequest, path: Path, allow_pickle_formats: bool) -> runtimes.BackendInfo:
    runtime = int(req.runtime)
    if runtime == runtimes.RUNTIME_UNSPECIFIED:
        runtime = runtimes.sniff_runtime(path)
        if runtime == runtimes.RUNTIME_UNSPECIFIED:
            raise invalid("runtime: not given and not recognisable from the artifact's bytes: set runtime")
    if runtime not in runtimes.BACKENDS:
        raise invalid(f"runtime: unknown enum value {runtime} (known: "
                      f"{', '.join(f'{r}={b.name}' for r, b in runtimes.BACKENDS.items())})")
    binfo = runtimes.BACKENDS[runtime]
    if binfo.pickle_bearing and not allow_pickle_formats:
        raise ProfileFailure(ErrorKind.DISABLED, runtimes.PICKLE_REFUSAL.format(name=binfo.name))
    if not runtimes.is_installed(runtime):
        raise ProfileFailure(ErrorKind.UNAVAILABLE, f"runtime {binfo.name!r} is not installed on this agent "
                                                    f"(installed: {[b.name for b in runtimes.installed_runtimes()]})")
    return binfo


def _counts(req: pb.ProfileRequest) -> tuple[int, int, int, float, float]:
    """(warmup_runs, repeats, max_repeats, min_time_s, cooldown_ms) with defaults, range-checked."""
    warmup = req.warmup_runs if req.HasField("warmup_runs") else DEFAULT_WARMUP
    repeats = req.repeats if req.HasField("repeats") else DEFAULT_REPEATS
    max_repeats = req.max_repeats or DEFAULT_MAX_REPEATS
    if not 0 <= warmup <= MAX_WARMUP:
        raise invalid(f"warmup_runs={warmup} out of range [0, {MAX_WARMUP}]")
    if not 1 <= max_repeats <= DEFAULT_MAX_REPEATS:
        raise invalid(f"max_repeats={max_repeats} out of range [1, {DEFAULT_MAX_REPEATS}] (0 = default)")
    if not 1 <= repeats <= max_repeats:
        raise invalid(f"repeats={repeats} out of range [1, max_repeats={max_repeats}]")
    min_time = _finite("min_time_s", req.min_time_s, 0.0, MAX_MIN_TIME_S) if req.HasField("min_time_s") \
        else DEFAULT_MIN_TIME_S
    cooldown = _finite("cooldown_ms", req.cooldown_ms, 0.0, MAX_COOLDOWN_MS)
    return warmup, repeats, max_repeats, min_time, cooldown


def _inputs(req: pb.ProfileRequest, limits: Limits) -> tuple[InputRequest, ...]:
    if len(req.inputs) > MAX_INPUTS:
        raise invalid(f"inputs: {len(req.inputs)} given, at most {MAX_INPUTS}")
    inputs = []
    total_bytes = 0
    for i, t in enumerate(req.inputs):
        dtype = t.dtype or "float32"
        if dtype not in runtimes.DTYPES:
            raise invalid(f"inputs[{i}].dtype {echo(dtype)} unknown: use one of {list(runtimes.DTYPES)}")
        if len(t.name) > MAX_NAME_CHARS:
            raise invalid(f"inputs[{i}].name has {len(t.name)} characters: at most {MAX_NAME_CHARS}")
        if not 1 <= len(t.shape) <= MAX_RANK:
            raise invalid(f"inputs[{i}].shape has {len(t.shape)} dimensions: give 1 to {MAX_RANK}")
        if any(not 1 <= d <= MAX_DIM for d in t.shape):
            raise invalid(f"inputs[{i}].shape {echo(list(t.shape))}: every dimension must be in [1, {MAX_DIM}]")
        total_bytes += math.prod(t.shape) * runtimes.DTYPE_BYTES[dtype]
        if total_bytes > limits.max_input_bytes:
            raise invalid(f"inputs[{i}].shape {list(t.shape)} ({dtype}): the inputs need {total_bytes} bytes, over this "
                          f"agent's cap of {limits.max_input_bytes} bytes (the operator sets it with --max-input-mb)")
        inputs.append(InputRequest(t.name, tuple(int(d) for d in t.shape), dtype))
    return tuple(inputs)


def _options(req: pb.ProfileRequest, binfo: runtimes.BackendInfo) -> dict[str, str]:
    options = dict(req.options)
    unknown = sorted(set(options) - set(binfo.options))
    if unknown:
        raise invalid(f"options: unknown keys {echo(unknown)} for runtime {binfo.name!r} (accepted: "
                      f"{list(binfo.options)})")
    long = [k for k, v in options.items() if len(v) > MAX_OPTION_VALUE_CHARS]
    if long:
        raise invalid(f"options[{long[0]!r}]: value longer than {MAX_OPTION_VALUE_CHARS} characters")
    return options


def _memory_limit(req: pb.ProfileRequest, limits: Limits) -> int:
    mem = req.memory_limit_bytes
    if mem < 0:
        raise invalid(f"memory_limit_bytes={mem} must be >= 0 (0 = the agent's default)")
    if mem and mem < MIN_MEMORY_LIMIT_BYTES:
        raise invalid(f"memory_limit_bytes={mem} is below the minimum of {MIN_MEMORY_LIMIT_BYTES} bytes "
                      f"({MIN_MEMORY_LIMIT_BYTES >> 20} MiB): the worker needs room to load and report")
    if mem > limits.worker_memory_bytes:
        raise invalid(f"memory_limit_bytes={mem} exceeds this agent's cap of {limits.worker_memory_bytes} bytes "
                      f"(the operator sets it with --worker-memory-mb)")
    return mem or limits.worker_memory_bytes


def validate(req: pb.ProfileRequest, *, store: ArtifactStore, limits: Limits, default_deadline_s: float,
             allow_pickle_formats: bool) -> ProfileJob:
    """The :class:`ProfileJob` for ``req``, or ProfileFailure (INVALID_ARGUMENT, NOT_FOUND, ...)."""
    try:
        path = store.path(req.artifact_sha256)
    except BadHash as exc:
        raise invalid(f"artifact_sha256: {exc}") from exc
    if len(req.request_id) > MAX_NAME_CHARS:
        raise invalid(f"request_id has {len(req.request_id)} characters: at most {MAX_NAME_CHARS}")
    if not path.is_file():
        raise ProfileFailure(ErrorKind.NOT_FOUND, f"artifact {req.artifact_sha256} is not on this agent: upload it "
                                                  f"first (it may also have been evicted from the cache)")
    binfo = _runtime(req, path, allow_pickle_formats)
    device = req.device or "cpu"
    if len(device) > 32 or device.split(":")[0] not in binfo.devices:
        raise ProfileFailure(ErrorKind.UNAVAILABLE, f"device {echo(device)}: runtime {binfo.name!r} runs on "
                                                    f"{list(binfo.devices)}")
    if not 0 <= req.threads <= limits.max_threads:
        raise invalid(f"threads={req.threads} out of range [0, {limits.max_threads}] (this agent's cap: the CPUs it "
                      f"may use; the operator can change it with --max-threads)")
    warmup, repeats, max_repeats, min_time, cooldown = _counts(req)
    deadline = _finite("deadline_s", req.deadline_s, 0.0, MAX_DEADLINE_S) or default_deadline_s
    allowed = sysinfo.allowed_cpus()
    bad_cpus = sorted({c for c in req.cpu_affinity if c not in allowed})
    if bad_cpus:
        raise invalid(f"cpu_affinity: {echo(bad_cpus)} not among the CPUs this agent may use {allowed}")
    inputs = _inputs(req, limits)
    if binfo.runtime == runtimes.RUNTIME_TORCHSCRIPT and not inputs:
        raise invalid("inputs: a TorchScript artifact does not record its input shapes: pass them in the request "
                      "(nnf profile-model: --input-shape)")
    options = _options(req, binfo)
    memory = _memory_limit(req, limits)
    return ProfileJob(
        sha256=req.artifact_sha256, path=path, runtime=binfo.runtime, device=device, threads=max(1, req.threads),
        inputs=inputs, warmup_runs=warmup, repeats=repeats, min_time_s=min_time, max_repeats=max_repeats,
        cooldown_ms=cooldown, cpu_affinity=tuple(req.cpu_affinity),
        memory_limit_bytes=0 if device.startswith("cuda") else memory, seed=req.seed, options=options,
        deadline_s=deadline, request_id=req.request_id,
    )
