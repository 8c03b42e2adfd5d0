"""The training loop both baselines use: Adam, warm-up + cosine, step and wall-time caps, seeded batches.

Every batch is a pure function of ``(seed, step)`` (``host.training.step_generator``), so a run with the
same settings sees the same data. A run stops at ``steps``, or when ``cpu_cap_s`` seconds of process CPU time or
``time_cap_s`` of wall-clock time have been spent training, whichever comes first, and its :class:`TrainLog`
says which (and how long it took, in wall and process-CPU seconds, so a run on a shared machine can be read
both ways). The CPU cap is the one to use on a shared machine: time the process spends waiting for the CPU,
or paused (SIGSTOP) while someone else measures, does not count against it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from host.errors import ConfigError
from host.training import step_generator

# (generator) -> (loss, correct answers in the batch, batch size)
StepFn = Callable[[torch.Generator], tuple[torch.Tensor, int, int]]


@dataclass
class TrainSettings:
    """How long and how fast one training run goes."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    time_cap_s: float | None = None  # wall-clock cap on the training loop (None = no wall-clock cap)
    seed: int = 0
    log_every: int = 25
    cpu_cap_s: float | None = None  # process-CPU-seconds cap on the training loop (None = no CPU cap)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 2 or not self.lr > 0:
            raise ConfigError(f"training settings need steps >= 0, batch_size >= 2 and lr > 0, got {self}")
        for name in ("time_cap_s", "cpu_cap_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"{name} must be positive (or None), got {v}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.cpu_cap_s is None:  # absent rather than null: settings recorded before it existed stay equal
            del d["cpu_cap_s"]
        return d


@dataclass
class TrainLog:
    """What a training run did."""

    steps: int = 0
    images: int = 0
    seconds: float = 0.0  # wall clock of the loop
    cpu_seconds: float = 0.0  # process CPU time of the loop (all threads)
    stopped_by: str = "steps"  # "steps" | "time_cap" | "cpu_cap"
    curve: list[dict[str, float]] = field(default_factory=list)  # every log_every steps: step, loss, acc

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["cpu_seconds"] = round(self.cpu_seconds, 3)
        return d


def lr_at(s: TrainSettings, step: int) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    frac = min(1.0, (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps))
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def run_training(step_fn: StepFn, params: Sequence[nn.Parameter], modules: Sequence[nn.Module],
                 settings: TrainSettings, *, stream: str) -> TrainLog:
    """Train ``params`` with ``step_fn`` (which computes a batch's loss) under ``settings``."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    for m in modules:
        m.train()
    log = TrainLog()
    t0, c0 = time.perf_counter(), time.process_time()
    loss_acc, hits, seen = 0.0, 0, 0
    try:
        for step in range(settings.steps):
            if settings.time_cap_s is not None and time.perf_counter() - t0 >= settings.time_cap_s:
                log.stopped_by = "time_cap"
                break
            if settings.cpu_cap_s is not None and time.process_time() - c0 >= settings.cpu_cap_s:
                log.stopped_by = "cpu_cap"
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(settings, step)
            loss, correct, n = step_fn(step_generator(settings.seed, step, 0, stream))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            log.steps = step + 1
            log.images += n
            loss_acc += float(loss.detach()) * n
            hits += correct
            seen += n
            if log.steps % settings.log_every == 0 or log.steps == settings.steps:
                log.curve.append({"step": log.steps, "loss": round(loss_acc / seen, 5), "acc": round(hits / seen, 5),
                                  "seconds": round(time.perf_counter() - t0, 2)})
                loss_acc, hits, seen = 0.0, 0, 0
    finally:
        log.seconds = time.perf_counter() - t0
        log.cpu_seconds = time.process_time() - c0
        for m in modules:
            m.eval()
    return log
