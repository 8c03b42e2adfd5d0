"""The ``attributed_scenes`` family: attributed object detection on generated scenes (AttrOD).

A *scene* is an RGB image (``size x size``) on a textured background holding a few objects; each object
is a real MNIST glyph of one of the space's *categories* (digits), painted in one of its *colours*,
scaled, placed inside the image and possibly partly covered by objects drawn after it. Every object has
a tight box: the box of the glyph's pixels above :data:`GLYPH_THRESHOLD` after scaling, in pixels,
COCO ``[x, y, w, h]`` form.

A *task* is a non-empty set of categories ``C`` and a non-empty set of colours ``K``: "detect every
object whose category is in C and whose colour is in K", i.e. the set of (category, colour) pairs
``C x K``. Single pairs ("crimson 3"), "any colour" forms (``K`` = every colour: "any-colour 3"),
"any category" forms (``C`` = every category: "crimson any-digit") and products ("crimson/lime 3/7")
are all such sets. A task's attributes are its categories followed by its colours, so the assembler's
multi-hot encoding is the union of two multi-hots and composes: an unseen product is encoded from
attributes every trained task uses, and distinct tasks always have distinct encodings.

Data are never stored: a scene is a pure function of ``(seed, split, task, index)`` and is drawn on
demand (numpy per scene for its layout, vectorised torch for rendering: ~0.1 ms a scene). Each task
has its own training scenes: task ``t``'s ``j``-th scene (``j < n_t``) is biased to contain its
positives and hard negatives (objects sharing a category or a colour with the task), like the images
a real per-task data set collects. The per-task counts ``n_t`` are deliberately uneven (log-uniform in
``[samples.min, samples.max]``, from ``samples.seed``). Splits use disjoint MNIST glyphs: ``train`` =
MNIST train images 0..54999, ``val`` = MNIST train 55000..59999, ``test`` = MNIST's test split.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from host.data.mnist import load_mnist
from host.errors import ConfigError
from host.tasks import Family, Task, TaskSpace

REQUIRED_GROUPS = ("category", "colour")
#: MNIST pixels at or above this (of 255) count as the glyph for its tight box.
GLYPH_THRESHOLD = 64
#: MNIST train images from this index on form the validation split (never trained on).
VAL_START = 55000
SPLIT_STREAMS = {"train": 1, "val": 2, "test": 3}
ANY_CATEGORY = "any-digit"
ANY_COLOUR = "any-colour"


@dataclass(frozen=True)
class SceneParams:
    """Scene settings from the space file's ``[scene]`` table."""

    size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    min_height: float = 16.0  # glyph height in pixels
    max_height: float = 30.0
    max_cover: float = 0.35  # largest share of an object's box that objects drawn later may cover
    positive_share: float = 0.45  # per object of a task's scene: a pair of the task
    hard_negative_share: float = 0.35  # ... a pair sharing its category or its colour with the task
    colour_jitter: float = 0.04  # std of the per-object RGB jitter (0..1 scale)

    @classmethod
    def from_params(cls, space_name: str, raw: dict) -> SceneParams:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"task space {space_name}: unknown [scene] key(s) {unknown}; known: {sorted(known)}")
        p = cls(**raw)
        if p.size < 32 or p.size % 4:
            raise ConfigError(f"task space {space_name}: [scene] size must be a multiple of 4, >= 32")
        if not 1 <= p.min_objects <= p.max_objects <= 8:
            raise ConfigError(f"task space {space_name}: [scene] needs 1 <= min_objects <= max_objects <= 8")
        if not 6 <= p.min_height <= p.max_height <= p.size:
            raise ConfigError(f"task space {space_name}: [scene] needs 6 <= min_height <= max_height <= size")
        if not 0 <= p.max_cover < 1:
            raise ConfigError(f"task space {space_name}: [scene] max_cover must lie in [0, 1)")
        if p.positive_share < 0 or p.hard_negative_share < 0 or p.positive_share + p.hard_negative_share > 1:
            raise ConfigError(f"task space {space_name}: [scene] shares must be >= 0 and sum to <= 1")
        return p


