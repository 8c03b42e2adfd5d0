"""The scenario data every method of the comparison shares: training batches, the test set and the metric.

One adapter per task family (:data:`ADAPTERS`), chosen from the task space:

* ``digit_grid_count`` (NumVQA): yes/no questions, cross-entropy, metric = task accuracy. Training
  batches come from MNIST's train images 0..54999 (what NN-Factory's joint training drew from), the test
  set is a balanced set of the task's questions on MNIST's **test** split, drawn per task with a fixed
  seed, so NN-Factory, Retrain and Prune&Tune answer exactly the same images.

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
    targets: torch.Tensor


class TaskAdapter(Protocol):
    """What the baselines need from a task family."""

    metric: str  # name of the quality figure, e.g. "accuracy"

    def train_batch(self, task_ids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...

    def test_set(self, task: Task, per_task: int, seed: int) -> EvalSet: ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

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
        if task not in self.space.tasks:
            raise ConfigError(
                f"task {task.name!r} is not listed in task space {self.space.name!r}; the baselines need "
                "labelled data of a listed (seen or unseen) task"
            )
        return self.space.tasks.index(task)

    def train_batch(self, task_ids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced-on-average samples of the given tasks (one per entry) from the training images."""
        answers = torch.rand(task_ids.shape[0], generator=gen) < 0.5
        b = self._train.draw(task_ids, answers, gen)
        return b.images, b.labels

    def test_set(self, task: Task, per_task: int, seed: int) -> EvalSet:
        """``per_task`` questions of this task (half yes) on the test split; depends on (task, seed) only."""
        if self._test is None:
            self._test = self._fam.make_sampler(self.space, "test")
        tid = self.task_id(task)
        b = self._test.balanced(torch.tensor([tid]), per_task, seed=seed + tid)
        return EvalSet(task=task.name, inputs=b.images, targets=b.labels)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    @torch.no_grad()
    def score(self, predict: Callable[[torch.Tensor], torch.Tensor], test: EvalSet, batch_size: int = 500) -> float:
        correct = 0
        for s in range(0, test.inputs.shape[0], batch_size):
            out = predict(test.inputs[s : s + batch_size])
            correct += int((out.argmax(1) == test.targets[s : s + batch_size]).sum())
        return correct / int(test.inputs.shape[0])


ADAPTERS: dict[str, Callable[[TaskSpace], TaskAdapter]] = {"digit_grid_count": YesNoAdapter}


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
