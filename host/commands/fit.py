"""``nnf fit``: fit a device's latency and memory predictors from its campaign and write its profile.

    nnf fit --device local-cpu [--backbone resnet_numvqa] [--test 100] [--percentiles 50,90,99]

Writes ``<profiles dir>/<device>.json`` (default ``~/.local/share/nn-factory/device_profiles``; see
docs/cli.md; ``nnf generate --device`` finds it there, then among the profiles shipped with NN-Factory): one
latency model per percentile of each subnet's timed runs (a budget is held to one of them: ``nnf generate
--percentile``), the memory model, the calibrated safety margins (from the held-out subnets' errors: predicted
plus margin covers the measured value on 99 % of subnets), the reference subnets for drift checks, the sample
mix it was fitted on, and held-out accuracy figures for the paper's linear latency model and the improved one.
Warnings say what weakens the fit (a shrunk held-out set, too few subnets, an unfinished campaign).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.options import add_runtime_arg, agent_runtime
from host.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a device's predictors from its profiling campaign into its device profile",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", required=True, help="device name used with `nnf profile`")
    p.add_argument("--backbone", default=None, help="supernet config (needed when the device has several campaigns)")
    add_runtime_arg(p, help="runtime of the campaign (needed when the device has several campaigns)")
    p.add_argument("--store", default=None, help="campaign store path (default: found under --campaigns-dir)")
    p.add_argument("--campaigns-dir", default=None, help="where campaign stores live (default $NNF_CAMPAIGNS_DIR, else ~/.local/share/nn-factory/campaigns)")
    p.add_argument("--profiles-dir", default=None, help="where to write the profile (default $NNF_PROFILES_DIR, else ~/.local/share/nn-factory/device_profiles)")
    p.add_argument("--test", type=int, default=100, help="held-out subnets for the accuracy figures (default 100)")
    p.add_argument("--test-store", default=None,
                   help="a separate campaign (same --seed, e.g. --passes 3) whose subnets are the held-out set")
    p.add_argument("--train-limit", type=int, default=None, help="fit on only the first N training subnets")
    p.add_argument("--passes", type=int, default=None, help="use only the first N measurement passes")
    p.add_argument("--drift-correct", action="store_true", help="divide out the reference subnets' drift")
    p.add_argument("--variant", default="improved", choices=["linear", "improved"],
                   help="latency model used by searches (both are fitted and reported)")
    p.add_argument("--percentiles", default="50,90,99", metavar="P,...",
                   help="percentiles of each subnet's timed runs to fit a latency model for (default 50,90,99; "
                        "budgets are held to one of them, p90 by default)")
    p.add_argument("--coverage", type=float, default=0.99,
                   help="share of held-out subnets the safety margin must cover (default 0.99)")
    p.add_argument("--name", default=None,
                   help="device id to write the profile under (default: --device), e.g. a name for the hardware")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def find_store(device: str, backbone: str | None, runtime: str | None, root: Path) -> Path:
    from host.profiling.device_profile import safe_device_id

    d = root / safe_device_id(device)
    stores = sorted(d.glob("*.sqlite")) if d.is_dir() else []
    if backbone:
        stores = [s for s in stores if s.stem.rsplit("-", 1)[0] == backbone]
    if runtime:
        stores = [s for s in stores if s.stem.rsplit("-", 1)[-1] == runtime]
    if not stores:
        raise ConfigError(
            f"no campaign for device {device!r}"
            + (f" and backbone {backbone!r}" if backbone else "")
            + f" under {root}; run `nnf profile --device {device} --agent HOST:PORT --backbone B` first "
            "(or pass --store / --campaigns-dir)"
        )
    if len(stores) > 1:
        raise ConfigError(f"device {device!r} has several campaigns ({', '.join(s.stem for s in stores)}): "
                          "pass --backbone and/or --runtime")
    return stores[0]


def run(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from host.cli import print_json
    from host.commands.profile import default_campaigns_dir
    from host.profiling.data import percentile_name
    from host.profiling.device_profile import fit_store, safe_device_id, write_profile_entry
    from host.profiling.store import CampaignStore

    device = safe_device_id(args.device)
    percentiles = [percentile_name(p.strip()) for p in args.percentiles.split(",") if p.strip()]
    root = Path(args.campaigns_dir) if args.campaigns_dir else default_campaigns_dir()
    path = Path(args.store) if args.store else find_store(device, args.backbone, agent_runtime(args.runtime), root)
    if not path.exists():
        raise ConfigError(f"campaign store {path} does not exist")
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(CampaignStore(path))
        test_store = None
        if args.test_store:
            if not Path(args.test_store).exists():
                raise ConfigError(f"test campaign store {args.test_store} does not exist")
            test_store = stack.enter_context(CampaignStore(args.test_store))
        entry = fit_store(store, test=args.test, test_store=test_store, correct_drift=args.drift_correct,
                          passes=args.passes, train_limit=args.train_limit, variant=args.variant,
                          percentiles=percentiles, coverage=args.coverage)
        info = store.get_meta("device_info") or {}
    name = safe_device_id(args.name) if args.name else device
    out_path = write_profile_entry(name, info, entry, Path(args.profiles_dir) if args.profiles_dir else None)
    for w in entry["warnings"]:
        print(f"nnf fit: warning: {w}", file=sys.stderr)
    hints = _hints(name, entry, args)
    if args.json:
        print_json({"device": name, "profile": str(out_path), "config": entry["config"], "runtime": entry["runtime"],
                    "samples": entry["samples"], "fit_mix": entry["fit_mix"], "accuracy": entry["accuracy"],
                    "percentiles": {p: {"accuracy": b["accuracy"], "margin": b["margin"]}
                                    for p, b in entry["percentiles"].items()},
                    "memory_margin": entry["memory_margin"], "campaign": entry["campaign"],
                    "warnings": entry["warnings"], "next": hints})
        return 0
    mix = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
    print(f"device {name}: {entry['config']}/{entry['runtime']} fitted on {entry['samples']['train']} subnets "
          f"({mix(entry['fit_mix']['train'])}), tested on {entry['samples']['test']} held-out subnets "
          f"({mix(entry['fit_mix']['test'])})")
    for pct, block in entry["percentiles"].items():
        tag = " (default)" if pct == entry["default_percentile"] else ""
        print(f"  {pct} latency{tag}")
        for variant, a in block["accuracy"].items():
            used = " (used)" if variant == block["variant"] else ""
            gen = a["by_source"].get("generated")
            gen_txt = f"   generated models ±10%: {100 * gen['within_10pct']:5.1f} %" if gen else ""
            print(f"    {variant:9s} within ±10%: {100 * a['within_10pct']:5.1f} %   within ±5%: "
                  f"{100 * a['within_5pct']:5.1f} %   MAPE {100 * a['mape']:.2f} %{gen_txt}{used}")
        m = block["margin"]
        print(f"    margin    +{100 * m['value']:.1f} %  (predicted + margin covers {100 * m['coverage']:.0f} % of "
              f"subnets; from {m['n']} held out{'' if m['guaranteed'] else ', too few for that guarantee'})")
    m = entry["accuracy"]["memory"]
    mm = entry["memory_margin"]
    print(f"  memory            within ±5%:  {100 * m['within_5pct']:5.1f} %   MAPE {100 * m['mape']:.2f} %   "
          f"margin +{100 * mm['value']:.1f} %")
    print(f"  wrote {out_path}")
    for hint in hints:
        print(f"next: {hint}")
    return 0


def _hints(name: str, entry: dict, args: argparse.Namespace) -> list[str]:
    import shlex

    pct = entry["default_percentile"][1:]
    gen = ["nnf", "generate", "--task", "TASK", "--out", "OUT", "--device", name, "--latency-ms", "MS",
           "--percentile", pct]
    from host.profiling.build import format_for_runtime

    runtime = format_for_runtime(entry["runtime"]).name
    if runtime != "torchscript":
        gen += ["--format", runtime]
    if args.profiles_dir:
        gen += ["--profiles-dir", args.profiles_dir]
    check = ["nnf", "devices", "fingerprint", name, "--backbone", entry["config"], "--runtime", runtime]
    if args.profiles_dir:
        check += ["--profiles-dir", args.profiles_dir]
    return [shlex.join(gen), shlex.join(check) + " [--agent HOST:PORT]"]
