"""Fit data: a campaign's measurements as arrays (one row per sample), latency statistics and drift."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from host.errors import CampaignError, ConfigError
from host.profiling.store import CampaignStore

#: Percentiles a device profile is fitted on and a budget can be held to (``nnf generate --percentile``).
PERCENTILES = ("p50", "p90", "p99")
DEFAULT_PERCENTILE = "p90"
LATENCY_STATS = ("median", "min", "mean", "p10", "p25", *PERCENTILES)


def check_stat(stat: str) -> str:
    """``stat`` if it names a latency statistic: median, min, mean or ``pNN`` (a percentile 1..99 of the runs)."""
    if stat in ("median", "min", "mean"):
        return stat
    if stat.startswith("p") and stat[1:].isdigit() and 1 <= int(stat[1:]) <= 99:
        return stat
    raise ConfigError(f"unknown latency statistic {stat!r}; choose one of {', '.join(LATENCY_STATS)} (or any pNN)")


def percentile_name(value: str | int) -> str:
    """``90``, ``"90"`` or ``"p90"`` -> ``"p90"`` (one of :data:`PERCENTILES`)."""
    name = f"p{value}" if not str(value).startswith("p") else str(value)
    if name not in PERCENTILES:
        raise ConfigError(f"percentile {value!r}: choose one of {', '.join(p[1:] for p in PERCENTILES)}")
    return name


def runs_latency(runs_us: list[float] | np.ndarray, stat: str) -> float:
    """A statistic of a series of timed runs (µs)."""
    stat = check_stat(stat)
    arr = np.asarray(runs_us, dtype=np.float64)
    if arr.size == 0:
        raise ConfigError("no timed runs to take a latency statistic of")
    if stat == "median":
        return float(np.median(arr))
    if stat == "min":
        return float(arr.min())
    if stat == "mean":
        return float(arr.mean())
    return float(np.percentile(arr, int(stat[1:])))


def row_latency(row: dict, stat: str = "median") -> float:
    """One measurement's latency under a statistic of its timed runs.

    "median" (the agent's), "min", "mean", or a percentile "pNN" of the raw runs. Budgets are held to a
    high percentile (p90 by default: 9 of 10 inferences at most this slow); low percentiles (p10) stay near
    the undisturbed latency on a machine shared with other work, where preemption inflates the upper tail.
    A row stored without its raw runs answers every percentile with the agent's median.
    """
    stat = check_stat(stat)
    if stat == "median":
        return float(row["latency_median_us"])
    if stat == "min":
        return float(row["latency_min_us"])
    if stat == "mean":
        return float(row["latency_mean_us"])
    runs = json.loads(row.get("samples_us") or "[]")
    if not runs:
        return float(row["latency_median_us"])
    return runs_latency(runs, stat)


def drift_levels(store: CampaignStore, stat: str = "median") -> tuple[np.ndarray, np.ndarray]:
    """(seq, level) of the reference rounds: one level per round = mean of its refs' relative latency."""
    refs = store.rows("ref")
    if not refs:
        return np.zeros(0), np.zeros(0)
    by_ref: dict[int, list[dict]] = {}
    for r in refs:
        by_ref.setdefault(r["idx"], []).append(r)
    meds = {k: float(np.median([row_latency(r, stat) for r in v])) for k, v in by_ref.items()}
    rounds: dict[int, list[float]] = {}
    for r in refs:
        round_start = r["seq"] - r["idx"]  # refs of one round are consecutive, idx 0..n_refs-1
        rounds.setdefault(round_start, []).append(row_latency(r, stat) / meds[r["idx"]])
    seqs = np.array(sorted(rounds), dtype=np.float64)
    levels = np.array([float(np.mean(rounds[int(s)])) for s in seqs])
    return seqs, levels


@dataclass
class CampaignData:
    """Per-sample arrays for fitting: one row per sample index (median over passes)."""

    indices: np.ndarray
    counts: np.ndarray  # (N, L)
    latency_us: np.ndarray  # (N,) median over passes (drift-corrected when asked)
    latency_by_pass: np.ndarray  # (N, P), NaN where missing
    peak_bytes: np.ndarray
    param_bytes: np.ndarray
    peak_activation_bytes: np.ndarray
    drift_corrected: bool
    sources: np.ndarray  # (N,) "uniform" | "stratified" | "generated"


def load_samples(
    store: CampaignStore, *, correct_drift: bool = False, passes: int | None = None, stat: str = "median"
) -> CampaignData:
    """Collect the samples of a campaign; ``passes``: use only the first ``passes`` passes; ``stat``: see
    :func:`row_latency`."""
    plan = store.plan()
    rows = store.rows("sample")
    if not rows:
        raise CampaignError(f"campaign store {store.path} holds no measured samples yet: run `nnf profile` first")
    p_used = plan.passes if passes is None else min(passes, plan.passes)
    seqs, levels = drift_levels(store, stat) if correct_drift else (np.zeros(0), np.zeros(0))
    by_idx: dict[int, dict] = {}
    for r in rows:
        if r["pass"] >= p_used:
            continue
        e = by_idx.setdefault(r["idx"], {"lat": [math.nan] * p_used, "row": r, "peaks": []})
        lat = row_latency(r, stat)
        if correct_drift and len(levels) >= 2:
            lat = lat / float(np.interp(r["seq"], seqs, levels))
        e["lat"][r["pass"]] = lat
        if r["peak_bytes"] is not None and r["peak_bytes"] > 0:
            e["peaks"].append(r["peak_bytes"])
    idx = np.array(sorted(by_idx), dtype=np.int64)
    ent = [by_idx[i] for i in idx.tolist()]
    lat_by_pass = np.array([e["lat"] for e in ent], dtype=np.float64)
    return CampaignData(
        indices=idx,
        counts=np.array([json.loads(e["row"]["counts"]) for e in ent], dtype=np.float64),
        latency_us=np.nanmedian(lat_by_pass, axis=1),
        latency_by_pass=lat_by_pass,
        peak_bytes=np.array([float(np.median(e["peaks"])) if e["peaks"] else math.nan for e in ent]),
        param_bytes=np.array([e["row"]["param_bytes"] for e in ent], dtype=np.float64),
        peak_activation_bytes=np.array([e["row"]["peak_activation_bytes"] for e in ent], dtype=np.float64),
        drift_corrected=bool(correct_drift and len(levels) >= 2),
        sources=np.array([e["row"].get("source") or "uniform" for e in ent], dtype=object),
    )


@dataclass(frozen=True)
class References:
    """The reference subnets' values over a campaign: what a later fingerprint is compared against.

    latency_us: per reference, the median over rounds of the statistic; peak_bytes likewise.
    level_sd: standard deviation of a round's level (the mean of its references' relative latency) around 1;
    shape_sd: standard deviation of one reference's ratio around its round's level (how much the references
    move against each other when nothing changed).
    """

    latency_us: list[float]
    peak_bytes: list[float]
    rounds: int
    level_sd: float
    shape_sd: float


def reference_values(store: CampaignStore, stat: str) -> References | None:
    """The reference subnets' values under ``stat`` (None when the campaign measured none)."""
    refs = store.rows("ref")
    if not refs:
        return None
    by_ref: dict[int, list[dict]] = {}
    for r in refs:
        by_ref.setdefault(r["idx"], []).append(r)
    ids = sorted(by_ref)
    lat = {k: float(np.median([row_latency(r, stat) for r in by_ref[k]])) for k in ids}
    peak = {k: float(np.median([r["peak_bytes"] for r in by_ref[k] if r["peak_bytes"]] or [math.nan])) for k in ids}
    rounds: dict[int, dict[int, float]] = {}
    for r in refs:
        rounds.setdefault(r["seq"] - r["idx"], {})[r["idx"]] = row_latency(r, stat) / lat[r["idx"]]
    full = [v for v in rounds.values() if len(v) == len(ids)]
    levels = np.array([float(np.exp(np.mean(np.log(list(v.values()))))) for v in full])
    resid = np.array([x / lv - 1.0 for v, lv in zip(full, levels, strict=True) for x in v.values()])
    return References(
        latency_us=[lat[k] for k in ids], peak_bytes=[peak[k] for k in ids], rounds=len(full),
        level_sd=float(np.std(levels - 1.0)) if len(levels) > 1 else 0.0,
        shape_sd=float(np.std(resid)) if len(resid) > 1 else 0.0,
    )
