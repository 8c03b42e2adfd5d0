"""Device profiles: the fitted predictors of one device, stored as plain JSON under ``device_profiles/``.

``device_profiles/<device-id>.json`` holds what the agent reported about the device (DeviceInfo) and one
entry per (supernet config, runtime) that was profiled on it::

    {"format": "nnfactory.device-profile", "version": 1, "device_id": "...", "device": {...DeviceInfo...},
     "updated": "<ISO date>",
     "profiles": {"resnet_numvqa/torchscript": {
         "backbone", "config", "layout_fingerprint", "runtime", "runtime_version", "measure", "campaign",
         "latency": {schema, coefficients}, "latency_baseline": {...}, "memory": {...}, "structure": {...},
         "samples": {"train": n, "test": m}, "accuracy": {...held-out figures...}, "fitted_at"}}}

Loading an entry checks the gate-layout fingerprint: a profile fitted for one supernet is refused for
another (the coefficients are per gated layer). Writes are atomic (temp file + ``os.replace``); no pickle.
Only measured profiles belong here: ``nnf fit`` writes them from a campaign store.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.errors import ConfigError, SpecError, suggest
from host.fileio import write_json_atomic
from host.gates import GateLayout
from host.paths import shipped_profiles_dir, user_data_dir
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
PROFILE_VERSION = 1


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
    data["device"] = device_info
    data["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    data["profiles"][entry_key(entry["config"], entry["runtime"])] = entry
    atomic_write_json(path, data)
    return path


@dataclass
class DevicePredictor:
    """A device profile entry bound to a supernet's gate layout: predicts latency and memory of candidates."""

    device: str
    layout: GateLayout
    runtime: str
    latency: LatencyModel
    memory: MemoryModel
    structure: StructureModel
    entry: dict

    def predict_counts(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        mem = self.memory.predict(self.structure.param_bytes(c), self.structure.peak_activation_bytes(c),
                                  active_layers(c))
        return self.latency.predict(c), mem

    def __call__(self, gates: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """BatchEvaluator: per-layer ``(B, D_l)`` hard gates -> (latency_us (B,), memory_bytes (B,))."""
        return self.predict_counts(active_counts(self.layout, gates))


def load_predictor(device: str, layout: GateLayout, runtime: str | None = None, root: Path | None = None) -> DevicePredictor:
    """Load the entry of ``device`` for this layout's config (and runtime), checking the fingerprint."""
    data = read_profile(device, root)
    entries = data["profiles"]
    keys = [k for k, e in entries.items() if e.get("config") == layout.config and (runtime is None or e.get("runtime") == runtime)]
    if not keys:
        have = ", ".join(sorted(entries)) or "none"
        raise ConfigError(
            f"device {device!r} has no profile for supernet {layout.config!r}"
            + (f" with runtime {runtime!r}" if runtime else "")
            + f" (it has: {have}); profile and fit it: `nnf profile --device {device} --backbone {layout.config}`"
        )
    if len(keys) > 1:
        raise ConfigError(f"device {device!r} has profiles for several runtimes of {layout.config} ({keys}); pass --runtime")
    entry = entries[keys[0]]
    if entry.get("layout_fingerprint") != layout.fingerprint():
        raise SpecError(
            f"the profile {keys[0]!r} of device {device!r} was fitted for a different gate layout of "
            f"{layout.config!r} (fingerprint {str(entry.get('layout_fingerprint'))[:12]} vs "
            f"{layout.fingerprint()[:12]}): its per-layer coefficients do not apply; re-profile this supernet"
        )
    try:
        return DevicePredictor(
            device=device,
            layout=layout,
            runtime=str(entry["runtime"]),
            latency=LatencyModel.from_json(layout, entry["latency"]),
            memory=MemoryModel.from_json(entry["memory"]),
            structure=StructureModel.from_json(layout, entry["structure"]),
            entry=entry,
        )
    except KeyError as exc:
        raise SpecError(f"profile {keys[0]!r} of device {device!r} lacks {exc}; re-run `nnf fit --device {device}`") from exc


# ---- fitting --------------------------------------------------------------------------------------


def split_indices(n: int, test: int) -> tuple[np.ndarray, np.ndarray]:
    """Train = the first ``n - test`` rows, test = the last ``test`` (sample gates are i.i.d. per index)."""
    if n < 4:
        raise ConfigError(f"need at least 4 measured subnets to fit and evaluate a profile, have {n}")
    test = max(1, min(test, n // 2))
    return np.arange(n - test), np.arange(n - test, n)


def fit_models(
    layout: GateLayout,
    counts: np.ndarray,
    latency_us: np.ndarray,
    param_bytes: np.ndarray,
    peak_activation_bytes: np.ndarray,
    peak_bytes: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> tuple[dict[str, LatencyModel], MemoryModel | None, dict]:
    """Fit both latency variants and the memory model on ``train``; held-out figures on ``test``."""
    models: dict[str, LatencyModel] = {}
    acc: dict[str, Any] = {"latency": {}, "memory": None}
    for variant in ("linear", "improved"):
        m = LatencyModel(layout, LatencySchema.named(variant)).fit(counts[train], latency_us[train])
        models[variant] = m
        pred = m.predict(counts[test])
        a10 = accuracy(pred, latency_us[test], 0.10)
        a5 = accuracy(pred, latency_us[test], 0.05)
        acc["latency"][variant] = {"within_10pct": a10["within"], "within_5pct": a5["within"], "mape": a10["mape"], "n": a10["n"]}
    mem_model = None
    ok = np.isfinite(peak_bytes) & (peak_bytes > 0)
    tr, te = train[ok[train]], test[ok[test]]
    if len(tr) >= 2 and len(te) >= 1:
        nl = active_layers(counts)
        base = MemoryModel(active_layers=False).fit(param_bytes[tr], peak_activation_bytes[tr], peak_bytes[tr])
        b5 = accuracy(base.predict(param_bytes[te], peak_activation_bytes[te]), peak_bytes[te], 0.05)
        mem_model = MemoryModel().fit(param_bytes[tr], peak_activation_bytes[tr], peak_bytes[tr], nl[tr])
        pred = mem_model.predict(param_bytes[te], peak_activation_bytes[te], nl[te])
        a5 = accuracy(pred, peak_bytes[te], 0.05)
        acc["memory"] = {"within_5pct": a5["within"], "mape": a5["mape"], "n": a5["n"],
                         "baseline": {"within_5pct": b5["within"], "mape": b5["mape"],
                                      "form": "bias + a*param_bytes + b*peak_activation_bytes"}}
    return models, mem_model, acc


def heldout_arrays(main, test=None, *, n_test: int = 100, train_limit: int | None = None) -> tuple:
    """Arrays + (train, held) index vectors for fitting and held-out evaluation.

    ``main``/``test``: :class:`host.profiling.data.CampaignData`. Without ``test``, the last ``n_test`` samples of
    ``main`` (by index) are held out. With ``test`` (a separate campaign of the same plan seed, e.g.
    measured with three passes so the held-out truth is the median of three), every subnet of ``test`` is
    held out and the subnets with the same indices are dropped from ``main``'s training set.
    """
    if test is None:
        train, held = split_indices(len(main.indices), n_test)
        if train_limit is not None:
            train = train[:train_limit]
        return main.counts, main.latency_us, main.param_bytes, main.peak_activation_bytes, main.peak_bytes, train, held
    keep = np.flatnonzero(~np.isin(main.indices, test.indices))
    both = np.isin(main.indices, test.indices)
    if both.any():  # same index = same gates: the stores must agree on what those subnets are
        pos = {int(i): k for k, i in enumerate(test.indices)}
        mine = main.counts[both]
        theirs = test.counts[[pos[int(i)] for i in main.indices[both]]]
        if not np.array_equal(mine, theirs):
            raise SpecError("the test campaign drew different subnets for the same indices: use the same --seed")
    if train_limit is not None:
        keep = keep[:train_limit]
    cat = lambda a, b: np.concatenate([a[keep], b])  # noqa: E731
    n = len(keep)
    return (cat(main.counts, test.counts), cat(main.latency_us, test.latency_us), cat(main.param_bytes, test.param_bytes),
            cat(main.peak_activation_bytes, test.peak_activation_bytes), cat(main.peak_bytes, test.peak_bytes),
            np.arange(n), np.arange(n, n + len(test.indices)))


def fit_store(
    store,
    *,
    test: int = 100,
    test_store=None,
    correct_drift: bool = False,
    passes: int | None = None,
    train_limit: int | None = None,
    variant: str = "improved",
    stat: str = "p10",
) -> dict:
    """Fit a device-profile entry from a campaign store (``host.profiling.store.CampaignStore``).

    The last ``test`` samples (by index) are held out; the shipped coefficients are the ones fitted on
    the rest (``train_limit``: only the first N of them), so the accuracy figures describe exactly the
    model in the profile. ``variant`` picks the latency model the search uses; both are stored.
    ``stat``: which statistic of each subnet's timed runs is "its latency" (``host.profiling.data.row_latency``).
    """
    from host.profiling.data import load_samples
    from host.supernets import build_supernet

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
    data = load_samples(store, correct_drift=correct_drift, passes=passes, stat=stat)
    test_data = None
    if test_store is not None:
        tplan = test_store.plan()
        if tplan.layout_fingerprint != plan.layout_fingerprint or tplan.seed != plan.seed:
            raise SpecError(f"test campaign {test_store.path} is for another supernet or seed than {store.path}")
        test_data = load_samples(test_store, correct_drift=correct_drift, stat=stat)
    counts, lat, pbytes, act, peak, train, held = heldout_arrays(data, test_data, n_test=test, train_limit=train_limit)
    models, mem, acc = fit_models(layout, counts, lat, pbytes, act, peak, train, held)
    if mem is None:
        raise SpecError(f"campaign store {store.path} has no memory measurements; the agent reported no peak_bytes")
    structure = StructureModel.calibrate(net)
    info = store.get_meta("device_info") or {}
    rv = {r.get("name"): r.get("version") for r in info.get("runtimes", []) if isinstance(r, dict)}
    from host.profiling.data import drift_levels

    _, levels = drift_levels(store, stat)
    chosen = models[variant]
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
            "test_store": str(test_store.path) if test_store is not None else None,
            "test_passes": int(test_data.latency_by_pass.shape[1]) if test_data is not None else None,
            "passes_used": int(data.latency_by_pass.shape[1]),
            "seed": plan.seed,
            "drift_corrected": data.drift_corrected,
            "drift_range": float(levels.max() - levels.min()) if len(levels) else 0.0,
            "reference_rounds": int(len(levels)),
        },
        "latency": chosen.to_json(),
        "latency_variant": variant,
        "latency_statistic": stat,
        "latency_models": {k: m.to_json() for k, m in models.items()},
        "memory": mem.to_json(),
        "structure": structure.to_json(),
        "samples": {"train": int(len(train)), "test": int(len(held))},
        "accuracy": acc,
        "fitted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
