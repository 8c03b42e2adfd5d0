"""Device profiles: the fitted predictors of one device, stored as plain JSON under ``device_profiles/``.

``device_profiles/<device-id>.json`` holds what the agent reported about the device (DeviceInfo) and one
entry per (supernet config, runtime) that was profiled on it::

    {"format": "nnfactory.device-profile", "version": 2, "device_id": "...", "device": {...DeviceInfo...},
     "updated": "<ISO date>",
     "profiles": {"resnet_numvqa/torchscript": {
         "backbone", "config", "layout_fingerprint", "runtime", "runtime_version", "measure", "input_shape",
         "campaign": {..., "mix": {planned fractions, measured per source, generators}},
         "fit_mix": {"train": {source: n}, "test": {source: n}},
         "percentiles": {"p50" | "p90" | "p99": {
             "latency": {schema, coefficients}, "variant", "models": {"linear", "improved"},
             "accuracy": {"linear", "improved", "by_source"}, "margin": {"value", "coverage", "n", ...}}},
         "default_percentile": "p90",
         "memory": {coefficients}, "memory_margin": {...}, "structure": {...},
         "references": {"ratios", "gates", "latency_us": {pNN: [...]}, "peak_bytes", "tolerance": {...}},
         "samples": {"train": n, "test": m}, "accuracy": {...}, "warnings": [...], "fitted_at"}}}

**Percentile.** Every timed run of every subnet is in the campaign store, so one fit produces one latency
model per percentile of a subnet's runs (p50, p90, p99): the profile predicts the statistic a budget will
be held to (``nnf generate --percentile``, p90 by default: 9 of 10 inferences at most that slow).

**Margin.** On the held-out subnets (which include generated models when the campaign sampled them), the
relative error ``measured / predicted − 1`` is sorted and its order statistic ``k = ⌈(n + 1)·coverage⌉``
taken as the margin (the split-conformal bound: for a new subnet drawn like the held-out ones,
``measured ≤ predicted·(1 + margin)`` holds with probability ≥ coverage, 99 % by default; it needs
``n ≥ 99`` held-out subnets, with fewer the largest error is used and the profile says so). The search
holds ``predicted·(1 + margin)`` to the budget.

**References.** The campaign's reference subnets (full, 50 %, 25 %) and their values per percentile are
kept, with tolerances from their spread over the campaign: ``host.profiling.drift`` re-measures them later
to tell whether the device still behaves as profiled.

API (also for reports): :func:`load_predictor` -> :class:`DevicePredictor` with ``predict_counts`` /
``__call__`` (best estimates), ``bound_counts`` / :meth:`DevicePredictor.guarded` (estimates plus margin: what
a budget is checked against), ``latency_margin``, ``memory_margin``, ``percentile``; :func:`percentiles_of`
lists what an entry offers. Loading an entry checks the gate-layout fingerprint: a profile fitted for one
supernet is refused for another (the coefficients are per gated layer). Writes are atomic (temp file +
``os.replace``); no pickle. Only measured profiles belong here: ``nnf fit`` writes them from a campaign store.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from host.errors import ConfigError, SpecError, suggest
from host.fileio import write_json_atomic
from host.gates import GateLayout
from host.paths import shipped_profiles_dir, user_data_dir
from host.profiling.data import DEFAULT_PERCENTILE, PERCENTILES, percentile_name
from host.profiling.predictor import (
    LatencyModel,
    LatencySchema,
    MemoryModel,
    StructureModel,
    accuracy,
    active_counts,
    active_layers,
)

PROFILE_FORMAT = "nnfactory.device-profile"
PROFILE_VERSION = 2
DEFAULT_COVERAGE = 0.99


def default_profiles_dir() -> Path:
    """Where ``nnf fit`` writes profiles: ``$NNF_PROFILES_DIR``, else ``$XDG_DATA_HOME/nn-factory/device_profiles``."""
    env = os.environ.get("NNF_PROFILES_DIR")
    if env:
        return Path(env)
    return user_data_dir() / "device_profiles"


def profile_dirs(root: Path | None = None) -> list[Path]:
    """Where profiles are looked up, first match wins: ``root`` alone when given, else the user's profiles
    (:func:`default_profiles_dir`) and then those shipped with NN-Factory (``device_profiles/``)."""
    if root is not None:
        return [Path(root)]
    dirs = [default_profiles_dir()]
    if shipped_profiles_dir() not in dirs:
        dirs.append(shipped_profiles_dir())
    return dirs


def profile_path(device: str, root: Path | None = None) -> Path | None:
    """The profile file of ``device`` (first in :func:`profile_dirs`), or None."""
    for d in profile_dirs(root):
        p = d / f"{safe_device_id(device)}.json"
        if p.exists():
            return p
    return None


def safe_device_id(name: str) -> str:
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name) or name.startswith("."):
        raise ConfigError(f"device name {name!r} must be non-empty and use only letters, digits, '-', '_', '.'")
    return name


def entry_key(config: str, runtime: str) -> str:
    return f"{config}/{runtime}"


def atomic_write_json(path: Path, data: Any) -> None:
    """Write a profile file atomically, with the umask's modes (``host.fileio``)."""
    write_json_atomic(path, data, indent=1)


