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
    import tempfile

    base = results_dir or Path(os.environ.get("NNF_BENCH_RESULTS", RESULTS_DIR))
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{name}.json"
    doc = {
        "benchmark": name,
        "command": "python benchmarks/" + Path(sys.argv[0]).name + "".join(f" {a}" for a in sys.argv[1:]),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "result": result,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=base)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def emit(result: dict, as_json: bool, *, name: str | None = None) -> None:
    """The benchmark contract: with --json the last line is one JSON object, and the result is also written
    to ``benchmarks/results/NAME.json`` (NAME: the script's name unless given), where ``nnf report`` reads it."""
    if as_json:
        save_result(name or Path(sys.argv[0]).stem, result)
        print(json.dumps(result, sort_keys=True))
