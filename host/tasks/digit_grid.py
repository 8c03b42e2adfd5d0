"""The ``digit_grid_count`` family: counting questions about a grid of MNIST digits (NumVQA).

An image is a ``rows x cols`` grid of 28x28 MNIST digits. A task ``<quantifier> <number> <class>``
asks whether the number of cells whose digit belongs to ``<class>`` (a set of digits declared in the
space file, e.g. ``even = [0, 2, 4, 6, 8]``) is exactly / at least / at most ``<number>``.

Sampling is answer-first, so every question is balanced yes/no: draw the answer, then a count of
class digits consistent with it, then the digits, then MNIST images of those digits from the chosen
split (MNIST's own train split for training, its test split for evaluation). The "no" counts are
drawn with extra weight on the counts next to the "yes" ones (for "exactly two 0": one or three 0s
are likelier than none or four), so a "no" differs from a "yes" in exactly what the question asks
and no question can be answered from an unrelated cue such as the average count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from host.data.mnist import MnistSplit, load_mnist
from host.errors import ConfigError
from host.tasks import Family, TaskSpace

QUANTIFIERS = ("exactly", "at least", "at most")
REQUIRED_GROUPS = ("quantifier", "number", "class")
# How much likelier a count next to the yes/no boundary is than any other count.
BOUNDARY_WEIGHT = 3.0
# MNIST train images from this index on form the validation split (never trained on).
VAL_START = 55000


def _predicate(quantifier: str, n: int, count: int) -> bool:
    if quantifier == "exactly":
        return count == n
    if quantifier == "at least":
        return count >= n
    if quantifier == "at most":
        return count <= n
    raise ConfigError(f"unknown quantifier {quantifier!r}; the digit_grid_count family knows {QUANTIFIERS}")


class DigitGridCount(Family):
    name = "digit_grid_count"

    def check_params(self, space_name: str, groups: dict[str, tuple[str, ...]], params: dict) -> None:
        if tuple(groups) != REQUIRED_GROUPS:
            raise ConfigError(
                f"task space {space_name}: family digit_grid_count needs exactly the groups "
                f"{list(REQUIRED_GROUPS)} in that order, got {list(groups)}"
            )
        for q in groups["quantifier"]:
            if q not in QUANTIFIERS:
                raise ConfigError(f"task space {space_name}: quantifier {q!r} must be one of {QUANTIFIERS}")
        grid = params.get("grid", {})
        rows, cols = int(grid.get("rows", 0)), int(grid.get("cols", 0))
        if rows < 1 or cols < 1:
            raise ConfigError(f"task space {space_name}: [grid] needs rows >= 1 and cols >= 1")
        if int(grid.get("cell_size", 28)) != 28:
            raise ConfigError(f"task space {space_name}: [grid] cell_size must be 28 (MNIST digits)")
        numbers = params.get("numbers", {})
        for n in groups["number"]:
            if n not in numbers:
                raise ConfigError(f"task space {space_name}: number {n!r} has no value in [numbers]")
            if not 0 <= int(numbers[n]) <= rows * cols:
                raise ConfigError(f"task space {space_name}: number {n!r} = {numbers[n]} outside 0..{rows * cols}")
        classes = params.get("classes", {})
        for c in groups["class"]:
            if c not in classes:
                raise ConfigError(f"task space {space_name}: class {c!r} has no digit list in [classes]")
            digits = [int(d) for d in classes[c]]
            if not digits or any(d < 0 or d > 9 for d in digits) or len(set(digits)) != len(digits):
                raise ConfigError(f"task space {space_name}: class {c!r} must list distinct digits 0-9")
            if len(digits) == 10:
                raise ConfigError(f"task space {space_name}: class {c!r} holds every digit; no question can be asked")

    def _parts(self, space: TaskSpace, attributes: tuple[str, ...]) -> tuple[str, int, str]:
        q, num, cls = attributes
        return q, int(space.params["numbers"][num]), cls

    def validate_task(self, space: TaskSpace, attributes: tuple[str, ...]) -> None:
        q, n, _ = self._parts(space, attributes)
        cells = _cells(space)
        answers = {_predicate(q, n, c) for c in range(cells + 1)}
        if answers != {True, False}:
            raise ConfigError(
                f"task {' '.join(attributes)!r} has the same answer for every image of {cells} cells; "
                "it is not a question"
            )

    def label_sample(self, space: TaskSpace, attributes: Sequence[tuple[str, ...]]) -> torch.Tensor:
        """Answers on every digit grid (10**cells of them) when that is at most 10**5, else on 10**5
        seeded random grids plus, per task, grids that reach each count 0..cells of its class."""
        cells = _cells(space)
        if 10**cells <= 100_000:
            grids = torch.cartesian_prod(*[torch.arange(10)] * cells).reshape(-1, cells)
        else:
            gen = torch.Generator().manual_seed(0)
            parts = [torch.randint(10, (100_000, cells), generator=gen)]
            for cls in space.groups["class"]:
                digits = [int(d) for d in space.params["classes"][cls]]
                others = [d for d in range(10) if d not in digits] or digits
                for k in range(cells + 1):
                    row = [digits[i % len(digits)] for i in range(k)] + [others[i % len(others)] for i in range(cells - k)]
                    parts.append(torch.tensor([row]))
            grids = torch.cat(parts)
        onehot = torch.nn.functional.one_hot(grids, 10).sum(dim=1)  # (N, 10) digit histogram
        out = torch.zeros(len(attributes), grids.shape[0], dtype=torch.bool)
        for i, attrs in enumerate(attributes):
            q, n, cls = self._parts(space, attrs)
            members = torch.tensor([int(d) for d in space.params["classes"][cls]])
            count = onehot[:, members].sum(dim=1)
            out[i] = torch.tensor([_predicate(q, n, c) for c in range(cells + 1)])[count]
        return out

    def image_shape(self, space: TaskSpace) -> tuple[int, ...]:
        grid = space.params["grid"]
        return (1, int(grid["rows"]) * 28, int(grid["cols"]) * 28)

    def make_sampler(self, space: TaskSpace, split: str, *, augment: bool = False) -> DigitGridSampler:
        """``split``: "train" (MNIST train images 0..54999), "val" (MNIST train 55000..59999, for
        model selection) or "test" (MNIST's test split). ``augment``: every digit gets its own small
        random rotation, scale and shift (training only)."""
        if split == "test":
            return DigitGridSampler(space, load_mnist("test"), augment=augment)
        if split not in ("train", "val"):
            raise ConfigError(f"unknown data split {split!r}; choose train, val or test")
        full = load_mnist("train")
        sl = slice(0, VAL_START) if split == "train" else slice(VAL_START, len(full))
        return DigitGridSampler(space, MnistSplit(split, full.images[sl], full.labels[sl]), augment=augment)


#: Per-digit augmentation ranges: rotation (degrees), scale, shift (pixels).
JITTER_DEGREES, JITTER_SCALE, JITTER_SHIFT_PX = 12.0, 0.1, 2.5


def _jitter(tiles: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random small affine warp of each (N, 1, 28, 28) tile, values kept in [0, 1]."""
    n = tiles.shape[0]
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    angle = u[:, 0] * JITTER_DEGREES * torch.pi / 180
    scale = 1 + u[:, 1] * JITTER_SCALE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift = u[:, 2:] * (2 * JITTER_SHIFT_PX / 28)  # in grid_sample's [-1, 1] coordinates
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(tiles.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(tiles, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)


def _cells(space: TaskSpace) -> int:
    return int(space.params["grid"]["rows"]) * int(space.params["grid"]["cols"])


@dataclass
class Batch:
    """Labelled samples. images: (B, 1, H, W) float in [0, 1]; labels: (B,) 1 = yes;
    task_ids: (B,) indices into ``space.tasks``; digits: (B, cells) digit of each cell;
    class_counts: (B, n_classes) how many cells hold a digit of each class attribute."""

    images: torch.Tensor
    labels: torch.Tensor
    task_ids: torch.Tensor
    digits: torch.Tensor
    class_counts: torch.Tensor


class DigitGridSampler:
    """Draws balanced, labelled NumVQA samples for any task of a digit_grid_count space."""

    def __init__(self, space: TaskSpace, mnist: MnistSplit, *, augment: bool = False) -> None:
        self.space = space
        self.mnist = mnist
        self.augment = augment
        self.rows = int(space.params["grid"]["rows"])
        self.cols = int(space.params["grid"]["cols"])
        self.cells = self.rows * self.cols
        self.image_shape = (1, self.rows * 28, self.cols * 28)
        # MNIST indices sorted by label, to draw a random image of a given digit.
        order = torch.argsort(mnist.labels, stable=True)
        self._by_label = order
        counts = torch.bincount(mnist.labels, minlength=10)
        self._label_count = counts
        self._label_start = torch.cumsum(counts, 0) - counts
        classes = list(space.groups["class"])
        self.class_names = classes
        member = torch.zeros(len(classes), 10)
        for i, c in enumerate(classes):
            for d in space.params["classes"][c]:
                member[i, int(d)] = 1.0
        self.membership = member  # (C, 10)
        # Per task: class index and count distributions for yes / no answers.
        cls_idx, yes_w, no_w = [], [], []
        for t in space.tasks:
            q, num, cls = t.attributes
            n = int(space.params["numbers"][num])
            truth = [_predicate(q, n, c) for c in range(self.cells + 1)]
            wy, wn = [], []
            for c in range(self.cells + 1):
                near_other = any(
                    0 <= c + d <= self.cells and truth[c + d] != truth[c] for d in (-1, 1)
                )
                w = BOUNDARY_WEIGHT if near_other else 1.0
                wy.append(w if truth[c] else 0.0)
                wn.append(0.0 if truth[c] else w)
            cls_idx.append(classes.index(cls))
            yes_w.append(wy)
            no_w.append(wn)
        self._task_class = torch.tensor(cls_idx)
        self._yes_w = torch.tensor(yes_w)
        self._no_w = torch.tensor(no_w)

    def draw(self, task_ids: torch.Tensor, answers: torch.Tensor, generator: torch.Generator) -> Batch:
        """Samples for the given tasks with the given answers (bool, True = yes)."""
        b = task_ids.shape[0]
        weights = torch.where(answers[:, None], self._yes_w[task_ids], self._no_w[task_ids])
        counts = torch.multinomial(weights, 1, generator=generator)[:, 0]  # (B,)
        member = self.membership[self._task_class[task_ids]]  # (B, 10)
        # Cell j < count gets a class digit, the rest a non-class digit; then shuffle the cells.
        first = torch.arange(self.cells)[None, :] < counts[:, None]  # (B, cells)
        pool = torch.where(first[:, :, None], member[:, None, :], 1.0 - member[:, None, :])
        digits = torch.multinomial(pool.reshape(-1, 10), 1, generator=generator).reshape(b, self.cells)
        perm = torch.argsort(torch.rand(b, self.cells, generator=generator), dim=1)
        digits = torch.gather(digits, 1, perm)
        images = self.render(digits, generator)
        return Batch(
            images=images,
            labels=answers.long(),
            task_ids=task_ids,
            digits=digits,
            class_counts=self.class_counts(digits),
        )

    def render(self, digits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random MNIST images of ``digits`` (B, cells) placed in the grid: (B, 1, H, W) in [0, 1]."""
        b = digits.shape[0]
        u = torch.rand(digits.shape, generator=generator)
        pick = (u * self._label_count[digits]).long()
        idx = self._by_label[self._label_start[digits] + pick]
        tiles = self.mnist.images[idx].float().div_(255.0)  # (B, cells, 28, 28)
        if self.augment:
            tiles = _jitter(tiles.reshape(-1, 1, 28, 28), generator).reshape(tiles.shape)
        grid = tiles.reshape(b, self.rows, self.cols, 28, 28).permute(0, 1, 3, 2, 4)
        return grid.reshape(b, 1, self.rows * 28, self.cols * 28)

    def class_counts(self, digits: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(digits, 10).float()  # (B, cells, 10)
        return (onehot @ self.membership.T).sum(dim=1).long()  # (B, C)

    def labels_for(self, task_ids: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """Ground-truth answers of arbitrary tasks on given digit grids (checks the sampler)."""
        counts = self.class_counts(digits).gather(1, self._task_class[task_ids][:, None])[:, 0]
        out = []
        for tid, c in zip(task_ids.tolist(), counts.tolist(), strict=True):
            q, num, _ = self.space.tasks[tid].attributes
            out.append(_predicate(q, int(self.space.params["numbers"][num]), c))
        return torch.tensor(out, dtype=torch.long)

    def balanced(self, task_ids: torch.Tensor, per_task: int, seed: int) -> Batch:
        """A fixed evaluation set: ``per_task`` samples of each task, exactly half yes."""
        if per_task < 2 or per_task % 2:
            raise ConfigError(f"samples per task must be an even number >= 2, got {per_task}")
        gen = torch.Generator().manual_seed(seed)
        tids = task_ids.repeat_interleave(per_task)
        answers = (torch.arange(per_task) % 2 == 0).repeat(task_ids.shape[0])
        return self.draw(tids, answers, gen)
