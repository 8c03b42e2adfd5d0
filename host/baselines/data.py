"""The scenario data every method of the comparison shares: training batches, the test set and the metric.

One adapter per task family (:data:`ADAPTERS`), chosen from the task space:

* ``digit_grid_count`` (NumVQA): yes/no questions, cross-entropy, metric = task accuracy. Training
  batches come from MNIST's train images 0..54999 (what NN-Factory's joint training drew from), the test
  set is a balanced set of the task's questions on MNIST's **test** split, drawn per task with a fixed
  seed, so NN-Factory, Retrain and Prune&Tune answer exactly the same images.
* ``attributed_scenes`` (AttrOD): CenterNet detection of the task's (category, colour) objects, the
  family's own training loss, metric = mAP@0.5 (COCOeval) on scenes built from MNIST's test split.

A family without an adapter (e.g. a detection space before its adapter exists) is refused with a clear
error naming what is missing; the comparison itself is family-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from host.errors import ConfigError
from host.tasks import Task, TaskSpace, get_family


@dataclass
class EvalSet:
    """A fixed evaluation set of one task: inputs and targets (on the test split)."""

    task: str
    inputs: torch.Tensor
    targets: Any  # labels (B,) for yes/no questions; the scenes themselves for detection


class TaskAdapter(Protocol):
    """What the baselines need from a task family."""

    space: TaskSpace
    metric: str  # name of the quality figure, e.g. "accuracy" or "map50"

    def task_id(self, task: Task) -> int: ...

    def train_batch(self, pool: torch.Tensor, b: int, gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """``b`` training samples of tasks drawn from ``pool`` (task indices): (inputs, targets, task ids)."""
        ...

    def train_mixed(self, seen: torch.Tensor, extra: torch.Tensor, extra_fraction: float, b: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Like :meth:`train_batch` over seen tasks, ``extra_fraction`` of them from extra combinations."""
        ...

    def test_set(self, task: Task, per_task: int, seed: int) -> EvalSet: ...

    def loss(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor: ...

    def correct(self, outputs: torch.Tensor, targets: Any) -> int:
        """Correct answers in a batch (for the training log; 0 where the metric is not per sample)."""
        ...

    def score(self, predict: Callable[[torch.Tensor], torch.Tensor], test: EvalSet) -> float: ...


class YesNoAdapter:
    """Yes/no question families (NumVQA): 2-way logits, cross-entropy, accuracy."""

    metric = "accuracy"

    def __init__(self, space: TaskSpace) -> None:
        self.space = space
        fam = get_family(space.family)
        self._fam = fam
        self._train = fam.make_sampler(space, "train")
        self._test: Any = None

    def task_id(self, task: Task) -> int:
        return listed_task_id(self.space, task)

    def train_batch(self, pool: torch.Tensor, b: int, gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        tids = pool.expand(b) if len(pool) == 1 else pool[torch.randint(len(pool), (b,), generator=gen)]
        return self._draw(tids, gen)

    def train_mixed(self, seen: torch.Tensor, extra: torch.Tensor, extra_fraction: float, b: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        tids = seen[torch.randint(len(seen), (b,), generator=gen)]
        if len(extra):
            use = torch.rand(b, generator=gen) < extra_fraction
            tids = torch.where(use, extra[torch.randint(len(extra), (b,), generator=gen)], tids)
        return self._draw(tids, gen)

    def _draw(self, tids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        answers = torch.rand(tids.shape[0], generator=gen) < 0.5  # balanced on average
        batch = self._train.draw(tids, answers, gen)
        return batch.images, batch.labels, tids

    def test_set(self, task: Task, per_task: int, seed: int) -> EvalSet:
        """``per_task`` questions of this task (half yes) on the test split; depends on (task, seed) only."""
        if self._test is None:
            self._test = self._fam.make_sampler(self.space, "test")
        tid = self.task_id(task)
        b = self._test.balanced(torch.tensor([tid]), per_task, seed=seed + tid)
        return EvalSet(task=task.name, inputs=b.images, targets=b.labels)

    def loss(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def correct(self, outputs: torch.Tensor, targets: Any) -> int:
        return int((outputs.argmax(1) == targets).sum())

    @torch.no_grad()
    def score(self, predict: Callable[[torch.Tensor], torch.Tensor], test: EvalSet, batch_size: int = 500) -> float:
        correct = 0
        for s in range(0, test.inputs.shape[0], batch_size):
            out = predict(test.inputs[s : s + batch_size])
            correct += int((out.argmax(1) == test.targets[s : s + batch_size]).sum())
        return correct / int(test.inputs.shape[0])


class DetectionAdapter:
    """Attributed detection families (AttrOD): CenterNet outputs, the family's loss, mAP@0.5 with COCOeval.

    A task's targets are its scenes; only the objects of the task's (category, colour) pairs are positives,
    both in training (the family's joint loss) and in scoring.
    """

    metric = "map50"

    def __init__(self, space: TaskSpace) -> None:
        self.space = space
        self._fam: Any = get_family(space.family)
        self._objective = self._fam.objective(space)
        self._train = self._fam.make_sampler(space, "train")
        self._test: Any = None
        self.num_classes = len(space.groups["category"])

    def task_id(self, task: Task) -> int:
        return listed_task_id(self.space, task)

    def train_batch(self, pool: torch.Tensor, b: int, gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        scenes = self._train.draw_train(pool, b, gen)
        return scenes.images, scenes, scenes.task_ids

    def train_mixed(self, seen: torch.Tensor, extra: torch.Tensor, extra_fraction: float, b: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, Any, torch.Tensor]:
        scenes = self._objective.draw_joint(self._train, b, gen, seen, extra, extra_fraction)
        return scenes.images, scenes, scenes.task_ids

    def test_set(self, task: Task, per_task: int, seed: int) -> EvalSet:
        if self._test is None:
            self._test = self._fam.make_sampler(self.space, "test")
        tid = self.task_id(task)
        scenes = self._test.task_scenes(torch.tensor([tid]), per_task, seed=seed + tid)
        return EvalSet(task=task.name, inputs=scenes.images, targets=scenes)

    def loss(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        return self._objective.joint_loss(outputs, targets)[0]

    def correct(self, outputs: torch.Tensor, targets: Any) -> int:
        return 0

    @torch.no_grad()
    def score(self, predict: Callable[[torch.Tensor], torch.Tensor], test: EvalSet, batch_size: int = 256) -> float:
        from host.detection import coco_map50, decode, scene_ground_truth

        scenes = test.targets
        dets = []
        for s in range(0, len(scenes), batch_size):
            y = predict(scenes.images[s : s + batch_size])
            dets += decode(y, self.num_classes, scenes.images.shape[-1] // y.shape[-1])
        mask = self._fam.pair_mask(self.space, self.space.task(test.task))[None].expand(len(scenes), -1, -1)
        boxes, classes = scene_ground_truth(scenes, mask)
        m = coco_map50(boxes, classes, dets, self.num_classes)
        return float(m["map50"]) if m["map50"] is not None else 0.0


def listed_task_id(space: TaskSpace, task: Task) -> int:
    if task not in space.tasks:
        raise ConfigError(
            f"task {task.name!r} is not listed in task space {space.name!r}; the baselines need "
            "labelled data of a listed (seen or unseen) task"
        )
    return space.tasks.index(task)


ADAPTERS: dict[str, Callable[[TaskSpace], TaskAdapter]] = {
    "digit_grid_count": YesNoAdapter,
    "attributed_scenes": DetectionAdapter,
}


def register_adapter(family: str, factory: Callable[[TaskSpace], TaskAdapter]) -> None:
    """Make a task family available to the baselines (its training data, test set and metric)."""
    ADAPTERS[family] = factory


def adapter_for(space: TaskSpace) -> TaskAdapter:
    if space.family not in ADAPTERS:
        raise ConfigError(
            f"the baselines have no data adapter for task family {space.family!r} (space {space.name!r}); "
            f"known: {', '.join(sorted(ADAPTERS))}. Register one with host.baselines.data.register_adapter"
        )
    return ADAPTERS[space.family](space)


def training_task_ids(space: TaskSpace) -> tuple[torch.Tensor, torch.Tensor]:
    """Task indices NN-Factory trains on: (seen, extra combinations). Unseen tasks are never among them."""
    seen = [i for i, t in enumerate(space.tasks) if t.split == "seen"]
    extra = [i for i, t in enumerate(space.tasks) if t.split == "extra"]
    return torch.tensor(seen, dtype=torch.long), torch.tensor(extra, dtype=torch.long)
