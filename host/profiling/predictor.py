"""Per-layer latency and memory predictors fitted on profiling-campaign data (docs/design.md §6).

A subnet is described by its *active counts* ``c_l`` (active modules of gated layer ``l``); the latency
model is

    latency_us = bias + Σ_l f_l(c_l, c_j for j in inputs_from(l))

with every ``f_l`` linear in a small set of features, fitted by non-negative least squares
(``scipy.optimize.nnls``): every feature is a cost that can only add time, so coefficients are kept
``>= 0``, which also keeps extrapolation to unseen corners of the gate space sane.

Two feature sets (:class:`LatencySchema`):

``linear`` (the paper's form, the baseline)
    ``[1, c_1, …, c_L]``, plain (absolute-error) least squares.
``improved``
    adds what moves latency on real CPUs besides the module count:
    * ``c_l·c_j`` for each gated input ``j`` of ``l`` (a Bottleneck's conv2 costs ``c_conv1 × c_conv2``);
    * ``[c_l > 0]``: a layer whose modules are all off is removed with its ops, which also removes the
      fixed per-op overhead (dispatch, memory passes) that is a large share of a small model's time;
    * ``ceil(c_l / simd)·simd`` (channel padding to the SIMD width, ``simd = 16`` floats for AVX-512);
    and fits *relative* error (rows weighted by ``1/latency``), which is what the ±10 % metric scores.

The memory model is ``memory_bytes = bias + a·param_bytes + b·peak_activation_bytes`` (docs/design.md §6:
static weights + the largest intermediate feature map + a fitted constant; the scales absorb allocator
and runtime overheads, the plain sum is low by 1.2–1.7×: docs/design.md, "Measured on this machine"), also fitted by NNLS.

Everything here is plain numpy: prediction is vectorised over a batch of candidates so a search can
score all candidate limits in one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from host.errors import ConfigError, SpecError
from host.gates import GateLayout

LATENCY_VARIANTS = ("linear", "improved")


# ---- features -----------------------------------------------------------------------------------


def active_counts(layout: GateLayout, gates: Sequence) -> np.ndarray:
    """Active counts per gated layer: ``(L,)`` for one gate vector, ``(B, L)`` for batched gates.

    ``gates`` is a per-layer list of ``(D_l,)`` / ``(B, D_l)`` hard gates (torch tensors or numpy arrays).
    """
    if len(gates) != layout.num_layers:
        raise ConfigError(f"expected {layout.num_layers} gate tensors for {layout.backbone}/{layout.config}, got {len(gates)}")
    cols = []
    for layer, g in zip(layout.layers, gates, strict=True):
        arr = g.detach().cpu().numpy() if hasattr(g, "detach") else np.asarray(g)
        if arr.shape[-1] != layer.modules:
            raise ConfigError(f"gates for {layer.name!r} have {arr.shape[-1]} entries, layout says {layer.modules}")
        cols.append((arr > 0.5).sum(axis=-1))
    return np.stack(cols, axis=-1).astype(np.float64)


@dataclass(frozen=True)
class LatencySchema:
    """Which features the latency model uses; stored in a device profile so it can be rebuilt exactly."""

    variant: str = "improved"
    interactions: bool = True
    nonzero: bool = True
    simd: int = 16
    relative: bool = True
    pair_indicators: bool = False  # [c_l>0]·[c_j>0], c_l·[c_j>0], [c_l>0]·c_j for gated inputs j of l

    @classmethod
    def named(cls, variant: str) -> LatencySchema:
        if variant == "linear":
            return cls(variant="linear", interactions=False, nonzero=False, simd=0, relative=False)
        if variant == "improved":
            return cls(variant="improved")
        raise ConfigError(f"unknown latency predictor variant {variant!r}; choose one of {', '.join(LATENCY_VARIANTS)}")

    def to_json(self) -> dict:
        return {
            "variant": self.variant,
            "interactions": self.interactions,
            "nonzero": self.nonzero,
            "simd": self.simd,
            "relative": self.relative,
            "pair_indicators": self.pair_indicators,
        }

    @classmethod
    def from_json(cls, data: dict) -> LatencySchema:
        try:
            return cls(
                variant=str(data["variant"]),
                interactions=bool(data["interactions"]),
                nonzero=bool(data["nonzero"]),
                simd=int(data["simd"]),
                relative=bool(data["relative"]),
                pair_indicators=bool(data.get("pair_indicators", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"latency feature schema is malformed ({exc}); re-run `nnf fit`") from exc

    def feature_names(self, layout: GateLayout) -> list[str]:
        names = ["bias"] + [f"count:{x.name}" for x in layout.layers]
        if self.interactions:
            for layer in layout.layers:
                names += [f"count:{layer.name}*count:{src}" for src in layer.inputs_from]
        if self.nonzero:
            names += [f"nonzero:{x.name}" for x in layout.layers]
        if self.simd > 0:
            names += [f"pad{self.simd}:{x.name}" for x in self._padded(layout)]
        if self.pair_indicators:
            for layer in layout.layers:
                for src in layer.inputs_from:
                    names += [f"nonzero:{layer.name}*nonzero:{src}", f"count:{layer.name}*nonzero:{src}",
                              f"nonzero:{layer.name}*count:{src}"]
        return names

    def _padded(self, layout: GateLayout) -> list:
        # A layer no wider than the SIMD width pads to 0 or simd: the same as its nonzero indicator.
        return [x for x in layout.layers if x.modules > self.simd]

    def features(self, layout: GateLayout, counts: np.ndarray) -> np.ndarray:
        """Design matrix ``(B, F)`` for active counts ``(B, L)`` (or ``(L,)`` -> ``(1, F)``)."""
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        if c.shape[1] != layout.num_layers:
            raise ConfigError(f"counts have {c.shape[1]} layers, layout {layout.config} has {layout.num_layers}")
        cols = [np.ones((c.shape[0], 1)), c]
        if self.interactions:
            inter = []
            for i, layer in enumerate(layout.layers):
                for src in layer.inputs_from:
                    inter.append(c[:, i] * c[:, layout.index(src)])
            if inter:
                cols.append(np.stack(inter, axis=1))
        if self.nonzero:
            cols.append((c > 0).astype(np.float64))
        if self.simd > 0:
            idx = [i for i, x in enumerate(layout.layers) if x.modules > self.simd]
            if idx:
                cols.append(np.ceil(c[:, idx] / self.simd) * self.simd)
        if self.pair_indicators:
            nz = (c > 0).astype(np.float64)
            pairs = []
            for i, layer in enumerate(layout.layers):
                for src in layer.inputs_from:
                    j = layout.index(src)
                    pairs += [nz[:, i] * nz[:, j], c[:, i] * nz[:, j], nz[:, i] * c[:, j]]
            if pairs:
                cols.append(np.stack(pairs, axis=1))
        return np.concatenate(cols, axis=1)


def _nnls_scaled(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NNLS with column scaling for conditioning; returns coefficients in the original units."""
    from scipy.optimize import nnls

    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(x / scale, y, maxiter=50 * x.shape[1] + 500)
    return coef / scale


