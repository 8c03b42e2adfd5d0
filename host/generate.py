"""Model generation from a trained checkpoint: ``<task, activation_limit>`` → compact model, no training.

:class:`ModelFactory` loads a checkpoint (the one shipped in the package by default), runs the
assembler for a request (or a batch of requests), extracts the static compact model for the hard
gates (:func:`host.extraction.extract`) and saves it (:func:`host.artifact.save_compact`).
:func:`evaluate_generated` measures what the generated models answer on a task space's test split:
one compact model per (task, limit), each evaluated on its own task's questions.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from host.assembler import GateResult, check_limits
from host.checkpoint import read_checkpoint, shipped_checkpoint
from host.errors import ConfigError, GenerationWarning
from host.models import Models, load_models
from host.tasks import Task, TaskSpace, get_family, load_space


@dataclass
class ModelFactory:
    """A loaded generator: task space, supernet and assembler from one checkpoint."""

    models: Models
    checkpoint: Path
    meta: dict

    @classmethod
    def load(cls, space: str | None = None, checkpoint: Path | None = None, backbone: str | None = None) -> ModelFactory:
        """Load ``checkpoint`` (default: the one shipped for ``space``), checking it fits ``space``."""
        space_obj = load_space(space) if space is not None else None
        if checkpoint is None:
            if space_obj is None:
                raise ConfigError("give a task space (--space) or a checkpoint (--checkpoint)")
            checkpoint = shipped_checkpoint(space_obj.name)
        ckpt = read_checkpoint(Path(checkpoint))
        models = load_models(ckpt, space_obj, backbone)
        models.supernet.eval()
        models.assembler.eval()
        return cls(models=models, checkpoint=ckpt.path, meta=ckpt.meta)

    @property
    def space(self) -> TaskSpace:
        return self.models.space

    def gates(self, tasks: Sequence[Task | str], limits: Sequence[float] | torch.Tensor) -> GateResult:
        """Hard gates for a batch of requests (one forward of the assembler)."""
        resolved = [self.space.task(t) if isinstance(t, str) else t for t in tasks]
        lim = torch.as_tensor(limits, dtype=torch.float64).reshape(-1)
        if lim.shape[0] != len(resolved):
            raise ConfigError(f"{len(resolved)} tasks but {lim.shape[0]} limits")
        check_limits(lim)
        return self.models.assembler.generate(self.space.encode(resolved), lim)

    def generate(self, task: str | Task, limit: float, out_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
        """Generate (and save, if ``out_dir``) the compact model for one request. Returns (model, summary)."""
        from host.artifact import save_compact
        from host.extraction import extract

        t0 = time.perf_counter()
        task_obj = self.space.task(task) if isinstance(task, str) else task
        limit = _check_limit(limit)
        res = self.gates([task_obj], [limit])
        t_gates = time.perf_counter()
        meta = {
            "task": task_obj.name,
            "attributes": list(task_obj.attributes),
            "task_split": task_obj.split,
            "space": self.space.name,
            "activation_limit": limit,
            "checkpoint": str(self.checkpoint),
            "checkpoint_step": self.meta.get("train_state", {}).get("step"),
            "input": getattr(get_family(self.space.family), "io_description",
                             "grayscale (1, H, W) float in [0, 1] (pixel / 255); output logits [no, yes]"),
        }
        notes = self.quality_warnings(limit, res)
        for note in notes:
            warnings.warn(note, GenerationWarning, stacklevel=2)
        compact = extract(self.models.supernet, res.request(0), meta=meta)
        t_extract = time.perf_counter()
        if out_dir is not None:
            save_compact(compact, out_dir, meta=meta)
        t_end = time.perf_counter()
        spec = compact.spec
        summary = {
            "task": task_obj.name,
            "attributes": list(task_obj.attributes),
            "task_split": task_obj.split,
            "space": self.space.name,
            "activation_limit": limit,
            "activation_ratio": round(float(res.ratios[0]), 6),
            "trimmed_modules": int(res.trimmed[0]),
            "params": spec.params(),
            "macs": spec.macs(),
            "param_bytes": spec.param_bytes(),
            "peak_activation_bytes": spec.peak_activation_bytes(),
            "seconds": round(t_end - t0, 4),
            "seconds_assembler": round(t_gates - t0, 4),
            "seconds_extract": round(t_extract - t_gates, 4),
            "out": str(out_dir) if out_dir is not None else None,
            "checkpoint": str(self.checkpoint),
            "warnings": notes,
        }
        return compact, summary

    def quality_warnings(self, limit: float, res: GateResult, row: int = 0) -> list[str]:
        """Why the model of request ``row`` may answer poorly ([] when nothing is known against it)."""
        notes = []
        total = sum(int(g.shape[1]) for g in res.gates)
        active = sum(int(g[row].sum()) for g in res.gates)
        trained_min = float(self.meta.get("train_config", {}).get("limit_min", 0.0))
        if active == 0:
            notes.append(
                f"the model keeps none of the {total} gated modules at activation limit {limit:g} (one module is "
                f"{1 / total:.4f} of them): the task reaches a generated model only through which modules are on, "
                "so this one is the same model for every task and cannot answer this one; raise the limit"
            )
        elif limit < trained_min:
            notes.append(
                f"activation limit {limit:g} is below the lowest limit the generator was trained for "
                f"({trained_min:g}); its accuracy there is unknown, measure it (nnf eval) before use"
            )
        return notes


def _check_limit(limit: float) -> float:
    try:
        value = float(limit)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"activation limit {limit!r} is not a number; give a value in (0, 1], e.g. 0.3") from exc
    if not (value == value and 0.0 < value <= 1.0):
        raise ConfigError(
            f"activation limit {value:g} is outside (0, 1]; it is the largest fraction of gated modules "
            "the generated model may keep (e.g. 0.3)"
        )
    return value


@torch.no_grad()
def evaluate_generated(
    factory: ModelFactory,
    limits: list[float],
    *,
    tasks: list[str] | None = None,
    per_task: int = 200,
    seed: int = 1234,
    split: str = "test",
    batch_size: int = 512,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy and activation ratio of generated compact models on the space's ``split``
    (for a detection space: mAP@0.5, see :func:`host.detection.evaluate_generated_detection`).
    ``progress``: a progress bar on stderr (one step per generated model).

    For every (task, limit), extract the compact model and run it on ``per_task`` balanced questions
    of that task. Returns {"seen"/"unseen": {limit: {"accuracy", "activation_ratio"}}, "per_limit":
    {limit: {task: {"accuracy", "activation_ratio", "params", "macs"}}}}.
    """
    from host.extraction import extract

    space = factory.space
    for lim in limits:
        _check_limit(lim)
    if getattr(get_family(space.family), "metric", "accuracy") == "map50":  # a detection space
        from host.detection import evaluate_generated_detection

        return evaluate_generated_detection(factory, limits, tasks=tasks, per_task=per_task, seed=seed,
                                            split=split, batch_size=batch_size)
    names = tasks if tasks is not None else space.names("seen") + space.names("unseen")
    task_objs = [space.task(n) for n in names]
    ids = torch.tensor([space.tasks.index(t) if t in space.tasks else -1 for t in task_objs])
    if (ids < 0).any():
        raise ConfigError("evaluation needs tasks listed in the space (seen/unseen/extra), not composed ones")
    sampler = get_family(space.family).make_sampler(space, split)
    data = sampler.balanced(ids, per_task, seed=seed)
    per_limit: dict[str, dict[str, dict[str, Any]]] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(limits) * len(task_objs), desc="eval", unit="model", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for lim in limits:
        res = factory.gates(task_objs, [lim] * len(task_objs))
        rows: dict[str, dict[str, Any]] = {}
        for i, t in enumerate(task_objs):
            bar.set_postfix_str(f"limit {lim:g}, {t.name}", refresh=False)
            bar.update(1)
            compact = extract(factory.models.supernet, res.request(i))
            sel = data.task_ids == ids[i]
            x, y = data.images[sel], data.labels[sel]
            correct = 0
            for s in range(0, x.shape[0], batch_size):
                correct += int((compact(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size]).sum())
            rows[t.name] = {
                "accuracy": correct / int(sel.sum()),
                "activation_ratio": float(res.ratios[i]),
                "params": compact.spec.params(),
                "macs": compact.spec.macs(),
                "split": t.split,
            }
        per_limit[limit_key(lim)] = rows
    bar.close()
    out: dict[str, Any] = {"per_limit": per_limit}
    for split_name in ("seen", "unseen"):
        out[split_name] = {}
        for lim in limits:
            found = [r for r in per_limit[limit_key(lim)].values() if r["split"] == split_name]
            if found:
                out[split_name][limit_key(lim)] = {
                    "accuracy": statistics.fmean(r["accuracy"] for r in found),
                    "activation_ratio": statistics.fmean(r["activation_ratio"] for r in found),
                    "max_activation_ratio": max(r["activation_ratio"] for r in found),
                    "tasks": len(found),
                }
    out["per_task_samples"] = per_task
    out["data_split"] = split
    out["checkpoint"] = str(factory.checkpoint)
    out["checkpoint_step"] = factory.meta.get("train_state", {}).get("step")
    return out


def limit_key(limit: float) -> str:
    """JSON key of a limit: "0.05", "0.3", "1.0"."""
    return repr(float(limit))
