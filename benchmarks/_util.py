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


RESULTS_DIR = ROOT / "benchmarks" / "results"


def save_result(name: str, result: dict, *, results_dir: Path | None = None) -> Path:
    """Write ``results_dir/NAME.json`` (default ``benchmarks/results/``; ``$NNF_BENCH_RESULTS`` overrides) atomically.

    The file wraps the result with the command line that produced it and when, so ``nnf report`` can say how
    every figure was made: ``{"benchmark", "command", "written_at", "result"}``.
    """
    import os

    from host.fileio import write_json_atomic

    base = results_dir or Path(os.environ.get("NNF_BENCH_RESULTS", RESULTS_DIR))
    doc = {
        "benchmark": name,
        "command": "python benchmarks/" + Path(sys.argv[0]).name + "".join(f" {a}" for a in sys.argv[1:]),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "result": result,
    }
    path = write_json_atomic(base / f"{name}.json", doc, indent=1)
    return path


def emit(result: dict, as_json: bool, *, name: str | None = None) -> None:
    """The benchmark contract: with --json the last line is one JSON object, and the result is also written
    to ``benchmarks/results/NAME.json`` (NAME: the script's name unless given), where ``nnf report`` reads it."""
    if as_json:
        save_result(name or Path(sys.argv[0]).stem, result)
        print(json.dumps(result, sort_keys=True))
