"""Drift check: is the device still the device its profile describes?

A device profile keeps its campaign's *reference subnets* (the full model, 50 % and 25 % of the modules;
their gates and their measured values per percentile) and tolerances derived from how much the references
moved during the campaign. :func:`fingerprint` re-measures them (a few seconds) and :func:`judge` compares:

* every reference within the level tolerance of its profiled value -> ``proceed``;
* all references moved by about the same factor (they agree with each other within the shape tolerance,
  e.g. the device got uniformly 30 % slower: thermal throttling, a power mode, a busier machine) ->
  ``rescaled``: predictions are multiplied by that one factor, and the report says so;
* the references disagree with each other (the small subnet slowed down, the full one did not: another
  runtime version, another memory layout...) or the factor is beyond 2x -> ``refused``, with advice:
  re-profile the device, or search with ``--live`` (measured, not predicted).

Memory is checked the same way on the references' peak bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from host.errors import ConfigError, DriftError, SpecError
from host.gates import GateLayout
from host.profiling.measurers import CandidateMeasurer, Measurer
from host.profiling.plan import MeasureSettings
from host.profiling.store import unpack_gates

log = logging.getLogger(__name__)

MAX_RESCALE = 2.0  # a uniform factor beyond this (or below its inverse) is refused: probably another device


@dataclass
class DriftCheck:
    """The outcome of a drift check (recorded in generated models' specs as ``drift_check``)."""

    status: str  # "proceed" | "rescaled" | "refused" | "skipped"
    message: str
    percentile: str | None = None
    latency_factor: float = 1.0  # predictions are multiplied by these (1 unless rescaled)
    memory_factor: float = 1.0
    latency_ratios: list[float] = field(default_factory=list)  # measured / profiled, per reference subnet
    memory_ratios: list[float] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    seconds: float = 0.0
    agent: str | None = None
    checked_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_ratios"] = [round(x, 4) for x in self.latency_ratios]
        d["memory_ratios"] = [round(x, 4) for x in self.memory_ratios]
        d["latency_factor"] = round(self.latency_factor, 4)
        d["memory_factor"] = round(self.memory_factor, 4)
        d["seconds"] = round(self.seconds, 3)
        return d

    @classmethod
    def skipped(cls, why: str) -> DriftCheck:
        return cls(status="skipped", message=why)


def reference_gates(entry: dict, layout: GateLayout) -> list[list[torch.Tensor]]:
    """The profile's reference subnets as gate vectors."""
    refs = entry.get("references")
    if not refs:
        raise SpecError("this profile keeps no reference subnets (fitted before drift checks existed, or its campaign "
                        "measured none): re-fit it with `nnf fit` from a campaign with reference rounds")
    return [unpack_gates(g, layout) for g in refs["gates"]]


def _geomean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(x))))


