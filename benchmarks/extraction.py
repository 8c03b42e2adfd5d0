"""Extraction benchmark: exactness, size, MACs and CPU latency of 25 %-activation subnets.

    python benchmarks/extraction.py [--json] [--threads 1]

For each standard full-size backbone at 224x224 (ResNet-18, ResNet-50, MobileNetV2, ViT-S/16): the max abs
difference between the compact model and the gated supernet over random gates at several ratios (BN statistics
and biases randomised so the kept constants matter), the params/MACs ratio of the subnet extracted at a 25 %
activation ratio over the all-ones subnet, their median batch-1 CPU latency ratio (measured side by side,
interleaved, after warm-up) and the median extraction time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _util
import torch

from host.extraction import extract
from host.gates import random_gates
from host.supernets import build_supernet

BACKBONES = ["resnet18", "resnet50", "mobilenetv2", "vit_s16"]


def perturb(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Realistic trained-network statistics instead of the init's identity BNs."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            elif isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)


def bench(name: str, rounds: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    net = build_supernet(name).eval()
    perturb(net, gen)
    layout = net.gate_layout()
    x = torch.randn(1, *net.input_shape, generator=gen)
    diffs, scale = [], []
    with torch.inference_mode():
        for ratio in (0.1, 0.25, 0.5, 0.75):
            g = random_gates(layout, ratio, generator=gen, per_layer_jitter=0.25)
            ref = net(x, g)
            diffs.append((extract(net, g)(x) - ref).abs().max().item())
            scale.append(ref.abs().max().item())
    g25 = random_gates(layout, 0.25, generator=gen)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        sub = extract(net, g25)
        times.append(time.perf_counter() - t0)
    full = extract(net, layout.ones())
    with torch.inference_mode():
        diffs.append((sub(x) - net(x, g25)).abs().max().item())
        lat = _util.time_side_by_side({"full": lambda: full(x), "sub": lambda: sub(x)}, rounds=rounds)
    return {
        "max_abs_diff": max(diffs),
        "max_abs_output": max(scale),
        "params_ratio_at_25pct": sub.spec.params() / full.spec.params(),
        "macs_ratio_at_25pct": sub.spec.macs() / full.spec.macs(),
        "latency_ratio_at_25pct": lat["sub"] / lat["full"],
        "full_median_ms": lat["full"] * 1e3,
        "sub_median_ms": lat["sub"] * 1e3,
        "extract_seconds": statistics.median(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--backbones", nargs="*", default=BACKBONES)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    print(f"{'backbone':12s} {'max|diff|':>10s} {'params@25%':>10s} {'MACs@25%':>9s} {'lat@25%':>8s} "
          f"{'full ms':>8s} {'sub ms':>7s} {'extract s':>9s}")
    for name in args.backbones:
        r = bench(name, args.rounds)
        results[name] = r
        print(f"{name:12s} {r['max_abs_diff']:10.2e} {r['params_ratio_at_25pct']:10.3f} {r['macs_ratio_at_25pct']:9.3f} "
              f"{r['latency_ratio_at_25pct']:8.3f} {r['full_median_ms']:8.1f} {r['sub_median_ms']:7.1f} "
              f"{r['extract_seconds']:9.4f}", flush=True)
    _util.emit({"backbones": results, "threads": args.threads, "torch": torch.__version__}, args.json)


if __name__ == "__main__":
    main()
