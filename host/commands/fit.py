"""``nnf fit``: fit a device's latency and memory predictors from its campaign and write its profile.

    nnf fit --device local-cpu [--backbone resnet_numvqa] [--test 100] [--drift-correct]

Writes ``<profiles dir>/<device>.json`` (default ``~/.local/share/nn-factory/device_profiles``; see
docs/cli.md) with held-out accuracy figures for the paper's linear latency model and the improved one, and
for the memory model. ``nnf generate --device`` finds it there (then among the profiles shipped with NN-Factory).
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
    p.add_argument("--stat", default="p10", choices=["median", "min", "p10", "p25", "mean"],
                   help="statistic of each subnet's timed runs taken as its latency (default p10: robust to "
                        "other work preempting the measurement; median for an otherwise idle device)")
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
    from host.cli import print_json
    from host.commands.profile import default_campaigns_dir
    from host.profiling.device_profile import fit_store, safe_device_id, write_profile_entry
    from host.profiling.store import CampaignStore

    device = safe_device_id(args.device)
    root = Path(args.campaigns_dir) if args.campaigns_dir else default_campaigns_dir()
    path = Path(args.store) if args.store else find_store(device, args.backbone, agent_runtime(args.runtime), root)
    if not path.exists():
        raise ConfigError(f"campaign store {path} does not exist")
    import contextlib

    with contextlib.ExitStack() as stack:
        store = stack.enter_context(CampaignStore(path))
        test_store = None
        if args.test_store:
            if not Path(args.test_store).exists():
                raise ConfigError(f"test campaign store {args.test_store} does not exist")
            test_store = stack.enter_context(CampaignStore(args.test_store))
        entry = fit_store(store, test=args.test, test_store=test_store, correct_drift=args.drift_correct,
                          passes=args.passes, train_limit=args.train_limit, variant=args.variant, stat=args.stat)
        info = store.get_meta("device_info") or {}
    name = safe_device_id(args.name) if args.name else device
    out_path = write_profile_entry(name, info, entry, Path(args.profiles_dir) if args.profiles_dir else None)
    acc = entry["accuracy"]
    if args.json:
        print_json({"device": name, "profile": str(out_path), "config": entry["config"], "runtime": entry["runtime"],
                    "samples": entry["samples"], "accuracy": acc, "campaign": entry["campaign"]})
        return 0
    print(f"device {device}: {entry['config']}/{entry['runtime']} fitted on {entry['samples']['train']} subnets, "
          f"tested on {entry['samples']['test']} held-out subnets (latency = {args.stat} of each subnet's runs)")
    for variant, a in acc["latency"].items():
        tag = " (used)" if variant == entry["latency_variant"] else ""
        print(f"  latency {variant:9s} within ±10%: {100 * a['within_10pct']:5.1f} %   within ±5%: "
              f"{100 * a['within_5pct']:5.1f} %   MAPE {100 * a['mape']:.2f} %{tag}")
    m = acc["memory"]
    print(f"  memory            within ±5%:  {100 * m['within_5pct']:5.1f} %   MAPE {100 * m['mape']:.2f} %")
    print(f"  wrote {out_path}")
    return 0
