"""``nnf demo``: build a supernet, draw random gates, extract the compact model, check it, save it."""

from __future__ import annotations

import argparse
import time

import torch

from host.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="build a supernet, draw gates, extract and check a compact subnet",
        description="Build a gated supernet, draw random hard gates at an activation ratio, extract the static "
                    "compact model, check that its output equals the gated supernet's, and save it.",
    )
    p.add_argument("--backbone", default="resnet18", help="supernet config name (see `nnf backbones`)")
    p.add_argument("--ratio", type=float, default=0.25, help="fraction of modules kept (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random gates and weights (default 0)")
    p.add_argument("--out", default=None, help="directory to save the compact model to (spec.json + model.safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    b = sub.add_parser("backbones", help="list the registered supernet configs",
                       description="List the registered supernet configs with their gate layouts.")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=run_backbones)


def run(args: argparse.Namespace) -> int:
    from host.artifact import save_compact
    from host.errors import ConfigError
    from host.extraction import extract
    from host.gates import random_gates
    from host.supernets import build_supernet

    if not 0.0 <= args.ratio <= 1.0:
        raise ConfigError(f"--ratio must be in [0, 1], got {args.ratio}")
    if args.out:
        from host.commands.options import check_out

        check_out(args.out, directory=True)
    torch.manual_seed(args.seed)
    net = build_supernet(args.backbone).eval()
    layout = net.gate_layout()
    gates = random_gates(layout, args.ratio, generator=torch.Generator().manual_seed(args.seed))
    t0 = time.perf_counter()
    compact = extract(net, gates, meta={"source": "nnf demo", "ratio": args.ratio, "seed": args.seed})
    extract_s = time.perf_counter() - t0
    x = torch.randn(2, *net.input_shape, generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.inference_mode():
        diff = (compact(x) - net(x, gates)).abs().max().item()
    full_params = sum(p.numel() for p in net.parameters())
    result = {
        **compact.spec.summary(),
        "supernet_params": full_params,
        "gated_layers": layout.num_layers,
        "total_modules": layout.total_modules,
        "max_abs_diff": diff,
        "exact": diff <= 1e-4,
        "extract_seconds": round(extract_s, 4),
        "out": str(save_compact(compact, args.out)) if args.out else None,
    }
    if args.json:
        print_json(result)
    else:
        print(f"supernet {args.backbone}: {layout.num_layers} gated layers, {layout.total_modules} modules, "
              f"{full_params:,} params")
        print(f"compact @ ratio {result['activation_ratio']:.3f}: {result['params']:,} params, "
              f"{result['macs'] / 1e6:.1f} M MACs, largest activation {result['peak_activation_bytes'] / 2**20:.2f} MiB")
        print(f"extracted in {extract_s * 1000:.1f} ms; max |compact - gated supernet| = {diff:.2e} "
              f"({'exact' if result['exact'] else 'NOT EXACT'})")
        if result["out"]:
            print(f"saved to {result['out']}")
    return 0 if result["exact"] else 1


def run_backbones(args: argparse.Namespace) -> int:
    from host.supernets import build_supernet, list_configs

    rows = []
    for name in list_configs():
        with torch.device("meta"):
            net = build_supernet(name)
        layout = net.gate_layout()
        rows.append({"name": name, "backbone": net.backbone, "input_shape": list(net.input_shape),
                     "gated_layers": layout.num_layers, "modules": layout.total_modules,
                     "params": sum(p.numel() for p in net.parameters())})
    if args.json:
        print_json({"backbones": rows})
    else:
        for r in rows:
            print(f"{r['name']:18s} {r['backbone']:12s} in={tuple(r['input_shape'])!s:14s} "
                  f"gated layers={r['gated_layers']:3d} modules={r['modules']:6d} params={r['params']:,}")
    return 0
