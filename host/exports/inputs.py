"""Inputs for int8 calibration and export verification.

Verification and calibration want *real* inputs: images from the task space the model was generated
for (its ``spec``/meta names the task), labelled, so the int8 accuracy drop can be reported. When no
task space is known (a plain module, a model dir without a task), inputs come from an *input sampler*:
any callable ``(n, seed) -> Tensor (n, C, H, W)``; the default one draws N(0, 1) images and says so in
the report (``source``), so nobody mistakes agreement on noise for task accuracy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

from host.errors import ConfigError

#: ``sampler(n, seed) -> (n, C, H, W) float tensor``
InputSampler = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class InputSet:
    """A batch of inputs (N, C, H, W), optional labels (N,), and where they came from."""

    inputs: torch.Tensor
    labels: torch.Tensor | None
    source: str

    def __post_init__(self) -> None:
        if self.inputs.ndim < 2:
            raise ConfigError(f"an input set needs a batch dimension, got shape {tuple(self.inputs.shape)}")
        if self.labels is not None and self.labels.shape[0] != self.inputs.shape[0]:
            raise ConfigError(
                f"input set has {self.inputs.shape[0]} inputs but {self.labels.shape[0]} labels"
            )


def gaussian_sampler(input_shape: tuple[int, ...]) -> InputSampler:
    """N(0, 1) inputs of ``input_shape``: the fallback when no task space is known."""

    def sample(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, *input_shape, generator=gen)

    return sample


def from_sampler(sampler: InputSampler, n: int, seed: int, source: str) -> InputSet:
    """Draw ``n`` unlabelled inputs from ``sampler``."""
    x = sampler(n, seed)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] != n:
        raise ConfigError(f"input sampler must return a tensor of shape (n={n}, C, H, W), got {getattr(x, 'shape', x)}")
    return InputSet(x.float(), None, source)


def default_inputs(
    model: torch.nn.Module, input_shape: tuple[int, ...], n: int, seed: int, split: str = "test"
) -> InputSet:
    """Real task inputs when the model says which task it serves, otherwise N(0, 1) samples.

    split: data split of the task space ("test" for verification, "val" for int8 calibration, so the
    calibration images are never the ones accuracy is measured on).
    """
    task_set = task_inputs_for(model, n, seed, split)
    if task_set is not None:
        return task_set
    return from_sampler(gaussian_sampler(input_shape), n, seed, f"gaussian N(0,1) samples, seed {seed}")


def task_inputs_for(model: torch.nn.Module, n: int, seed: int, split: str = "test") -> InputSet | None:
    """Labelled inputs of the model's own task, from the task space its meta names.

    A generated model's ``spec.meta`` carries ``space`` and ``task`` (see host.generate); ``n`` balanced
    samples (half "yes") of that task are drawn from ``split``. None when the model names no task space,
    or task spaces are not part of this install.
    """
    meta = getattr(getattr(model, "spec", None), "meta", None) or {}
    space_name, task_name = meta.get("space"), meta.get("task")
    if not space_name or not task_name:
        return None
    if importlib.util.find_spec("host.tasks") is None:  # task spaces are not part of this build
        return None
    from host.tasks import get_family, load_space

    space = load_space(space_name)
    task = space.task(task_name)
    if task not in space.tasks:
        return None  # a composed task that is not listed in the space: its sampler cannot index it
    sampler = get_family(space.family).make_sampler(space, split)
    per_task = max(2, n + (n % 2))  # the balanced sampler wants an even count
    batch = sampler.balanced(torch.tensor([space.tasks.index(task)]), per_task, seed=seed)
    labels = getattr(batch, "labels", None)  # None for tasks without one class label per input (detection)
    return InputSet(
        batch.images[:n].float(), None if labels is None else labels[:n].long(),
        f"task space {space.name!r}, task {task.name!r}, {split} split, "
        f"{'balanced yes/no' if labels is not None else 'task scenes'}, seed {seed}",
    )
