"""Inputs for int8 calibration and export verification.

Verification and calibration want *real* inputs: images from the task space the model was generated
for (its ``spec``/meta names the task), labelled, so the int8 accuracy drop can be reported. When no
task space is known (a plain module, a model dir without a task), inputs come from an *input sampler*:
any callable ``(n, seed) -> Tensor (n, C, H, W)``; the default one draws N(0, 1) images and says so in
the report (``source``), so nobody mistakes agreement on noise for task accuracy.
"""

from __future__ import annotations

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


def default_inputs(model: torch.nn.Module, input_shape: tuple[int, ...], n: int, seed: int) -> InputSet:
    """Real task inputs when the model says which task it serves, otherwise N(0, 1) samples."""
    task_set = task_inputs_for(model, n, seed)
    if task_set is not None:
        return task_set
    return from_sampler(gaussian_sampler(input_shape), n, seed, f"gaussian N(0,1) samples, seed {seed}")


def task_inputs_for(model: torch.nn.Module, n: int, seed: int) -> InputSet | None:
    """Labelled inputs from the task space named by the model's spec/meta, or None when none is known."""
    return None