def _check_rgb(space_name: str, colour: str, rgb: Any) -> None:
    if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)):
        raise ConfigError(f"task space {space_name}: colour {colour!r} needs [r, g, b] with integers 0-255")


class AttributedScenes(Family):
    """Tasks = products of a category set and a colour set; samples = generated attributed scenes."""

    name = "attributed_scenes"
    block_keys = ("pick",)
    metric = "map50"
    io_description = (
        "RGB (3, S, S) float in [0, 1] (pixel / 255); output (K + 4, S/4, S/4): K category centre-heatmap "
        "logits, box w/h in output cells, centre x/y offset in its cell (decode: host.detection.decode)")

    def check_params(self, space_name: str, groups: dict[str, tuple[str, ...]], params: dict) -> None:
        if tuple(groups) != REQUIRED_GROUPS:
            raise ConfigError(
                f"task space {space_name}: family attributed_scenes needs exactly the groups "
                f"{list(REQUIRED_GROUPS)} in that order, got {list(groups)}"
            )
        cats = params.get("categories", {})
        for c in groups["category"]:
            if c not in cats or not isinstance(cats[c], int) or not 0 <= cats[c] <= 9:
                raise ConfigError(f"task space {space_name}: category {c!r} needs an MNIST digit 0-9 in [categories]")
        if len({cats[c] for c in groups["category"]}) != len(groups["category"]):
            raise ConfigError(f"task space {space_name}: two categories name the same digit")
        cols = params.get("colours", {})
        for c in groups["colour"]:
            if c not in cols:
                raise ConfigError(f"task space {space_name}: colour {c!r} has no [r, g, b] in [colours]")
            _check_rgb(space_name, c, cols[c])
        SceneParams.from_params(space_name, params.get("scene", {}))
        samples = params.get("samples", {})
        lo, hi = int(samples.get("min", 0)), int(samples.get("max", 0))
        if not 1 <= lo <= hi:
            raise ConfigError(f"task space {space_name}: [samples] needs 1 <= min <= max scenes per task")
        if float(samples.get("balance", 0.5)) < 0:
            raise ConfigError(f"task space {space_name}: [samples] balance must be >= 0")

    # ---- task grammar -------------------------------------------------------------------------
    def expand_block(
        self, space: TaskSpace, values: dict[str, list[str]], block: dict[str, Any], where: str
    ) -> list[tuple[str, ...]]:
        """Every ``pick.category``-subset of the listed categories times every ``pick.colour``-subset
        of the listed colours (default 1 and 1: one task per listed pair)."""
        pick = block.get("pick", {})
        if not isinstance(pick, dict) or set(pick) - set(REQUIRED_GROUPS):
            raise ConfigError(f"{where}: pick must be a table like {{category = 2, colour = 1}}")
        out = []
        cat_k, col_k = int(pick.get("category", 1)), int(pick.get("colour", 1))
        cats, cols = values["category"], values["colour"]
        if not (1 <= cat_k <= len(cats) and 1 <= col_k <= len(cols)):
            raise ConfigError(
                f"{where}: pick = {{category = {cat_k}, colour = {col_k}}} needs 1..{len(cats)} categories and "
                f"1..{len(cols)} colours (as many as the block lists)"
            )
        for cs in itertools.combinations(cats, cat_k):
            for ks in itertools.combinations(cols, col_k):
                out.append(self._canonical(space, list(cs) + list(ks)))
        return out

    def _canonical(self, space: TaskSpace, attributes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        cats = [c for c in space.groups["category"] if c in attributes]
        cols = [c for c in space.groups["colour"] if c in attributes]
        return tuple(cats + cols)

    def split_attributes(self, space: TaskSpace, attributes: tuple[str, ...]) -> tuple[list[str], list[str]]:
        return ([a for a in attributes if a in space.groups["category"]],
                [a for a in attributes if a in space.groups["colour"]])

    def task_name(self, space: TaskSpace, attributes: tuple[str, ...]) -> str:
        cats, cols = self.split_attributes(space, attributes)
        c = ANY_CATEGORY if len(cats) == len(space.groups["category"]) else "/".join(cats)
        k = ANY_COLOUR if len(cols) == len(space.groups["colour"]) else "/".join(cols)
        return f"{k} {c}"

    def compose(self, space: TaskSpace, attributes: Any) -> tuple[str, ...]:
        if len(set(attributes)) != len(list(attributes)):
            raise ConfigError(f"task attributes {list(attributes)} repeat an attribute")
        attrs = self._canonical(space, list(attributes))
        cats, cols = self.split_attributes(space, attrs)
        if not cats or not cols:
            raise ConfigError(
                f"task attributes {list(attributes)} need at least one category ({', '.join(space.groups['category'])}) "
                f"and at least one colour ({', '.join(space.groups['colour'])}), e.g. 'crimson+3' or 'white+lime+1+7'"
            )
        return attrs

    def combinations(self, space: TaskSpace) -> Any:
        cats, cols = space.groups["category"], space.groups["colour"]
        for i in range(1, len(cats) + 1):
            for j in range(1, len(cols) + 1):
                for cs in itertools.combinations(cats, i):
                    for ks in itertools.combinations(cols, j):
                        yield tuple(cs) + tuple(ks)

    def validate_task(self, space: TaskSpace, attributes: tuple[str, ...]) -> None:
        cats, cols = self.split_attributes(space, tuple(attributes))
        if not cats or not cols or len(cats) + len(cols) != len(attributes):
            raise ConfigError(f"task {attributes!r} needs at least one category and one colour")

    def label_sample(self, space: TaskSpace, attributes: Any) -> torch.Tensor:
        """Each task's label of an object of every (category, colour) pair: (tasks, categories x colours).

        Exhaustive: an object is a positive of a task exactly when its pair is, whatever else the scene
        holds, so two tasks label every scene alike exactly when their rows here are equal."""
        cats, cols = space.groups["category"], space.groups["colour"]
        rows = []
        for attrs in attributes:
            tc, tk = self.split_attributes(space, tuple(attrs))
            rows.append([c in tc and k in tk for c in cats for k in cols])
        return torch.tensor(rows, dtype=torch.bool).reshape(len(rows), len(cats) * len(cols))

    def image_shape(self, space: TaskSpace) -> tuple[int, ...]:
        size = SceneParams.from_params(space.name, space.params.get("scene", {})).size
        return (3, size, size)

    def make_sampler(self, space: TaskSpace, split: str, *, augment: bool = False) -> SceneSampler:
        """``split``: "train", "val" (model selection) or "test"; disjoint MNIST glyphs. Scenes are
        drawn with random scale, place, colour jitter and background already (``augment`` adds nothing)."""
        return SceneSampler(space, split)

    def objective(self, space: TaskSpace) -> Any:
        from host.detection import DetectionObjective

        return DetectionObjective(space)

    def pair_mask(self, space: TaskSpace, task: Task) -> torch.Tensor:
        """(categories, colours) bool: the (category, colour) pairs the task detects."""
        cats, cols = self.split_attributes(space, task.attributes)
        m = torch.zeros(len(space.groups["category"]), len(space.groups["colour"]), dtype=torch.bool)
        for c in cats:
            for k in cols:
                m[space.groups["category"].index(c), space.groups["colour"].index(k)] = True
        return m


# ---- scenes -----------------------------------------------------------------------------------


@dataclass
class Scenes:
    """A batch of rendered scenes.

    images: (B, 3, S, S) float in [0, 1]. boxes: (B, N, 4) COCO [x, y, w, h] in pixels, N = the most
    objects a scene may hold; valid: (B, N) which slots hold an object; category / colour: (B, N)
    attribute indices (-1 in empty slots); task_ids: (B,) the task each scene was drawn for (-1: none).
    """

    images: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    category: torch.Tensor
    colour: torch.Tensor
    task_ids: torch.Tensor
    glyph: torch.Tensor | None = None  # (B, N) MNIST index (in the split's source file) of each object
    alpha: torch.Tensor | None = None  # (B, N, S, S) each object's own opacity before later objects cover it
    labels: torch.Tensor | None = None  # no per-image class label: detection

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def positives(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, N) objects matching each scene's task; ``masks`` (B, C, K) pair masks per scene."""
        cat = self.category.clamp(min=0)
        col = self.colour.clamp(min=0)
        b = torch.arange(cat.shape[0], device=cat.device)[:, None].expand_as(cat)
        return self.valid & masks[b, cat, col]

    def select(self, idx: torch.Tensor) -> Scenes:
        return Scenes(self.images[idx], self.boxes[idx], self.valid[idx], self.category[idx], self.colour[idx],
                      self.task_ids[idx], None if self.glyph is None else self.glyph[idx],
                      None if self.alpha is None else self.alpha[idx])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


class SceneSampler:
    """Draws (renders) the scenes of one split of an ``attributed_scenes`` space, deterministically."""

    def __init__(self, space: TaskSpace, split: str) -> None:
        if split not in SPLIT_STREAMS:
            raise ConfigError(f"unknown data split {split!r}; choose train, val or test")
        self.space, self.split = space, split
        self.family: AttributedScenes = AttributedScenes()
        self.scene = SceneParams.from_params(space.name, space.params.get("scene", {}))
        self.size = self.scene.size
        self.image_shape = (3, self.size, self.size)
        self.categories = list(space.groups["category"])
        self.colours = list(space.groups["colour"])
        self.rgb = torch.tensor([space.params["colours"][c] for c in self.colours], dtype=torch.float32) / 255.0
        samples = space.params.get("samples", {})
        self.seed = int(samples.get("seed", 0))
        self.balance = float(samples.get("balance", 0.5))
        mnist = load_mnist("test" if split == "test" else "train")
        images, labels = mnist.images, mnist.labels
        if split != "test":
            sl = slice(0, VAL_START) if split == "train" else slice(VAL_START, len(mnist))
            images, labels = images[sl], labels[sl]
        digits = [int(space.params["categories"][c]) for c in self.categories]
        self._glyphs: list[torch.Tensor] = []
        self._crops: list[torch.Tensor] = []
        self._source_index: list[torch.Tensor] = []  # glyph -> index in the MNIST file
        offset = VAL_START if split == "val" else 0
        for d in digits:
            g = images[labels == d]  # (n, 28, 28) uint8
            self._glyphs.append(g)
            self._source_index.append(torch.nonzero(labels == d).flatten() + offset)
            self._crops.append(_tight_crops(g))
        n_c, n_k = len(self.categories), len(self.colours)
        self.pair_masks = torch.stack([self.family.pair_mask(space, t) for t in space.tasks]) if space.tasks else (
            torch.zeros(0, n_c, n_k, dtype=torch.bool))
        self.everything = torch.ones(n_c, n_k, dtype=torch.bool)
        self.counts = task_sample_counts(space)
        self._crops_np = [c.numpy() for c in self._crops]
        self._choices: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # ---- which scenes ---------------------------------------------------------------------------
    def task_weights(self, task_ids: torch.Tensor) -> torch.Tensor:
        """Training-sampling weights of tasks: ``n_t ** balance`` (0: uniform, 1: by sample count)."""
        return self.counts[task_ids].double().pow(self.balance)

    def draw_train(self, pool: torch.Tensor, b: int, gen: torch.Generator) -> Scenes:
        """``b`` training scenes: tasks from ``pool`` by :meth:`task_weights`, then one of each task's
        ``n_t`` scenes uniformly."""
        w = self.task_weights(pool)
        tids = pool[torch.multinomial(w, b, replacement=True, generator=gen)]
        idx = (torch.rand(b, generator=gen, dtype=torch.float64) * self.counts[tids].double()).long()
        return self.scenes(tids, idx)

    def draw_generic(self, b: int, gen: torch.Generator) -> Scenes:
        """``b`` scenes with uniformly drawn (category, colour) pairs (pre-training), task id -1."""
        idx = torch.randint(0, 2**62, (b,), generator=gen)
        return self.scenes(torch.full((b,), -1, dtype=torch.long), idx)

    def task_scenes(self, task_ids: torch.Tensor, per_task: int, seed: int) -> Scenes:
        """A fixed evaluation set: ``per_task`` scenes of each task (indices offset by ``seed``)."""
        if per_task < 1:
            raise ConfigError(f"scenes per task must be >= 1, got {per_task}")
        tids = task_ids.repeat_interleave(per_task)
        idx = torch.arange(per_task).repeat(task_ids.shape[0]) + int(seed) * 1_000_003
        return self.scenes(tids, idx)

    def balanced(self, task_ids: torch.Tensor, per_task: int, seed: int) -> Scenes:
        """Scenes of the given tasks (export verification and calibration inputs; unlabelled)."""
        return self.task_scenes(task_ids, per_task, seed)

    # ---- drawing + rendering ------------------------------------------------------------------
    def scenes(self, task_ids: torch.Tensor, indices: torch.Tensor, *, with_alpha: bool = False) -> Scenes:
        """Scene ``indices[i]`` of task ``task_ids[i]`` (-1: the generic, unbiased scene stream).
        ``with_alpha``: also return each object's opacity map (for checks)."""
        layouts = [self._layout(int(t), int(j)) for t, j in zip(task_ids.tolist(), indices.tolist(), strict=True)]
        return self._render(layouts, task_ids.clone(), with_alpha)

    def _rng(self, task: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], task + 1, int(index) & ((1 << 62) - 1)])

    def _pair_choices(self, task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positive, hard-negative, any) (category, colour) index pairs of a task (-1: generic)."""
        if task not in self._choices:
            mask = self.everything if task < 0 else self.pair_masks[task]
            hard = (~mask) & (mask.any(dim=1)[:, None] | mask.any(dim=0)[None, :])
            self._choices[task] = (torch.nonzero(mask).numpy(), torch.nonzero(hard).numpy(),
                                   torch.nonzero(torch.ones_like(mask)).numpy())
        return self._choices[task]

    def _layout(self, task: int, index: int) -> dict[str, Any]:
        p = self.scene
        rng = self._rng(task, index)
        pos, hard, allp = self._pair_choices(task)
        n = int(rng.integers(p.min_objects, p.max_objects + 1))
        objects: list[tuple[int, int, int, float, float, float, float]] = []
        for _ in range(n):
            u = rng.random()
            if u < p.positive_share or (len(hard) == 0 and u < p.positive_share + p.hard_negative_share):
                cat, col = pos[rng.integers(len(pos))]
            elif u < p.positive_share + p.hard_negative_share:
                cat, col = hard[rng.integers(len(hard))]
            else:
                cat, col = allp[rng.integers(len(allp))]
            gi = int(rng.integers(len(self._glyphs[cat])))
            _r0, _c0, rh, cw = self._crops_np[cat][gi]
            for _try in range(20):
                h = float(rng.uniform(p.min_height, p.max_height))
                w = max(2.0, h * float(cw) / float(rh))
                if w > self.size:
                    continue
                x = float(rng.uniform(0, self.size - w))
                y = float(rng.uniform(0, self.size - h))
                if self._fits(objects, (x, y, w, h)):
                    objects.append((int(cat), int(col), gi, x, y, w, h))
                    break
        bg = {
            "hsv": (float(rng.random()), float(rng.uniform(0.0, 0.5)), float(rng.uniform(0.3, 0.7))),
            "low": rng.normal(0.0, 0.12, size=(3, 4, 4)).astype(np.float32),
            "texture": int(rng.integers(3)),  # 0 none, 1 stripes, 2 checks
            "tex_amp": float(rng.uniform(0.03, 0.12)),
            "tex_freq": float(rng.uniform(2.0, 8.0)),
            "tex_angle": float(rng.uniform(0, math.pi)),
            "tex_phase": float(rng.uniform(0, 2 * math.pi)),
            "grain": rng.normal(0.0, 0.03, size=(3, self.size, self.size)).astype(np.float32),
            "jitter": rng.normal(0.0, self.scene.colour_jitter, size=(max(1, len(objects)), 3)).astype(np.float32),
            "gain": rng.uniform(0.9, 1.1, size=max(1, len(objects))).astype(np.float32),
        }
        return {"objects": objects, "bg": bg}

    def _fits(self, objects: list, box: tuple[float, float, float, float]) -> bool:
        """A new box drawn on top may cover at most ``max_cover`` of any earlier box (summed)."""
        if not objects:
            return True
        x, y, w, h = box
        for i, (*_, xi, yi, wi, hi) in enumerate(objects):
            covered = 0.0
            for *_, xj, yj, wj, hj in [*objects[i + 1 :], (0, 0, 0, x, y, w, h)]:
                iw = min(xi + wi, xj + wj) - max(xi, xj)
                ih = min(yi + hi, yj + hj) - max(yi, yj)
                if iw > 0 and ih > 0:
                    covered += iw * ih
            if covered > self.scene.max_cover * wi * hi:
                return False
        return True

    def _render(self, layouts: list[dict[str, Any]], task_ids: torch.Tensor, with_alpha: bool = False) -> Scenes:
        b, s, n_max = len(layouts), self.size, self.scene.max_objects
        bgs = [lay["bg"] for lay in layouts]
        coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s  # pixel centres in [0, 1]
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
        base = torch.from_numpy(np.stack([_hsv_to_rgb(*bg["hsv"]) for bg in bgs]))[:, :, None, None]
        low = F.interpolate(torch.from_numpy(np.stack([bg["low"] for bg in bgs])), size=(s, s), mode="bilinear",
                            align_corners=False)
        images = base + low + torch.from_numpy(np.stack([bg["grain"] for bg in bgs]))
        tex = torch.tensor([[bg["texture"], bg["tex_amp"], bg["tex_freq"], bg["tex_angle"], bg["tex_phase"]]
                            for bg in bgs], dtype=torch.float32)
        kind, amp, freq, ang, phase = (v[:, None, None] for v in tex.unbind(1))
        u = xx * torch.cos(ang) + yy * torch.sin(ang)  # (B, S, S)
        v = -xx * torch.sin(ang) + yy * torch.cos(ang)
        stripes = torch.sin(freq * 2 * math.pi * u + phase)
        checks = torch.sign(stripes * torch.sin(freq * 2 * math.pi * v))
        pattern = torch.where(kind == 1, stripes, torch.where(kind == 2, checks, torch.zeros_like(stripes)))
        images = images + (amp * pattern)[:, None]
        boxes = torch.zeros(b, n_max, 4)
        valid = torch.zeros(b, n_max, dtype=torch.bool)
        category = torch.full((b, n_max), -1, dtype=torch.long)
        colour = torch.full((b, n_max), -1, dtype=torch.long)
        glyph = torch.full((b, n_max), -1, dtype=torch.long)
        alphas = torch.zeros(b, n_max, s, s) if with_alpha else None
        rows = [(i, k, *obj) for i, lay in enumerate(layouts) for k, obj in enumerate(lay["objects"])]
        if rows:
            ints = torch.tensor([r[:5] for r in rows], dtype=torch.long)  # scene, slot, cat, col, glyph
            geo = torch.tensor([r[5:] for r in rows], dtype=torch.float32)  # x, y, w, h
            sc, sl, cat, col, gi = ints.unbind(1)
            boxes[sc, sl] = geo
            valid[sc, sl] = True
            category[sc, sl], colour[sc, sl] = cat, col
            glyph[sc, sl] = torch.stack([self._source_index[c][g] for c, g in zip(cat.tolist(), gi.tolist(),
                                                                                  strict=True)])
            jitter = torch.from_numpy(np.concatenate([bg["jitter"][: len(lay["objects"])] for bg, lay in
                                                      zip(bgs, layouts, strict=True)]))
            gain = torch.from_numpy(np.concatenate([bg["gain"][: len(lay["objects"])] for bg, lay in
                                                    zip(bgs, layouts, strict=True)]))
            rgb = (self.rgb[col] * gain[:, None] + jitter).clamp(0, 1)  # (O, 3)
            glyphs = torch.stack([self._glyphs[c][g] for c, g in zip(cat.tolist(), gi.tolist(), strict=True)])
            crops = torch.stack([self._crops[c][g] for c, g in zip(cat.tolist(), gi.tolist(), strict=True)]).float()
            x0, y0, w, h = geo.unbind(1)
            r0, c0, rh, cw = crops.unbind(1)
            px = torch.arange(s, dtype=torch.float32) + 0.5  # canvas pixel centres
            gx = c0[:, None] + (px[None, :] - x0[:, None]) / w[:, None] * cw[:, None]  # (O, S) glyph columns
            gy = r0[:, None] + (px[None, :] - y0[:, None]) / h[:, None] * rh[:, None]
            grid = torch.stack(torch.broadcast_tensors(
                (gx / 28.0 * 2 - 1)[:, None, :], (gy / 28.0 * 2 - 1)[:, :, None]), dim=-1)  # (O, S, S, 2)
            alpha = F.grid_sample(glyphs.float().div_(255.0)[:, None], grid, mode="bilinear", padding_mode="zeros",
                                  align_corners=False)[:, 0]
            inside_x = (px[None, :] >= x0[:, None]) & (px[None, :] <= x0[:, None] + w[:, None])
            inside_y = (px[None, :] >= y0[:, None]) & (px[None, :] <= y0[:, None] + h[:, None])
            alpha = (alpha * (inside_y[:, :, None] & inside_x[:, None, :])).clamp_(0, 1)
            if alphas is not None:
                alphas[sc, sl] = alpha
            for k in range(n_max):  # later objects are drawn on top
                at = sl == k
                if not at.any():
                    continue
                idx = sc[at]
                a = alpha[at][:, None]  # (O_k, 1, S, S)
                images[idx] = images[idx] * (1 - a) + rgb[at][:, :, None, None] * a
        return Scenes(images.clamp_(0, 1), boxes, valid, category, colour, task_ids, glyph, alphas)


def _tight_crops(glyphs: torch.Tensor) -> torch.Tensor:
    """(n, 4) int: first row, first column, rows, columns of each glyph's pixels >= GLYPH_THRESHOLD."""
    on = glyphs >= GLYPH_THRESHOLD
    rows, cols = on.any(dim=2), on.any(dim=1)  # (n, 28)
    ar = torch.arange(28)
    big = torch.full_like(ar, 28)
    r0 = torch.where(rows, ar, big).min(dim=1).values
    r1 = torch.where(rows, ar, -1).max(dim=1).values
    c0 = torch.where(cols, ar, big).min(dim=1).values
    c1 = torch.where(cols, ar, -1).max(dim=1).values
    empty = r1 < 0
    r0, c0 = torch.where(empty, 0, r0), torch.where(empty, 0, c0)
    r1, c1 = torch.where(empty, 27, r1), torch.where(empty, 27, c1)
    return torch.stack([r0, c0, r1 - r0 + 1, c1 - c0 + 1], dim=1)


def task_sample_counts(space: TaskSpace) -> torch.Tensor:
    """(tasks,) training scenes per task: log-uniform in [samples.min, samples.max], from samples.seed."""
    samples = space.params.get("samples", {})
    lo, hi, seed = int(samples.get("min", 1)), int(samples.get("max", 1)), int(samples.get("seed", 0))
    out = []
    for i, _t in enumerate(space.tasks):
        u = np.random.default_rng([seed, 7, i]).random()
        out.append(int(round(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))))
    return torch.tensor(out, dtype=torch.long)


def same_labels(space: TaskSpace, a: Task, b: Task, scenes: Scenes) -> bool:
    """True when tasks ``a`` and ``b`` label every object of ``scenes`` the same (then one of them
    is not really a different task on this data)."""
    fam = AttributedScenes()
    ma, mb = fam.pair_mask(space, a), fam.pair_mask(space, b)
    n = len(scenes)
    pa = scenes.positives(ma[None].expand(n, -1, -1))
    pb = scenes.positives(mb[None].expand(n, -1, -1))
    return bool(torch.equal(pa, pb))
