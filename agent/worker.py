"""Measuring one model: the code that runs inside a measuring child process.

A child is either forked from the runtime's zygote (``agent.zygote``, the default: the runtime is
already imported) or a fresh process (``python -m agent.worker``, isolation "process": JSON request on
stdin, one JSON answer on stdout). Either way the process is the isolation boundary for everything a
model can do wrong, and it never outlives its parent (``agent.sandbox.die_with_parent``):

* crash (a signal kills the child; the agent reports INTERNAL, kind "crash"),
* hang (the agent kills the child at the request's deadline: DEADLINE_EXCEEDED),
* out of memory (on CPU an ``RLIMIT_AS`` limit on the address space the model may add makes allocations
  fail inside the child, reported as RESOURCE_EXHAUSTED, kind "oom"; a kernel OOM kill shows up as
  SIGKILL, reported the same).

No pickle crosses the boundary (JSON both ways). Order of work, chosen so timing and peak memory belong
to this one model only:

1. CPU affinity and nice (before any runtime thread pool starts; the child runs in its own session, so
   it can set its scheduler autogroup's nice too);
2. the runtime is imported (a forked child has it already and has mapped the zygote's resident runtime
   pages again, ``agent.memory``), ``gc.collect()``, ``malloc_trim(0)``, VmHWM reset, VmRSS = *baseline*;
   the memory limit becomes RLIMIT_AS = VmSize + ``memory_limit_bytes``; the Landlock sandbox is applied
   (``agent.sandbox``: no file writes, no TCP);
3. load the model and bind seeded random inputs (names, ranks, dtypes and static dimensions checked
   against the model's own inputs);
4. warm-up runs (they pay one-time costs: lazy imports, JIT profiling, arena growth), timed as a whole
   (``warmup_time_s``); VmHWM - baseline after them = ``load_peak_bytes``;
5. ``gc.collect()``, ``malloc_trim(0)``, reset VmHWM so load and warm-up transients are forgotten; then
   timed runs (``time.perf_counter_ns`` around each single synchronous run, garbage collector disabled)
   until both the minimum count and the minimum time are reached;
6. peak_bytes = VmHWM - baseline = steady-state footprint of running the model: weights, runtime
   workspaces and the activation peak (method VMHWM_RESET; on CUDA torch.cuda.max_memory_allocated);
7. write the result and leave with ``os._exit`` (no slow interpreter teardown while the lock is held).

A model that fails on its first run is reported as a bad request (kind "input": the model cannot run on
the inputs it was given), a later failure as kind "runtime".

Test-only hook (documented, inert unless the *agent operator* sets it in the agent's environment):
``NNF_AGENT_TEST_CRASH_SHA256=<sha>`` makes the child dereference a NULL pointer (a real SIGSEGV)
after loading that artifact. Tests use it to check that a crashing model leaves the agent serving.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from agent import memory, runtimes, sandbox, sysinfo

OOM_MARKERS = (
    "bad_alloc", "failed to allocate", "out of memory", "can't allocate memory", "cannot allocate memory",
    "not enough memory", "memoryerror", "std::length_error",
)


def _is_oom(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, MemoryError):
            return True
        text = f"{type(exc).__name__}: {exc}".lower()
        if any(m in text for m in OOM_MARKERS):
            return True
        exc = exc.__cause__
    return False


def _percentile(sorted_vals: list[int], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an ascending list."""
    if not sorted_vals:
        return 0.0
    pos = (len(sorted_vals) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    frac = pos - lo
    return sorted_vals[lo] * (1 - frac) + sorted_vals[hi] * frac


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """min/median/mean/p90/p99/std/max of samples, in microseconds."""
    s = sorted(samples_ns)
    n = len(s)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / n
    return {
        "min_latency_us": s[0] / 1e3,
        "median_latency_us": _percentile(s, 0.5) / 1e3,
        "mean_latency_us": mean / 1e3,
        "p90_latency_us": _percentile(s, 0.9) / 1e3,
        "p99_latency_us": _percentile(s, 0.99) / 1e3,
        "std_latency_us": var ** 0.5 / 1e3,
        "max_latency_us": s[-1] / 1e3,
    }


class FirstRunFailed(Exception):
    """The model raised on its very first run: it cannot run on the inputs it was given."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.original = exc


@dataclass
class Timings:
    samples_ns: list[int]
    cpu_samples_ns: list[int]
    total_s: float
    runqueue_wait_fraction: float
    involuntary_switches: int


def _schedstat_wait_ns() -> int | None:
    """Nanoseconds this thread has spent runnable but waiting for a CPU (None where not exposed)."""
    for path in ("/proc/thread-self/schedstat", "/proc/self/schedstat"):
        try:
            with open(path) as fh:
                return int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return None


def timed_loop(run: Any, warmup: int, repeats: int, min_time_s: float, max_repeats: int,
               cooldown_s: float) -> Timings:
    """Warm up, then time single runs until ``repeats`` runs and ``min_time_s`` are both reached.

    Each run is bracketed by ``perf_counter_ns`` (wall) inside ``thread_time_ns`` (this thread's CPU time).
    """
    for _ in range(warmup):
        run()
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    samples: list[int] = []
    cpu_samples: list[int] = []
    append = samples.append
    cpu_append = cpu_samples.append
    gc.collect()
    gc.disable()
    wait0 = _schedstat_wait_ns()
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # RUSAGE_THREAD is Linux-only
    ru0 = resource.getrusage(who).ru_nivcsw
    try:
        start = clock()
        end_min = start + int(min_time_s * 1e9)
        n = 0
        while True:
            c0 = cpu_clock()
            t0 = clock()
            run()
            t1 = clock()
            c1 = cpu_clock()
            append(t1 - t0)
            cpu_append(c1 - c0)
            n += 1
            if n >= max_repeats or (n >= repeats and t1 >= end_min):
                break
            if cooldown_s > 0:
                time.sleep(cooldown_s)
        total_ns = clock() - start
    except Exception as exc:
        if not samples and not _is_oom(exc):
            raise FirstRunFailed(exc) from exc
        raise
    finally:
        gc.enable()
    wait1 = _schedstat_wait_ns()
    ru1 = resource.getrusage(who).ru_nivcsw
    waited = (wait1 - wait0) / total_ns if wait0 is not None and wait1 is not None and total_ns > 0 else 0.0
    return Timings(samples, cpu_samples, total_ns / 1e9, waited, ru1 - ru0)


def _crash_hook(sha: str) -> None:
    target = os.environ.get("NNF_AGENT_TEST_CRASH_SHA256", "")
    if target and target == sha:
        import ctypes

        ctypes.string_at(0)  # SIGSEGV: a real native crash, for the agent's crash-isolation test


def _apply_nice(nice: int | None) -> str:
    """Set this worker's nice value (before runtime threads start, so they inherit it).

    A higher priority (negative nice) keeps other processes on a shared machine from taking the CPU in
    the middle of a timed run. Linux's scheduler autogroups share the CPU between *sessions* first, so
    the worker (started in its own session) also sets its autogroup's nice. Lowering nice needs
    privileges (root or CAP_SYS_NICE); without them the worker keeps its priority and says so.
    """
    if nice is None:
        got = os.getpriority(os.PRIO_PROCESS, 0)
        ag = sysinfo.autogroup_nice()
        return f"{got}" + (f" (autogroup {ag})" if ag is not None else "")
    note = ""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, int(nice))
    except OSError as exc:
        note = f"; asked {nice}: {exc.strerror or exc}"
    if sysinfo.autogroup_nice() is not None and not sysinfo.set_autogroup_nice(int(nice)):
        note += f"; autogroup nice {nice} refused"
    ag = sysinfo.autogroup_nice()
    return f"{os.getpriority(os.PRIO_PROCESS, 0)}" + (f" (autogroup {ag})" if ag is not None else "") + note


def _first_runs(model: runtimes.LoadedModel, warmup: int) -> None:
    for i in range(warmup):
        try:
            model.run()
        except Exception as exc:
            if i == 0 and not _is_oom(exc):
                raise FirstRunFailed(exc) from exc
            raise


def measure(req: dict[str, Any], *, isolation: str = "process", populated: str = "") -> dict[str, Any]:
    """Measure one model as ``req`` says (the worker payload of ``agent.requests.ProfileJob``)."""
    runtime = int(req["runtime"])
    device = req.get("device") or "cpu"
    threads = max(1, int(req.get("threads") or 1))
    mem_limit = int(req.get("memory_limit_bytes") or 0)
    affinity = [int(c) for c in req.get("cpu_affinity") or []]
    cuda = device.startswith("cuda")

    if affinity:
        os.sched_setaffinity(0, affinity)
    nice_applied = _apply_nice(req.get("nice"))
    hwm = memory.HwmResetter()  # opened now: the sandbox below forbids opening files for writing

    runtimes.import_runtime(runtime)
    gc.collect()
    trimmed = sysinfo.malloc_trim()
    reset_ok = hwm.reset()
    baseline = sysinfo.proc_status_bytes("VmRSS") or 0
    if mem_limit > 0 and not cuda:
        vm = memory.vm_size_bytes()
        limit = vm + mem_limit
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # CUDA opens /dev/nvidia* read-write when the model is loaded: on a GPU request existing files under /dev
    # stay writable (nothing can be created there); untested here, this machine has no GPU
    writable = ("/dev/null", "/dev") if cuda else ("/dev/null",)
    sandboxed = sandbox.restrict(writable) if req.get("sandbox", True) else "off"

    specs = [runtimes.InputSpec(i.get("name", ""), tuple(int(d) for d in i["shape"]), i.get("dtype") or "float32")
             for i in req.get("inputs") or []]
    t0 = time.perf_counter()
    model = runtimes.load(runtime, req["path"], device, threads, specs, int(req.get("seed") or 0),
                          dict(req.get("options") or {}))
    load_time_ms = (time.perf_counter() - t0) * 1e3
    _crash_hook(req.get("sha256", ""))
    warmup = int(req["warmup_runs"])
    t0 = time.perf_counter()
    _first_runs(model, warmup)  # first runs pay one-time costs (lazy imports, JIT, arena growth)
    warmup_time_s = time.perf_counter() - t0
    hwm_load = sysinfo.proc_status_bytes("VmHWM") if reset_ok else None
    load_peak = max(0, hwm_load - baseline) if hwm_load is not None else 0

    gc.collect()
    if trimmed:
        sysinfo.malloc_trim()
    reset_ok = hwm.reset() and reset_ok
    if model.reset_cuda_peak is not None:
        model.reset_cuda_peak()

    tm = timed_loop(
        model.run,
        warmup=0,
        repeats=int(req["repeats"]),
        min_time_s=float(req["min_time_s"]),
        max_repeats=int(req["max_repeats"]),
        cooldown_s=float(req.get("cooldown_ms") or 0) / 1e3,
    )

    peak_hwm = sysinfo.proc_status_bytes("VmHWM")
    if peak_hwm is None:
        peak_hwm = sysinfo.maxrss_bytes()
    if model.cuda_peak_bytes is not None:
        peak = model.cuda_peak_bytes()
        method = "cuda_max_allocated"
    else:
        peak = max(0, peak_hwm - baseline)
        method = "vmhwm_reset" if reset_ok else "vmhwm_fresh_process"

    cpus = sysinfo.allowed_cpus()
    versions = dict(model.versions)
    versions["python"] = sys.version.split()[0]
    cpu_sorted = sorted(tm.cpu_samples_ns)
    extra = {**model.extra, "host_vmhwm_bytes": str(peak_hwm), "nice": nice_applied, "isolation": isolation,
             "sandbox": sandboxed}
    if populated:
        extra["baseline_pages"] = populated
    result: dict[str, Any] = {
        "samples_ns": tm.samples_ns,
        **summarize(tm.samples_ns),
        "thread_cpu_samples_ns": tm.cpu_samples_ns,
        "median_thread_cpu_us": _percentile(cpu_sorted, 0.5) / 1e3,
        "warmup_runs": warmup,
        "warmup_time_s": warmup_time_s,
        "peak_bytes": int(peak),
        "peak_method": method,
        "baseline_rss_bytes": int(baseline),
        "load_peak_bytes": int(load_peak),
        "process_peak_bytes": int(peak_hwm),
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in model.inputs],
        "load_time_ms": load_time_ms,
        "measure_time_s": tm.total_s,
        "context": {
            "threads": threads,
            "cpu_affinity": cpus,
            "governor": sysinfo.governors(cpus),
            "cpu_freq_khz": sysinfo.cpu_freq_khz(cpus),
            "temperature_c": sysinfo.temperatures_c(),
            "runtime_versions": versions,
            "device": model.device,
            "device_name": model.device_name,
            "worker_pid": os.getpid(),
            "memory_limit_bytes": mem_limit if not cuda else 0,
            "extra": extra,
            "runqueue_wait_fraction": tm.runqueue_wait_fraction,
            "involuntary_context_switches": tm.involuntary_switches,
        },
    }
    return result


def probe() -> dict[str, Any]:
    """Report runtime versions and accelerators (imports every installed runtime once)."""
    out: dict[str, Any] = {"gpus": [], "runtimes": {}}
    for r, info in runtimes.BACKENDS.items():
        if not runtimes.is_installed(r):
            continue
        devices = ["cpu"]
        try:
            if info.module == "torch":
                import torch

                for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
                    props = torch.cuda.get_device_properties(i)
                    devices.append(f"cuda:{i}")
                    gpu = {"name": props.name, "total_memory_bytes": int(props.total_memory), "index": f"cuda:{i}",
                           "capability": f"{props.major}.{props.minor}"}
                    if gpu not in out["gpus"]:
                        out["gpus"].append(gpu)
            elif info.module == "onnxruntime":
                import onnxruntime

                if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                    devices.append("cuda")
            else:
                runtimes.import_runtime(r)
        except Exception as exc:  # a broken install must not break device info; report it instead
            out["runtimes"][info.name] = {"devices": [], "error": f"{type(exc).__name__}: {exc}"}
            continue
        out["runtimes"][info.name] = {"devices": devices}
    return out


def run_request(req: dict[str, Any], *, isolation: str = "process", populated: str = "") -> dict[str, Any]:
    """The answer to one worker request (never raises): ``{"ok": true, "result": ...}`` or ``{"ok": false,
    "kind": ..., "message": ...}``."""
    try:
        if req.get("mode") == "probe":
            return {"ok": True, "result": probe()}
        return {"ok": True, "result": measure(req, isolation=isolation, populated=populated)}
    except runtimes.ModelLoadError as exc:
        return {"ok": False, "kind": "oom" if _is_oom(exc) else "load", "message": str(exc)}
    except runtimes.InputError as exc:
        return {"ok": False, "kind": "input", "message": str(exc)}
    except FirstRunFailed as exc:
        specs = req.get("inputs") or []
        given = ", ".join(f"{i.get('name') or f'#{n}'} {i['shape']} {i.get('dtype') or 'float32'}"
                          for n, i in enumerate(specs)) or "the model's recorded inputs"
        return {"ok": False, "kind": "input",
                "message": f"the model failed on its first run with inputs [{given}]: {str(exc)[:1500]}"}
    except runtimes.UnavailableError as exc:
        return {"ok": False, "kind": "unavailable", "message": str(exc)}
    except BaseException as exc:  # the worker must answer whatever the model did
        kind = "oom" if _is_oom(exc) else "runtime"
        return {"ok": False, "kind": kind, "message": f"{type(exc).__name__}: {exc}"[:4000]}


def write_answer(fd: int, answer: dict[str, Any]) -> None:
    data = (json.dumps(answer) + "\n").encode()
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main() -> None:
    """``python -m agent.worker``: one request on stdin, one answer on stdout (isolation "process")."""
    parent = os.environ.get("NNF_AGENT_PARENT_PID", "")
    if parent.isdigit():
        sandbox.die_with_parent(int(parent))
    # Runtimes may print to stdout; keep fd 1 for our single JSON answer and send everything else to stderr.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        req = json.loads(sys.stdin.read())
    except ValueError as exc:
        answer: dict[str, Any] = {"ok": False, "kind": "runtime", "message": f"unreadable worker request: {exc}"}
    else:
        answer = run_request(req)
    write_answer(out_fd, answer)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
