"""What the report reads: benchmark result files, shipped checkpoints and device profiles.

Every benchmark writes its result to ``benchmarks/results/NAME.json`` as
``{"benchmark", "command", "written_at", "result"}`` (``benchmarks/_util.save_result``). :data:`RESULTS` names
the files the report uses and the command that (re)makes each, so a missing one is shown as missing with
that command — never replaced by typed-in numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ResultSpec:
    name: str  # file stem under the results directory
    what: str  # what it holds, for the page
    command: str  # the command that writes it (from the repository root)


RESULTS: dict[str, ResultSpec] = {
    spec.name: spec
    for spec in (
        ResultSpec("numvqa_accuracy", "NumVQA accuracy and activation ratio of generated models per limit "
                   "(seen and unseen tasks, MNIST test split)",
                   "python benchmarks/numvqa_accuracy.py --threads 2 --json"),
        ResultSpec("attrod_accuracy", "AttrOD mAP@0.5 of generated detectors per limit",
                   "python benchmarks/attrod_accuracy.py --json  (with a trained AttrOD generator: shipped, or "
                   "`nnf train --space attrod --out DIR` and --checkpoint DIR)"),
        ResultSpec("baselines", "NN-Factory vs. Retrain vs. Prune&Tune under device budgets, customization cost",
                   "python benchmarks/baselines.py --phase train && /work/team/bin/quiet python benchmarks/baselines.py "
                   "--phase measure --json"),
        ResultSpec("predictor_accuracy", "latency/memory predictor accuracy vs. number of profiled subnets",
                   "nnf profile --device D --agent HOST:PORT --backbone resnet_numvqa --samples 1000 && "
                   "python benchmarks/predictor_accuracy.py --store STORE --test-store TEST_STORE --no-measure "
                   "--sizes 100,300,1000 --json"),
    )
}


@dataclass
class ResultFile:
    spec: ResultSpec
    path: Path
    data: dict[str, Any] | None  # the "result" object (None when missing or unreadable)
    command: str | None = None  # the command recorded in the file
    written_at: str | None = None
    sha256: str | None = None
    problem: str | None = None  # why it could not be used

    @property
    def present(self) -> bool:
        return self.data is not None


def read_result(results_dir: Path, spec: ResultSpec) -> ResultFile:
    path = Path(results_dir) / f"{spec.name}.json"
    if not path.is_file():
        return ResultFile(spec, path, None, problem="missing")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return ResultFile(spec, path, None, problem=f"unreadable ({exc})")
    if not isinstance(doc, dict):
        return ResultFile(spec, path, None, problem="not a JSON object")
    if isinstance(doc.get("result"), dict):  # the save_result wrapper
        data, command, written = doc["result"], doc.get("command"), doc.get("written_at")
    else:  # a bare result object (older files)
        data, command, written = doc, doc.get("command"), doc.get("written_at")
    return ResultFile(spec, path, data, command=command, written_at=written,
                      sha256=hashlib.sha256(raw).hexdigest())


def default_results_dir() -> Path:
    """``benchmarks/results`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def shipped_checkpoints() -> list[Path]:
    from host.checkpoint import SHIPPED_DIR

    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p for p in SHIPPED_DIR.iterdir() if (p / "checkpoint.json").is_file())
