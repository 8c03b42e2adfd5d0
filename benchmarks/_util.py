"""Small helpers shared by the benchmark scripts (timing side by side, the --json contract)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/NAME.py` from a checkout
    sys.path.insert(0, str(ROOT))


def time_side_by_side(fns: dict[str, Callable[[], object]], *, warmup: int = 3, rounds: int = 7,
                      runs_per_round: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, interleaving them round by round (drift hits all alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(runs_per_round):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def emit(result: dict, as_json: bool) -> None:
    """The benchmark contract: with --json the last line is one JSON object."""
    if as_json:
        print(json.dumps(result, sort_keys=True))