def list_devices(root: Path | None = None) -> list[str]:
    return sorted({p.stem for d in profile_dirs(root) if d.is_dir() for p in d.glob("*.json")})


def read_profile(device: str, root: Path | None = None) -> dict:
    """The whole profile file of a device (validated header)."""
    path = profile_path(device, root)
    if path is None:
        known = list_devices(root)
        where = " or ".join(str(d) for d in profile_dirs(root))
        raise ConfigError(
            f"no device profile for {device!r} in {where} (known: {', '.join(known) or 'none'})."
            + suggest(device, known)
            + " Profile it first: `nnf profile --device NAME ...` then `nnf fit --device NAME`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"device profile {path} is unreadable ({exc}); re-run `nnf fit --device {device}`") from exc
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise SpecError(f"{path} is not an NN-Factory device profile (format {PROFILE_FORMAT!r} missing)")
    if not isinstance(data.get("version"), int) or data["version"] > PROFILE_VERSION:
        raise SpecError(f"{path} has profile version {data.get('version')!r}; this NN-Factory reads up to {PROFILE_VERSION}")
    if not isinstance(data.get("profiles"), dict):
        raise SpecError(f"{path} has no 'profiles' object")
    return data


def write_profile_entry(device: str, device_info: dict, entry: dict, root: Path | None = None) -> Path:
    """Add or replace one (config, runtime) entry of a device's profile file, atomically."""
    target = default_profiles_dir() if root is None else Path(root)
    path = target / f"{safe_device_id(device)}.json"
    # a device whose profile ships with NN-Factory keeps its other entries in the user's copy
    data = read_profile(device, root) if profile_path(device, root) is not None else {
        "format": PROFILE_FORMAT, "version": PROFILE_VERSION, "device_id": device, "profiles": {},
    }
    data["version"] = PROFILE_VERSION
    data["device"] = device_info
    data["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    data["profiles"][entry_key(entry["config"], entry["runtime"])] = entry
    atomic_write_json(path, data)
    return path


@dataclass
class DevicePredictor:
    """A device profile entry bound to a supernet's gate layout: predicts latency and memory of candidates.

    ``percentile``: the statistic of a subnet's runs the latency model predicts. Predictions are best
    estimates, times ``latency_scale``/``memory_scale`` (1 unless a drift check rescaled the profile); the
    *bounds* add the calibrated margin and are what a budget is held to.
    """

    device: str
    layout: GateLayout
    runtime: str
    percentile: str
    latency: LatencyModel
    memory: MemoryModel
    structure: StructureModel
    entry: dict
    latency_margin: float = 0.0
    memory_margin: float = 0.0
    latency_scale: float = 1.0
    memory_scale: float = 1.0

    def predict_counts(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best estimates ``(latency_us (B,), memory_bytes (B,))`` for active counts ``(B, L)``."""
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        mem = self.memory.predict(self.structure.param_bytes(c), self.structure.peak_activation_bytes(c),
                                  active_layers(c))
        return self.latency.predict(c) * self.latency_scale, mem * self.memory_scale

    def bound_counts(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimates plus the calibrated margin: what "fits the budget" is decided on."""
        lat, mem = self.predict_counts(counts)
        return lat * (1.0 + self.latency_margin), mem * (1.0 + self.memory_margin)

    def __call__(self, gates: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """BatchEvaluator of best estimates: per-layer ``(B, D_l)`` hard gates -> (latency_us, memory_bytes)."""
        return self.predict_counts(active_counts(self.layout, gates))

    def guarded(self) -> Callable[[Sequence], tuple[np.ndarray, np.ndarray]]:
        """BatchEvaluator of the bounds (estimates plus margin): what the budget search holds to the budget."""
        return lambda gates: self.bound_counts(active_counts(self.layout, gates))

    def rescaled(self, *, latency: float = 1.0, memory: float = 1.0) -> DevicePredictor:
        """The same predictor with its estimates multiplied by drift factors."""
        return replace(self, latency_scale=self.latency_scale * latency, memory_scale=self.memory_scale * memory)

    def margins(self) -> dict:
        """The margins in force, with how they were calibrated (for reports)."""
        lat = self.entry["percentiles"][self.percentile].get("margin", {})
        mem = self.entry.get("memory_margin", {})
        return {"latency": self.latency_margin, "memory": self.memory_margin, "coverage": lat.get("coverage"),
                "latency_heldout": lat.get("n"), "memory_heldout": mem.get("n"),
                "guaranteed": bool(lat.get("guaranteed")) and bool(mem.get("guaranteed"))}


def percentiles_of(entry: dict) -> list[str]:
    """The percentiles a profile entry was fitted on (empty for a version-1 entry)."""
    return sorted((entry.get("percentiles") or {}), key=lambda p: int(p[1:]))


def find_entry(device: str, layout: GateLayout, runtime: str | None = None, root: Path | None = None) -> tuple[str, dict]:
    """The (key, entry) of ``device``'s profile for this layout's config (and runtime)."""
    data = read_profile(device, root)
    entries = data["profiles"]
    keys = [k for k, e in entries.items() if e.get("config") == layout.config and (runtime is None or e.get("runtime") == runtime)]
    if not keys:
        have = [k for k, e in entries.items() if e.get("config") == layout.config]
        if runtime and have:
            other, want = _user_runtime(entries[have[0]]["runtime"]), _user_runtime(runtime)
            raise ConfigError(
                f"device {device!r} is profiled for {layout.config} on runtime {other!r}, not on {want!r}: a "
                f"{other} profile does not predict {want} (e.g. ONNX Runtime and TorchScript differ by 2x on the "
                f"same model). Profile that runtime: `nnf profile --device {device} --backbone {layout.config} "
                f"--runtime {want}` then `nnf fit --device {device} --backbone {layout.config} --runtime {want}`"
            )
        raise ConfigError(
            f"device {device!r} has no profile for supernet {layout.config!r}"
            + (f" with runtime {_user_runtime(runtime)!r}" if runtime else "")
            + f" (it has: {', '.join(sorted(entries)) or 'none'}); profile and fit it: "
            f"`nnf profile --device {device} --backbone {layout.config}` then `nnf fit --device {device}`"
        )
    if len(keys) > 1:
        runtimes = ", ".join(entries[k]["runtime"] for k in keys)
        raise ConfigError(f"device {device!r} has profiles of {layout.config} for several runtimes ({runtimes}): say "
                          "which artifact the budget is for (--format)")
    entry = entries[keys[0]]
    if entry.get("layout_fingerprint") != layout.fingerprint():
        raise SpecError(
            f"the profile {keys[0]!r} of device {device!r} was fitted for a different gate layout of "
            f"{layout.config!r} (fingerprint {str(entry.get('layout_fingerprint'))[:12]} vs "
            f"{layout.fingerprint()[:12]}): its per-layer coefficients do not apply; re-profile this supernet"
        )
    return keys[0], entry


def _user_runtime(runtime: str) -> str:
    """The name users type for a runtime (``--runtime``/``--format``), from any spelling."""
    from host.exports.formats import format_for_agent_runtime

    try:
        return format_for_agent_runtime(runtime).name
    except ConfigError:
        return runtime


def load_predictor(device: str, layout: GateLayout, runtime: str | None = None, root: Path | None = None, *,
                   percentile: str | int = DEFAULT_PERCENTILE) -> DevicePredictor:
    """Load the entry of ``device`` for this layout's config (and runtime) at ``percentile``, checking the
    gate-layout fingerprint."""
    pct = percentile_name(percentile)
    key, entry = find_entry(device, layout, runtime, root)
    have = percentiles_of(entry)
    if pct not in have:
        if not have:
            stat = entry.get("latency_statistic", "an older statistic")
            raise SpecError(
                f"the profile {key!r} of device {device!r} predicts the {stat} of each subnet's runs and has no "
                f"calibrated margin (profile version 1); budgets are held to a percentile ({pct} asked): re-fit it "
                f"from its campaign with `nnf fit --device {device}`, or profile the device again"
            )
        raise ConfigError(f"the profile {key!r} of device {device!r} is fitted on {', '.join(have)}, not {pct}: "
                          f"use one of those or re-fit with `nnf fit --device {device} --percentiles ...`")
    block = entry["percentiles"][pct]
    try:
        return DevicePredictor(
            device=device, layout=layout, runtime=str(entry["runtime"]), percentile=pct,
            latency=LatencyModel.from_json(layout, block["latency"]),
            memory=MemoryModel.from_json(entry["memory"]),
            structure=StructureModel.from_json(layout, entry["structure"]),
            entry=entry,
            latency_margin=float(block["margin"]["value"]),
            memory_margin=float(entry["memory_margin"]["value"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"profile {key!r} of device {device!r} lacks {exc}; re-run `nnf fit --device {device}`") from exc


# ---- fitting --------------------------------------------------------------------------------------


def split_indices(n: int, test: int, warnings: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train = the first ``n - test`` rows, test = the last ``test`` (sample gates are i.i.d. per index).

    The held-out set never takes more than half of the rows; when it is shrunk, a line says so in ``warnings``.
    """
    if n < 4:
        raise ConfigError(f"need at least 4 measured subnets to fit and evaluate a profile, have {n}")
    held = max(1, min(test, n // 2))
    if held < test and warnings is not None:
        warnings.append(f"held out {held} subnets instead of the {test} asked: the campaign holds only {n} measured "
                        f"subnets and at least half are kept for fitting (grow it: `nnf profile ... --samples N`)")
    return np.arange(n - held), np.arange(n - held, n)


def calibrated_margin(predicted: np.ndarray, measured: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> dict:
    """The relative margin ``m >= 0`` with ``measured <= predicted·(1 + m)`` for a new subnet with probability
    >= ``coverage``: the ``⌈(n + 1)·coverage⌉``-th smallest held-out ratio ``measured / predicted − 1``
    (split-conformal). With too few held-out subnets for that order statistic, the largest ratio is used and
    ``guaranteed`` is False."""
    if not 0 < coverage < 1:
        raise ConfigError(f"coverage must lie in (0, 1), got {coverage}")
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    t = np.asarray(measured, dtype=np.float64).reshape(-1)
    ok = np.isfinite(p) & np.isfinite(t) & (p > 0)
    ratios = np.sort(t[ok] / p[ok] - 1.0)
    n = int(ratios.size)
    if n == 0:
        raise ConfigError("no held-out subnet to calibrate a margin on")
    k = int(np.ceil((n + 1) * coverage))
    value = float(ratios[min(k, n) - 1])
    return {"value": max(0.0, value), "coverage": coverage, "n": n, "order_statistic": min(k, n),
            "guaranteed": k <= n, "largest_error": float(ratios[-1]),
            "covered_heldout": float(np.mean(ratios <= max(0.0, value)))}


@dataclass
class FitSet:
    """Arrays for fitting and held-out evaluation, and the index vectors that split them."""

    counts: np.ndarray
    latency_us: np.ndarray
    param_bytes: np.ndarray
    peak_activation_bytes: np.ndarray
    peak_bytes: np.ndarray
    sources: np.ndarray
    train: np.ndarray
    test: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def mix(self, which: np.ndarray) -> dict[str, int]:
        names, counts = np.unique(self.sources[which].astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts, strict=True)}


def heldout_arrays(main, test=None, *, n_test: int = 100, train_limit: int | None = None) -> FitSet:
    """Arrays + (train, held) index vectors for fitting and held-out evaluation.

    ``main``/``test``: :class:`host.profiling.data.CampaignData`. Without ``test``, the last ``n_test`` samples of
    ``main`` (by index) are held out: sources are mixed in exact proportions per block of indices, so they
    carry the campaign's mix, generated models included. With ``test`` (a separate campaign of the same plan
    seed, e.g. measured with three passes so the held-out truth is the median of three), every subnet of
    ``test`` is held out and the subnets with the same indices are dropped from ``main``'s training set.
    ``train_limit``: fit on only the first N training subnets (a warning says when fewer exist).
    """
    warnings: list[str] = []

    def limit(train: np.ndarray) -> np.ndarray:
        if train_limit is None:
            return train
        if train_limit > len(train):
            warnings.append(f"--train-limit {train_limit}, but only {len(train)} training subnets exist: fitted on "
                            f"{len(train)}")
        return train[:train_limit]

    if test is None:
        train, held = split_indices(len(main.indices), n_test, warnings)
        return FitSet(main.counts, main.latency_us, main.param_bytes, main.peak_activation_bytes, main.peak_bytes,
                      main.sources, limit(train), held, warnings)
    keep = np.flatnonzero(~np.isin(main.indices, test.indices))
    both = np.isin(main.indices, test.indices)
    if both.any():  # same index = same gates: the stores must agree on what those subnets are
        pos = {int(i): k for k, i in enumerate(test.indices)}
        mine = main.counts[both]
        theirs = test.counts[[pos[int(i)] for i in main.indices[both]]]
        if not np.array_equal(mine, theirs):
            raise SpecError("the test campaign drew different subnets for the same indices: use the same --seed")
    keep = limit(keep)

    def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a[keep], b])

    n = len(keep)
    return FitSet(cat(main.counts, test.counts), cat(main.latency_us, test.latency_us),
                  cat(main.param_bytes, test.param_bytes), cat(main.peak_activation_bytes, test.peak_activation_bytes),
                  cat(main.peak_bytes, test.peak_bytes), cat(main.sources, test.sources),
                  np.arange(n), np.arange(n, n + len(test.indices)), warnings)


def fit_latency(layout: GateLayout, fs: FitSet) -> tuple[dict[str, LatencyModel], dict]:
    """Both latency variants fitted on ``fs.train``; held-out figures on ``fs.test`` (also per source)."""
    models: dict[str, LatencyModel] = {}
    acc: dict[str, Any] = {}
    te = fs.test
    for variant in ("linear", "improved"):
        m = LatencyModel(layout, LatencySchema.named(variant)).fit(fs.counts[fs.train], fs.latency_us[fs.train])
        models[variant] = m
        pred = m.predict(fs.counts[te])
        acc[variant] = _latency_accuracy(pred, fs.latency_us[te])
        acc[variant]["by_source"] = {
            src: _latency_accuracy(pred[fs.sources[te] == src], fs.latency_us[te][fs.sources[te] == src])
            for src in sorted(set(fs.sources[te].astype(str)))
        }
    return models, acc


def _latency_accuracy(pred: np.ndarray, true: np.ndarray) -> dict:
    a10 = accuracy(pred, true, 0.10)
    a5 = accuracy(pred, true, 0.05)
    return {"within_10pct": a10["within"], "within_5pct": a5["within"], "mape": a10["mape"], "n": a10["n"]}


def fit_memory(fs: FitSet) -> tuple[MemoryModel | None, dict | None]:
    """The memory model fitted on ``fs.train`` (subnets with a measured peak); held-out figures on ``fs.test``."""
    ok = np.isfinite(fs.peak_bytes) & (fs.peak_bytes > 0)
    tr, te = fs.train[ok[fs.train]], fs.test[ok[fs.test]]
    if len(tr) < 2 or len(te) < 1:
        return None, None
    pb, act, peak = fs.param_bytes, fs.peak_activation_bytes, fs.peak_bytes
    nl = active_layers(fs.counts)
    base = MemoryModel(active_layers=False).fit(pb[tr], act[tr], peak[tr])
    b5 = accuracy(base.predict(pb[te], act[te]), peak[te], 0.05)
    model = MemoryModel().fit(pb[tr], act[tr], peak[tr], nl[tr])
    pred = model.predict(pb[te], act[te], nl[te])
    a5 = accuracy(pred, peak[te], 0.05)
    src = fs.sources[te]
    acc = {"within_5pct": a5["within"], "mape": a5["mape"], "n": a5["n"],
           "by_source": {s: {k: v for k, v in accuracy(pred[src == s], peak[te][src == s], 0.05).items()}
                         for s in sorted(set(src.astype(str)))},
           "baseline": {"within_5pct": b5["within"], "mape": b5["mape"],
                        "form": "bias + a*param_bytes + b*peak_activation_bytes"},
           "predicted": pred, "measured": peak[te]}
    return model, acc


def fit_models(layout: GateLayout, fs: FitSet) -> tuple[dict[str, LatencyModel], MemoryModel | None, dict]:
    """Both latency variants and the memory model on ``fs.train``; held-out figures on ``fs.test``."""
    models, lat_acc = fit_latency(layout, fs)
    mem, mem_acc = fit_memory(fs)
    if mem_acc is not None:
        mem_acc = {k: v for k, v in mem_acc.items() if k not in ("predicted", "measured")}
    return models, mem, {"latency": lat_acc, "memory": mem_acc}


def fit_store(
    store,
    *,
    test: int = 100,
    test_store=None,
    correct_drift: bool = False,
    passes: int | None = None,
    train_limit: int | None = None,
    variant: str = "improved",
    percentiles: Sequence[str] = PERCENTILES,
    coverage: float = DEFAULT_COVERAGE,
) -> dict:
    """Fit a device-profile entry from a campaign store (``host.profiling.store.CampaignStore``).

    The last ``test`` samples (by index) are held out; the shipped coefficients are the ones fitted on
    the rest (``train_limit``: only the first N of them), so the accuracy figures and margins describe
    exactly the models in the profile. One latency model per percentile of each subnet's runs
    (``percentiles``); ``variant`` picks the latency model the search uses (both are stored). The entry's
    ``warnings`` list what weakens it (a shrunk held-out set, too few subnets for the margin's coverage, no
    generated models held out, an unfinished campaign).
    """
    from host.profiling.data import drift_levels, load_samples, reference_values
    from host.profiling.plan import REFERENCE_RATIOS, reference_gates
    from host.profiling.store import pack_gates
    from host.supernets import build_supernet

    pcts = [percentile_name(p) for p in percentiles]
    if not pcts:
        raise ConfigError("fit at least one percentile (--percentiles 50,90,99)")
    plan = store.plan()
    layout = store.layout()
    if layout.fingerprint() != plan.layout_fingerprint:
        raise SpecError(f"campaign store {store.path} is inconsistent: its layout does not match its plan")
    net = build_supernet(plan.backbone)
    if net.gate_layout().fingerprint() != layout.fingerprint():
        raise SpecError(
            f"campaign store {store.path} was measured on a different gate layout of {plan.backbone!r} than this "
            "NN-Factory builds; re-profile the supernet"
        )
    if test_store is not None:
        tplan = test_store.plan()
        if tplan.layout_fingerprint != plan.layout_fingerprint or tplan.seed != plan.seed:
            raise SpecError(f"test campaign {test_store.path} is for another supernet or seed than {store.path}")
    blocks: dict[str, dict] = {}
    fs: FitSet | None = None
    data = None
    for pct in pcts:
        data = load_samples(store, correct_drift=correct_drift, passes=passes, stat=pct)
        test_data = load_samples(test_store, correct_drift=correct_drift, stat=pct) if test_store is not None else None
        fs = heldout_arrays(data, test_data, n_test=test, train_limit=train_limit)
        models, acc = fit_latency(layout, fs)
        chosen = models[variant]
        margin = calibrated_margin(chosen.predict(fs.counts[fs.test]), fs.latency_us[fs.test], coverage)
        blocks[pct] = {"latency": chosen.to_json(), "variant": variant,
                       "models": {k: m.to_json() for k, m in models.items()}, "accuracy": acc, "margin": margin}
    assert fs is not None and data is not None
    mem, mem_acc = fit_memory(fs)
    if mem is None or mem_acc is None:
        raise SpecError(f"campaign store {store.path} has no memory measurements; the agent reported no peak_bytes")
    memory_margin = calibrated_margin(mem_acc.pop("predicted"), mem_acc.pop("measured"), coverage)
    warnings = list(fs.warnings)
    n_feat = len(LatencySchema.named(variant).feature_names(layout))
    if len(fs.train) < 3 * n_feat:
        warnings.append(f"the {variant} latency model has {n_feat} coefficients and was fitted on only {len(fs.train)} "
                        f"subnets: expect weak accuracy; measure more (`nnf profile ... --samples N`)")
    margin0 = blocks[pcts[0]]["margin"]
    if not margin0["guaranteed"]:
        need = int(np.ceil(coverage / (1 - coverage)))
        warnings.append(f"{margin0['n']} held-out subnets are too few for a {coverage:.0%} margin (needs >= {need}): "
                        "the margins are the largest held-out errors, without that guarantee")
    test_mix = fs.mix(fs.test)
    if plan.mix.generated > 0 and not test_mix.get("generated"):
        warnings.append("no generated model is among the held-out subnets: the margin is calibrated on random subnets only")
    left = len(store.failures(final=False))
    if left or len(data.indices) < plan.samples:
        warnings.append(f"the campaign is unfinished: {len(data.indices)} of {plan.samples} planned samples measured"
                        + (f", {left} jobs to retry" if left else "") + " (re-run `nnf profile` to complete it)")
    structure = StructureModel.calibrate(net)
    info = store.get_meta("device_info") or {}
    rv = {r.get("name"): r.get("version") for r in info.get("runtimes", []) if isinstance(r, dict)}
    _, levels = drift_levels(store, pcts[0])
    references = None
    refs = {pct: reference_values(store, pct) for pct in pcts}
    if all(r is not None for r in refs.values()):
        some = next(iter(refs.values()))
        assert some is not None
        n_refs = len(some.latency_us)
        references = {
            "ratios": list(REFERENCE_RATIOS[:n_refs]),
            "gates": [pack_gates(reference_gates(plan, layout, k)) for k in range(n_refs)],
            "latency_us": {p: r.latency_us for p, r in refs.items() if r is not None},
            "peak_bytes": some.peak_bytes,
            "rounds": some.rounds,
            "tolerance": {p: {"level": max(0.05, 3 * r.level_sd), "shape": max(0.04, 3 * r.shape_sd)}
                          for p, r in refs.items() if r is not None} | {"memory": 0.05},
        }
        if some.rounds < 2:
            warnings.append("fewer than two reference rounds were measured: drift tolerances are defaults, not "
                            "measured (lower --reference-every)")
    else:
        warnings.append("the campaign measured no reference subnets (--reference-every 0): no drift check possible")
    default = DEFAULT_PERCENTILE if DEFAULT_PERCENTILE in pcts else pcts[0]
    generators = store.generators()
    return {
        "backbone": net.backbone,
        "config": plan.backbone,
        "layout_fingerprint": layout.fingerprint(),
        "runtime": plan.runtime,
        "runtime_version": rv.get(plan.runtime, ""),
        "measure": dict(plan.measure.__dict__),
        "input_shape": list(plan.input_shape),
        "campaign": {
            "store": str(store.path),
            "samples_planned": plan.samples,
            "samples_measured": int(len(data.indices)),
            "mix": {"planned": plan.mix.fractions(), "measured": _counts(data.sources), "generators": generators},
            "test_store": str(test_store.path) if test_store is not None else None,
            "passes_used": int(data.latency_by_pass.shape[1]),
            "seed": plan.seed,
            "drift_corrected": data.drift_corrected,
            "drift_range": float(levels.max() - levels.min()) if len(levels) else 0.0,
            "reference_rounds": int(len(levels)),
        },
        "fit_mix": {"train": fs.mix(fs.train), "test": test_mix},
        "percentiles": blocks,
        "default_percentile": default,
        "memory": mem.to_json(),
        "memory_margin": memory_margin,
        "structure": structure.to_json(),
        "references": references,
        "samples": {"train": int(len(fs.train)), "test": int(len(fs.test))},
        "accuracy": {"latency": blocks[default]["accuracy"], "memory": mem_acc, "percentile": default},
        "warnings": warnings,
        "fitted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts, strict=True)}