def judge(latency_ratios: list[float], memory_ratios: list[float], tolerance: dict, percentile: str) -> DriftCheck:
    """Decide proceed / rescaled / refused from measured/profiled ratios and the profile's tolerances."""
    lat = np.asarray(latency_ratios, dtype=np.float64)
    mem = np.asarray(memory_ratios, dtype=np.float64)
    if lat.size == 0 or not np.all(np.isfinite(lat)) or np.any(lat <= 0):
        raise ConfigError("a drift check needs positive measured/profiled latency ratios")
    tol = tolerance.get(percentile) or {"level": 0.05, "shape": 0.04}
    level_tol, shape_tol = float(tol["level"]), float(tol["shape"])
    mem_tol = float(tolerance.get("memory", 0.05))
    f = _geomean(lat)
    resid = lat / f - 1.0
    names = ", ".join(f"{x:.3f}" for x in lat)
    advice = "re-profile the device (`nnf profile` + `nnf fit`) or search on it with --live (measured, not predicted)"
    base = {"percentile": percentile, "latency_ratios": lat.tolist(), "memory_ratios": mem.tolist(),
            "tolerance": {"level": level_tol, "shape": shape_tol, "memory": mem_tol}}
    if np.max(np.abs(resid)) > shape_tol:
        return DriftCheck("refused", f"the reference subnets moved unevenly (measured/profiled {percentile} latency: "
                          f"{names}; they should agree within ±{shape_tol:.0%}): one factor cannot correct the profile; "
                          + advice, **base)
    if not 1 / MAX_RESCALE <= f <= MAX_RESCALE:
        return DriftCheck("refused", f"the device is {f:.2f}x its profiled latency (references {names}): beyond what "
                          f"a rescale should paper over (is it the same device and runtime?); " + advice, **base)
    mf = 1.0
    if mem.size:
        if not np.all(np.isfinite(mem)) or np.any(mem <= 0):
            return DriftCheck("refused", "the reference subnets reported no usable peak memory; " + advice, **base)
        mf = _geomean(mem)
        if np.max(np.abs(mem / mf - 1.0)) > mem_tol:
            return DriftCheck("refused", f"the reference subnets' peak memory moved unevenly (measured/profiled "
                              f"{', '.join(f'{x:.3f}' for x in mem)}); " + advice, **base)
        if abs(mf - 1.0) <= mem_tol:
            mf = 1.0
    lf = 1.0 if abs(f - 1.0) <= level_tol else f
    if lf == 1.0 and mf == 1.0:
        return DriftCheck("proceed", f"the device matches its profile (reference {percentile} latency ratios {names}, "
                          f"within ±{level_tol:.0%})", **base)
    parts = []
    if lf != 1.0:
        parts.append(f"latency x{lf:.3f}")
    if mf != 1.0:
        parts.append(f"memory x{mf:.3f}")
    return DriftCheck("rescaled", f"the device moved uniformly since it was profiled (reference ratios {names}): "
                      f"predictions rescaled by {' and '.join(parts)}", latency_factor=lf, memory_factor=mf, **base)


def fingerprint(entry: dict, layout: GateLayout, net: torch.nn.Module, measurer: Measurer, *, percentile: str,
                agent: str | None = None) -> DriftCheck:
    """Re-measure the profile's reference subnets on ``measurer`` and judge the device against the profile."""
    import datetime as _dt

    from host.profiling.build import ExtractingBuilder

    refs = entry.get("references") or {}
    gates = reference_gates(entry, layout)
    expected = (refs.get("latency_us") or {}).get(percentile)
    if expected is None:
        raise SpecError(f"the profile keeps no {percentile} values of its reference subnets: re-fit it with `nnf fit`")
    known = MeasureSettings.__dataclass_fields__
    settings = MeasureSettings(**{k: v for k, v in (entry.get("measure") or {}).items() if k in known})
    cm = CandidateMeasurer(ExtractingBuilder(net, entry["runtime"]), measurer, net.input_shape, settings, stat=percentile)
    t0 = time.perf_counter()
    measured = []
    for ratio, g, want in zip(refs.get("ratios") or [None] * len(gates), gates, expected, strict=True):
        m = cm.measure(g)
        log.info("drift check: reference %s: %.3f ms %s (profiled %.3f ms)", f"{ratio:.0%}" if ratio else "",
                 m.latency(percentile) / 1000, percentile, want / 1000)
        measured.append(m)
    lat = [m.latency(percentile) / e for m, e in zip(measured, expected, strict=True)]
    peaks = refs.get("peak_bytes") or []
    mem = [m.peak_bytes / p for m, p in zip(measured, peaks, strict=True) if p and p == p and m.peak_bytes > 0]
    check = judge(lat, mem if len(mem) == len(measured) else [], refs.get("tolerance") or {}, percentile)
    check.seconds = time.perf_counter() - t0
    check.agent = agent
    check.checked_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return check


def apply(check: DriftCheck, predictor: Any) -> Any:
    """The predictor to search with after ``check``: rescaled, unchanged, or a :class:`DriftError`."""
    if check.status == "refused":
        raise DriftError(f"drift check on {predictor.device}: {check.message}")
    if check.status == "rescaled":
        return predictor.rescaled(latency=check.latency_factor, memory=check.memory_factor)
    return predictor