# ---- latency ------------------------------------------------------------------------------------


@dataclass
class LatencyModel:
    """Fitted per-layer latency model: ``latency_us = features(counts) @ coef``."""

    layout: GateLayout
    schema: LatencySchema = field(default_factory=LatencySchema)
    coef: np.ndarray | None = None

    def fit(self, counts: np.ndarray, latency_us: np.ndarray) -> LatencyModel:
        x = self.schema.features(self.layout, counts)
        y = np.asarray(latency_us, dtype=np.float64).reshape(-1)
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"{x.shape[0]} count rows but {y.shape[0]} latencies")
        if x.shape[0] < 2:
            raise ConfigError("need at least 2 measured subnets to fit a latency model")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ConfigError("latencies must be finite and > 0")
        if self.schema.relative:
            w = 1.0 / y
            self.coef = _nnls_scaled(x * w[:, None], np.ones_like(y))
        else:
            self.coef = _nnls_scaled(x, y)
        return self

    def predict(self, counts: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ConfigError("latency model is not fitted")
        return self.schema.features(self.layout, counts) @ self.coef

    def coefficients(self) -> dict[str, float]:
        if self.coef is None:
            raise ConfigError("latency model is not fitted")
        return dict(zip(self.schema.feature_names(self.layout), (float(v) for v in self.coef), strict=True))

    def to_json(self) -> dict:
        return {"schema": self.schema.to_json(), "coefficients": self.coefficients()}

    @classmethod
    def from_json(cls, layout: GateLayout, data: dict) -> LatencyModel:
        schema = LatencySchema.from_json(data["schema"])
        names = schema.feature_names(layout)
        coefs = data["coefficients"]
        if set(coefs) != set(names):
            missing = sorted(set(names) - set(coefs))[:3]
            raise SpecError(
                f"latency coefficients do not match the gate layout {layout.config} (missing e.g. {missing}); "
                "the profile was fitted for another supernet: re-run `nnf fit`"
            )
        return cls(layout=layout, schema=schema, coef=np.array([float(coefs[n]) for n in names]))


# ---- memory -------------------------------------------------------------------------------------

MEMORY_FEATURES = ("bias", "param_bytes", "peak_activation_bytes", "active_layers")


@dataclass
class MemoryModel:
    """``memory = bias + a·param_bytes + b·peak_activation_bytes + d·active_layers`` fitted by NNLS (relative error).

    ``active_layers`` (gated layers with at least one module on) carries the runtime's per-op overhead: a
    block whose gated layer is empty loses its ops and their workspaces along with its weights.
    ``active_layers=False`` fits the plain form of docs/design.md §6 (bias + parameters + activation), the baseline.
    Profiles written before the term existed load with ``d = 0``.
    """

    coef: np.ndarray | None = None
    active_layers: bool = True

    @staticmethod
    def features(param_bytes: np.ndarray, peak_activation_bytes: np.ndarray,
                 active_layers: np.ndarray | None = None) -> np.ndarray:
        p = np.asarray(param_bytes, dtype=np.float64).reshape(-1)
        a = np.asarray(peak_activation_bytes, dtype=np.float64).reshape(-1)
        n = np.zeros_like(p) if active_layers is None else np.asarray(active_layers, dtype=np.float64).reshape(-1)
        return np.stack([np.ones_like(p), p, a, n], axis=1)

    def fit(self, param_bytes: np.ndarray, peak_activation_bytes: np.ndarray, memory_bytes: np.ndarray,
            active_layers: np.ndarray | None = None) -> MemoryModel:
        x = self.features(param_bytes, peak_activation_bytes, active_layers if self.active_layers else None)
        y = np.asarray(memory_bytes, dtype=np.float64).reshape(-1)
        if x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ConfigError("need at least 2 subnets with measured memory, one value per subnet")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ConfigError("measured memory must be finite and > 0")
        w = 1.0 / y
        cols = slice(None) if self.active_layers else slice(0, 3)
        coef = np.zeros(4)
        coef[cols] = _nnls_scaled(x[:, cols] * w[:, None], np.ones_like(y))
        self.coef = coef
        return self

    def predict(self, param_bytes: np.ndarray, peak_activation_bytes: np.ndarray,
                active_layers: np.ndarray | None = None) -> np.ndarray:
        if self.coef is None:
            raise ConfigError("memory model is not fitted")
        return self.features(param_bytes, peak_activation_bytes, active_layers) @ self.coef

    def to_json(self) -> dict:
        if self.coef is None:
            raise ConfigError("memory model is not fitted")
        return {"coefficients": dict(zip(MEMORY_FEATURES, (float(v) for v in self.coef), strict=True))}

    @classmethod
    def from_json(cls, data: dict) -> MemoryModel:
        try:
            c = data["coefficients"]
            return cls(coef=np.array([float(c[n]) if n in c or n != "active_layers" else 0.0 for n in MEMORY_FEATURES]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"memory coefficients are malformed ({exc}); re-run `nnf fit`") from exc


def active_layers(counts: np.ndarray) -> np.ndarray:
    """Number of gated layers with at least one active module, per row of ``counts`` (B, L)."""
    return (np.atleast_2d(np.asarray(counts)) > 0).sum(axis=1).astype(np.float64)


# ---- evaluation ---------------------------------------------------------------------------------


def accuracy(pred: np.ndarray, true: np.ndarray, tolerance: float) -> dict[str, float]:
    """Share of predictions within ``±tolerance`` (relative) of the truth, and the MAPE (fraction)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.size == 0 or p.shape != t.shape:
        raise ConfigError("accuracy needs the same non-zero number of predictions and measurements")
    rel = np.abs(p - t) / t
    return {"within": float(np.mean(rel <= tolerance)), "mape": float(np.mean(rel)), "n": int(p.size)}


def median_of_passes(values_by_pass: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise median across passes (NaN = missing in that pass)."""
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in values_by_pass])
    return np.nanmedian(stack, axis=0)


