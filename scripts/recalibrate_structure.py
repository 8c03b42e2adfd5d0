"""Recompute the ``structure`` block of a shipped device profile after an ungated change to a supernet.

    python scripts/recalibrate_structure.py dev-xeon-2c [--profiles-dir device_profiles]

A profile entry holds measured coefficients (latency, memory) and a ``structure`` block that is no
measurement at all: exact parameter bytes and peak activation bytes as functions of the active-module
counts, derived from the architecture (``host.profiling.predictor.StructureModel.calibrate``). When an ungated part
of a supernet changes while its gate layout stays the same (e.g. ``resnet_numvqa`` gained a 128-unit MLP
classifier head), the measured fit still applies to the gated layers but the structure block must follow
the new architecture. This rewrites only that block, for every entry whose layout fingerprint still
matches, and records when and why in the entry (``structure_recalibrated``). The file is replaced
atomically. An entry whose gate layout changed is refused: it needs a new campaign.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.errors import SpecError
from host.profiling.device_profile import atomic_write_json, read_profile
from host.profiling.predictor import StructureModel
from host.supernets import build_supernet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("device", help="device id (file device_profiles/<device>.json)")
    ap.add_argument("--profiles-dir", type=Path, default=Path(__file__).resolve().parents[1] / "device_profiles")
    ap.add_argument("--reason", default="ungated classifier head changed; gate layout unchanged")
    args = ap.parse_args()
    data = read_profile(args.device, args.profiles_dir)
    for key, entry in data["profiles"].items():
        net = build_supernet(entry["config"])
        layout = net.gate_layout()
        if entry.get("layout_fingerprint") != layout.fingerprint():
            raise SpecError(f"{key}: the gate layout changed; re-profile it (`nnf profile` + `nnf fit`)")
        new = StructureModel.calibrate(net).to_json()
        old = entry.get("structure", {})
        entry["structure"] = new
        entry["structure_recalibrated"] = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "reason": args.reason,
            "config": net.config_dict(),
        }
        full = new["param_coefficients"].get("bias", 0.0) - old.get("param_coefficients", {}).get("bias", 0.0)
        print(f"{key}: structure recalibrated (constant parameter bytes changed by {full:+.0f})")
    atomic_write_json(args.profiles_dir / f"{data['device_id']}.json", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
