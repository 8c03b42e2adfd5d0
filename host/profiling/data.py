"""Fit data: a campaign's measurements as arrays (one row per sample), latency statistics and drift."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from host.errors import CampaignError, ConfigError
from host.profiling.store import CampaignStore

LATENCY_STATS = ("median", "min", "p10", "p25", "mean")


def row_latency(row: dict, stat: str = "median") -> float:
    """One measurement's latency under a statistic of its timed runs.

    "median" (the agent's), "min", "mean", or a low percentile "p10"/"p25" of the raw runs. On a machine
    shared with other work, preemption inflates the median of a run series while its low percentiles stay
    near the undisturbed latency (see docs/campaigns.md for measured figures).
    """
    if stat == "median":
        return float(row["latency_median_us"])
    if stat == "min":
        return float(row["latency_min_us"])
    if stat == "mean":
        return float(row["latency_mean_us"])
    if stat in ("p10", "p25"):
        runs = json.loads(row.get("samples_us") or "[]")
        if not runs:
            return float(row["latency_median_us"])
        return float(np.percentile(runs, int(stat[1:])))
    raise ConfigError(f"unknown latency statistic {stat!r}; choose one of {', '.join(LATENCY_STATS)}")


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
    )
