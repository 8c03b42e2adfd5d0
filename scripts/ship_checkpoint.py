"""Copy the best checkpoint of a training run into the package (no optimizer state): what ``nnf generate`` uses.

    python scripts/ship_checkpoint.py runs/numvqa_main host/checkpoints/numvqa_resnet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.checkpoint import export_slim


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="run directory (its best checkpoint) or checkpoint directory")
    ap.add_argument("dest", type=Path, help="destination checkpoint directory")
    ap.add_argument("--note", default="", help="free text stored in checkpoint.json")
    args = ap.parse_args()
    path = export_slim(args.source, args.dest, note=args.note)
    size = sum(p.stat().st_size for p in path.iterdir())
    print(f"wrote {path} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
