"""Device-budget generation: the best model for a task that fits a device's latency/memory budget.

Glue between a loaded generator (``host.generate.ModelFactory`` or anything with the same two members:
``factory.models.supernet`` and ``factory.gates(tasks, limits) -> result with .gates``), a device profile
(``host.device_profile``) and the searches of ``host.search``:

* predictor mode (default): the batched search picks the limit from the profile's predictions; when an
  agent is given, the chosen model is also measured there and the report shows predicted vs. measured;
* live mode (``live=True``): candidates are measured on the agent (bisection over the limit grid, started
  at the predictor's answer when the device has a profile).

The report: chosen limit, activation ratio, predicted and measured latency/memory, rounds, seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from host.errors import ConfigError, SearchError
from host.search import Budget, GateAssembler, SearchResult, algorithm1, batched_search, live_search


def factory_assembler(factory: Any) -> GateAssembler:
    """Adapt a ModelFactory to the search's ``(task, limits) -> batched hard gates`` protocol.

    With a ``host.assembler.ModuleAssembler`` inside, the task is encoded once and expanded over the
    limits, the logits come from one forward, and the assembler's own ``trim_to_limit`` runs only on the
    rows whose hard gates exceed their limit (the trim is row-wise, so the gates are identical to
    ``factory.gates``; checked in tests). Otherwise ``factory.gates`` is called as is.
    """
    assembler = getattr(getattr(factory, "models", None), "assembler", None)
    space = getattr(factory, "space", None)
    direct = hasattr(assembler, "generate") and hasattr(space, "encode") and hasattr(space, "task")
    encoded: dict[str, torch.Tensor] = {}

    def assemble(task: str, limits: torch.Tensor) -> list[torch.Tensor]:
        if not direct:
            return list(factory.gates([task] * int(limits.shape[0]), limits).gates)
        from host.assembler import check_limits, max_active, trim_to_limit

        limits = limits.float().reshape(-1)
        check_limits(limits)
        if task not in encoded:
            encoded[task] = space.encode([space.task(task)])
        enc = encoded[task].expand(int(limits.shape[0]), -1)
        was_training = assembler.training
        assembler.eval()
        try:
            with torch.no_grad():
                logits = assembler(enc, limits)
        finally:
            assembler.train(was_training)
        sizes = [x.shape[1] for x in logits]
        hard = torch.cat(logits, dim=1) > 0
        need = hard.sum(dim=1) > max_active(limits, hard.shape[1])
        gates = hard.float()
        if bool(need.any()):
            trimmed, _ = trim_to_limit([x[need] for x in logits], limits[need])
            gates[need] = torch.cat(trimmed, dim=1)
        return list(torch.split(gates, sizes, dim=1))

    return assemble


def generate_for_device(
    factory: Any,
    task: str,
    device: str,
    budget: Budget,
    *,
    live: bool = False,
    agent: str | None = None,
    token: str | None = None,
    method: str = "batched",
    out_dir: Path | None = None,
    profiles_root: Path | None = None,
    step: float = 0.01,
    measure_settings: Any = None,
    predictor: Any = None,
    chunk: int | None = None,
) -> tuple[Any, dict]:
    """Search, extract and (optionally) save; returns (compact model, report dict).

    predictor: an already loaded ``DevicePredictor`` (a long-running service loads it once); default: load
    the device's profile for this supernet.
    chunk: limits per batched assembler pass (``None`` = all limits in one pass); the answer is the same.
    """
    from host.device_profile import load_predictor
    from host.extraction import extract

    t0 = time.perf_counter()
    net = factory.models.supernet
    layout = net.gate_layout()
    task_name = factory.space.task(task).name if hasattr(factory, "space") else task
    assemble = factory_assembler(factory)
    if predictor is None:
        try:
            predictor = load_predictor(device, layout, root=profiles_root)
        except ConfigError:
            if not live:
                raise
    stat = predictor.entry.get("latency_statistic", "p10") if predictor is not None else "p10"
    live_measurer = None
    agent_measurer = None
    if agent is not None or live:
        if agent is None:
            raise ConfigError("--live measures candidates on the device: give its agent with --agent HOST:PORT")
        from host.campaign import AgentMeasurer, ExtractingBuilder, LiveDeviceMeasurer, MeasureSettings

        agent_measurer = AgentMeasurer(agent, token=token)
        runtime = predictor.runtime if predictor is not None else "torchscript"
        if measure_settings is None and predictor is not None and isinstance(predictor.entry.get("measure"), dict):
            known = MeasureSettings.__dataclass_fields__
            measure_settings = MeasureSettings(**{k: v for k, v in predictor.entry["measure"].items() if k in known})
        live_measurer = LiveDeviceMeasurer(ExtractingBuilder(net, runtime), agent_measurer, net.input_shape,
                                           measure_settings or MeasureSettings(), stat=stat)
    try:
        result: SearchResult
        if live:
            start = None
            if predictor is not None:
                try:
                    start = batched_search(assemble, task_name, predictor, budget, step=step, device=device).grid_index
                except SearchError:
                    start = 0
            result = live_search(assemble, task_name, live_measurer, budget, step=step, start_index=start, device=device)
        elif method == "algorithm1":
            result = algorithm1(assemble, task_name, predictor, budget, step=step, device=device)
        elif method == "batched":
            result = batched_search(assemble, task_name, predictor, budget, step=step, device=device, chunk=chunk)
        else:
            raise ConfigError(f"unknown search method {method!r}; use batched or algorithm1")
        t_search = time.perf_counter()
        meta = {"task": task_name, "activation_limit": result.limit, "device": device, "budget": {
            "latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb}, "search": result.method}
        compact = extract(net, result.gates, meta=meta)
        if out_dir is not None:
            from host.artifact import save_compact

            save_compact(compact, out_dir, meta=meta)
        t_extract = time.perf_counter()
        report: dict[str, Any] = {
            "task": task_name,
            "device": device,
            "budget": {"latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb},
            "search": result.summary(),
            "limit": round(result.limit, 6),
            "activation_ratio": round(result.activation_ratio, 6),
            "seconds_search": round(t_search - t0, 4),
            "seconds_extract": round(t_extract - t_search, 4),
            "out": str(out_dir) if out_dir is not None else None,
        }
        counts = np.array([[int(g.sum().item()) for g in result.gates]])
        if predictor is not None:  # exact structural figures without building the spec on the meta device
            report["param_bytes"] = int(round(float(predictor.structure.param_bytes(counts)[0])))
            report["peak_activation_bytes"] = int(round(float(predictor.structure.peak_activation_bytes(counts)[0])))
        else:
            report["param_bytes"] = compact.spec.param_bytes()
            report["peak_activation_bytes"] = compact.spec.peak_activation_bytes()
        if predictor is not None:
            lat, mem = predictor(_batch(result.gates))
            report["predicted"] = {"latency_ms": round(float(lat[0]) / 1000, 4), "memory_mb": round(float(mem[0]) / 1e6, 4),
                                   "latency_statistic": stat}
        if live_measurer is not None:
            if live:
                lat_m, mem_m = result.latency_us, result.memory_bytes
            else:
                lat_m, mem_m = live_measurer(result.gates)
            report["measured"] = {"latency_ms": round(lat_m / 1000, 4), "memory_mb": round(mem_m / 1e6, 4),
                                  "latency_statistic": stat, "agent": agent,
                                  "fits": bool(budget.fits([lat_m], [mem_m])[0]),
                                  "measurements": live_measurer.measurements,
                                  "bytes_sent": live_measurer.bytes_sent}
        report["seconds"] = round(time.perf_counter() - t0, 4)
        return compact, report
    finally:
        if agent_measurer is not None:
            agent_measurer.close()


def _batch(gates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [g.reshape(1, -1) for g in gates]