def round_sig(x: float, digits: int = 6) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - int(math.floor(math.log10(abs(x)))) - 1)


# ---- structure: exact parameter bytes and peak activation from active counts ---------------------

STRUCTURE_SCHEMA = LatencySchema(
    variant="structure", interactions=True, nonzero=True, simd=0, relative=False, pair_indicators=True
)


def _spec_for_counts(net, counts: Sequence[int]):
    """A CompactSpec with the first ``c_l`` modules kept (costs depend only on the counts)."""
    from host.compact import CompactSpec

    layout = net.gate_layout()
    return CompactSpec(
        backbone=net.backbone,
        config_name=net.config_name,
        config=net.config_dict(),
        kept={x.name: list(range(int(c))) for x, c in zip(layout.layers, counts, strict=True)},
        layer_modules={x.name: x.modules for x in layout.layers},
        layout_fingerprint=layout.fingerprint(),
    )


def _leaf_output_numels(spec) -> tuple[int, list[int]]:
    import torch

    net = spec.build("meta").eval()
    sizes: list[int] = []

    def hook(_m, _i, out) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(int(out.numel()))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(torch.empty(1, *spec.input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return int(np.prod(spec.input_shape)), sizes


@dataclass
class StructureModel:
    """Exact, vectorised ``param_bytes(c)`` and ``peak_activation_bytes(c)`` for a supernet's layout.

    A search scores ~100 candidates per request; building each compact spec to read its costs takes
    ~50 ms, so the costs are modelled from the counts instead, exactly:

    * parameter bytes are a polynomial in the counts: ``Σ_l a_l·c_l`` (filters), ``c_l·c_j`` where a gated
      layer reads another (a Bottleneck's conv2), ``[c_l > 0]`` (a block whose gated layer is empty loses
      its BN and gains a constant), plus a constant: least squares over calibration specs recovers it;
    * the peak activation (largest single intermediate tensor, as ``CompactSpec`` defines it) is
      ``max(K, max_l A_l·c_l)``: every layer output either has a fixed size or is ``c_l`` channels of a
      fixed map. ``A_l`` and ``K`` are read off per-layer probes.

    :meth:`calibrate` checks both against real specs and records the largest relative error.
    """

    layout: GateLayout
    param_coef: np.ndarray
    peak_const_bytes: float
    peak_bytes_per_module: np.ndarray
    max_rel_error: float = 0.0

    @classmethod
    def calibrate(cls, net, *, seed: int = 0, extra: int = 8) -> StructureModel:
        from host.compact import BYTES_PER_FLOAT

        layout = net.gate_layout()
        full = layout.module_counts
        inp, base = _leaf_output_numels(_spec_for_counts(net, full))
        per_module = np.zeros(layout.num_layers)
        changed = np.zeros(len(base), dtype=bool)
        for i, d in enumerate(full):
            probe = list(full)
            probe[i] = d - 1
            _, sizes = _leaf_output_numels(_spec_for_counts(net, probe))
            if len(sizes) != len(base):
                raise SpecError(f"probing {layout.layers[i].name} changed the network's structure; cannot model it")
            diff = np.array(base) != np.array(sizes)
            changed |= diff
            if diff.any():
                per_module[i] = max(b / d for b, f in zip(base, diff, strict=True) if f)
        const = max([inp] + [b for b, f in zip(base, changed, strict=True) if not f])
        # parameter polynomial: random counts, a share of them zero, plus the corners
        rng = np.random.default_rng(seed)
        n_feat = len(STRUCTURE_SCHEMA.feature_names(layout))
        rows = [list(full), [0] * layout.num_layers, [1] * layout.num_layers]
        while len(rows) < n_feat + extra:
            c = [int(rng.integers(0, d + 1)) if rng.random() > 0.2 else 0 for d in full]
            rows.append(c)
        counts = np.array(rows, dtype=np.float64)
        specs = [_spec_for_counts(net, r) for r in rows]
        pbytes = np.array([s.param_bytes() for s in specs], dtype=np.float64)
        peaks = np.array([s.peak_activation_bytes() for s in specs], dtype=np.float64)
        x = STRUCTURE_SCHEMA.features(layout, counts)
        coef, *_ = np.linalg.lstsq(x, pbytes, rcond=None)
        model = cls(layout, coef, float(const * BYTES_PER_FLOAT), per_module * BYTES_PER_FLOAT)
        err_p = np.abs(model.param_bytes(counts) - pbytes) / pbytes
        err_a = np.abs(model.peak_activation_bytes(counts) - peaks) / peaks
        model.max_rel_error = float(max(err_p.max(), err_a.max()))
        return model

    def param_bytes(self, counts: np.ndarray) -> np.ndarray:
        return STRUCTURE_SCHEMA.features(self.layout, counts) @ self.param_coef

    def peak_activation_bytes(self, counts: np.ndarray) -> np.ndarray:
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        return np.maximum(self.peak_const_bytes, (c * self.peak_bytes_per_module).max(axis=1))

    def to_json(self) -> dict:
        return {
            "param_coefficients": dict(zip(STRUCTURE_SCHEMA.feature_names(self.layout), map(float, self.param_coef), strict=True)),
            "peak_const_bytes": self.peak_const_bytes,
            "peak_bytes_per_module": {x.name: float(v) for x, v in zip(self.layout.layers, self.peak_bytes_per_module, strict=True)},
            "max_rel_error": self.max_rel_error,
        }

    @classmethod
    def from_json(cls, layout: GateLayout, data: dict) -> StructureModel:
        try:
            names = STRUCTURE_SCHEMA.feature_names(layout)
            coef = np.array([float(data["param_coefficients"][n]) for n in names])
            per = np.array([float(data["peak_bytes_per_module"][x.name]) for x in layout.layers])
            return cls(layout, coef, float(data["peak_const_bytes"]), per, float(data.get("max_rel_error", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"structure model does not match gate layout {layout.config} ({exc}); re-run `nnf fit`") from exc
