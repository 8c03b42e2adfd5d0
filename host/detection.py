"""Detection: CenterNet targets and loss, decoding of the detector's output, mAP@0.5 with COCOeval.

The gated detector (:mod:`host.supernets.centernet`) outputs one tensor ``(B, K + 4, H, W)`` at stride
``s``: ``K`` centre-heatmap logits (one per category), then ``w, h`` (box size in output cells) and
``dx, dy`` (the centre's offset inside its cell). :func:`decode` turns it into boxes:

    peaks   = sigmoid(heatmap) where it equals its 3x3 max-pool (a cheap NMS), top ``max_dets``
    centre  = ((x + dx) * s, (y + dy) * s); size = (w * s, h * s)
    box     = [cx - w/2, cy - h/2, w, h]  (COCO [x, y, w, h], pixels), score = the peak's sigmoid

Training targets follow CenterNet (Zhou et al., "Objects as Points"): a Gaussian at each positive
object's centre cell in its category's channel (radius from the box size at min-overlap 0.7), the
penalty-reduced focal loss on the heatmaps, L1 on size (weight 0.1) and offset at the centre cells.

:func:`coco_map50` scores detections with pycocotools' own ``COCOeval`` (bbox, IoU 0.5, area "all",
100 detections per image): mean over the categories that have ground truth of the 101-point
interpolated precision, exactly COCO's AP@0.5 (``stats[1]``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from host.errors import ConfigError

SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0
MIN_OVERLAP = 0.7
MAX_DETS = 100


# ---- targets and loss ---------------------------------------------------------------------------


def gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = MIN_OVERLAP) -> torch.Tensor:
    """CenterNet's radius: the largest centre shift keeping IoU >= min_overlap (three cases, min)."""
    a1, b1 = 1.0, h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


@dataclass
class Targets:
    """heatmap (B, K, H, W) in [0, 1] (1 exactly at centres); index (B, N) flat centre cell; mask (B, N)
    positives; size (B, N, 2) in cells; offset (B, N, 2) in [0, 1)."""

    heatmap: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor


def make_targets(boxes: torch.Tensor, classes: torch.Tensor, positive: torch.Tensor, num_classes: int,
                 out_hw: tuple[int, int], stride: int) -> Targets:
    """CenterNet targets for ``boxes`` (B, N, 4) COCO xywh pixels of class ``classes`` (B, N) where
    ``positive`` (B, N)."""
    b, n = positive.shape
    oh, ow = out_hw
    w, h = boxes[..., 2] / stride, boxes[..., 3] / stride
    cx = boxes[..., 0] / stride + w / 2
    cy = boxes[..., 1] / stride + h / 2
    ix = cx.floor().clamp(0, ow - 1)
    iy = cy.floor().clamp(0, oh - 1)
    radius = gaussian_radius(h, w).floor().clamp(min=0)
    sigma = (2 * radius + 1) / 6
    dev = boxes.device
    xs = torch.arange(ow, dtype=torch.float32, device=dev).view(1, 1, 1, ow)
    ys = torch.arange(oh, dtype=torch.float32, device=dev).view(1, 1, oh, 1)
    dx, dy = xs - ix[..., None, None], ys - iy[..., None, None]
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma[..., None, None] ** 2))
    g = g * ((dx.abs() <= radius[..., None, None]) & (dy.abs() <= radius[..., None, None]))
    g = g * positive[..., None, None]
    heat = torch.zeros(b, num_classes, oh, ow, device=dev)
    for k in range(num_classes):
        sel = (classes == k)[..., None, None]
        heat[:, k] = (g * sel).amax(dim=1) if n else heat[:, k]
    return Targets(
        heatmap=heat,
        index=(iy * ow + ix).long(),
        mask=positive.clone(),
        size=torch.stack([w, h], dim=-1),
        offset=torch.stack([cx - ix, cy - iy], dim=-1),
    )


def focal_loss(logits: torch.Tensor, target: torch.Tensor, num_pos: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), summed / max(1, positives)."""
    pos = target.eq(1).float()
    log_p = F.logsigmoid(logits)
    log_1p = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = (1 - p).pow(2) * log_p * pos
    neg_loss = p.pow(2) * log_1p * (1 - target).pow(4) * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos.clamp(min=1)


def detection_loss(out: torch.Tensor, t: Targets, num_classes: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal heatmap loss + 0.1 L1 size + L1 offset on the centre cells of positives."""
    b = out.shape[0]
    num_pos = t.mask.sum().float()
    hm = focal_loss(out[:, :num_classes], t.heatmap, num_pos)
    reg = out[:, num_classes : num_classes + 4].flatten(2)  # (B, 4, H*W)
    pred = reg.gather(2, t.index[:, None, :].expand(b, 4, -1)).permute(0, 2, 1)  # (B, N, 4)
    m = t.mask[..., None].float()
    denom = num_pos.clamp(min=1)
    size = (F.l1_loss(pred[..., :2], t.size, reduction="none") * m).sum() / denom
    offset = (F.l1_loss(pred[..., 2:], t.offset, reduction="none") * m).sum() / denom
    loss = hm + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset
    return loss, {"hm": float(hm.detach()), "size": float(size.detach()), "off": float(offset.detach())}


# ---- decoding -------------------------------------------------------------------------------------


@dataclass
class Detections:
    """Per image: boxes (M, 4) COCO xywh pixels, scores (M,), classes (M,) category indices."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


@torch.no_grad()
def decode(out: torch.Tensor, num_classes: int, stride: int, max_dets: int = MAX_DETS) -> list[Detections]:
    """Detections of a batch of detector outputs (B, K + 4, H, W), best ``max_dets`` per image."""
    if out.dim() != 4 or out.shape[1] != num_classes + 4:
        raise ConfigError(f"detector output must be (batch, {num_classes} + 4, H, W), got {tuple(out.shape)}")
    b, _, h, w = out.shape
    heat = torch.sigmoid(out[:, :num_classes].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(max_dets, num_classes * h * w)
    scores, idx = peaks.flatten(1).topk(k, dim=1)  # (B, k)
    cls = idx // (h * w)
    pix = idx % (h * w)
    ys, xs = (pix // w).float(), (pix % w).float()
    reg = out[:, num_classes : num_classes + 4].float().flatten(2)  # (B, 4, H*W)
    vals = reg.gather(2, pix[:, None, :].expand(b, 4, k))  # (B, 4, k)
    bw, bh = vals[:, 0].clamp(min=0) * stride, vals[:, 1].clamp(min=0) * stride
    cx, cy = (xs + vals[:, 2]) * stride, (ys + vals[:, 3]) * stride
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, bw, bh], dim=-1)  # (B, k, 4)
    out_list = []
    for i in range(b):
        keep = scores[i] > 0
        out_list.append(Detections(boxes[i][keep], scores[i][keep], cls[i][keep]))
    return out_list


# ---- mAP via pycocotools -------------------------------------------------------------------------


def coco_map50(
    gt_boxes: Sequence[torch.Tensor], gt_classes: Sequence[torch.Tensor], detections: Sequence[Detections],
    num_classes: int,
) -> dict[str, Any]:
    """COCO AP@0.5 (pycocotools COCOeval, bbox, area all, 100 detections per image).

    gt_boxes[i]: (G_i, 4) COCO xywh of image i's ground truth, gt_classes[i]: (G_i,) category indices.
    Returns {"map50": mean over categories with ground truth (None if no image has any), "per_class":
    {index: AP or None}, "gt": objects, "images": images}. Images without ground truth still count
    (their detections are false positives).
    """
    from host.exports._util import require

    COCO = require("pycocotools.coco", "mAP@0.5 of detectors (COCOeval)", "host", "pycocotools").COCO
    COCOeval = require("pycocotools.cocoeval", "mAP@0.5 of detectors (COCOeval)", "host", "pycocotools").COCOeval

    if not (len(gt_boxes) == len(gt_classes) == len(detections)):
        raise ConfigError("coco_map50 needs the same number of images in gt_boxes, gt_classes and detections")
    images = [{"id": i + 1, "width": 1, "height": 1} for i in range(len(gt_boxes))]
    anns, dets = [], []
    for i, (boxes, classes) in enumerate(zip(gt_boxes, gt_classes, strict=True)):
        for box, c in zip(boxes.tolist(), classes.tolist(), strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "bbox": box,
                         "area": float(box[2] * box[3]), "iscrowd": 0})
    for i, d in enumerate(detections):
        for box, s, c in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist(), strict=True):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": box, "score": float(s)})
    result: dict[str, Any] = {"images": len(images), "gt": len(anns), "detections": len(dets)}
    if not anns:
        result.update(map50=None, per_class={k: None for k in range(num_classes)})
        return result
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
        gt.createIndex()
        if not dets:
            result.update(map50=0.0, per_class={
                k: (0.0 if any(a["category_id"] == k + 1 for a in anns) else None) for k in range(num_classes)})
            return result
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.maxDets = [MAX_DETS]
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]  # (recall thresholds, categories)
    per_class: dict[int, float | None] = {}
    for k in range(num_classes):
        p = prec[:, k]
        per_class[k] = float(p[p > -1].mean()) if (p > -1).any() else None
    valid = prec[prec > -1]
    result.update(map50=float(valid.mean()) if valid.size else None, per_class=per_class)
    return result


# ---- the training objective of an attributed_scenes space -----------------------------------------


class PairHead(nn.Module):
    """Pre-training head: one heatmap per (category, colour) pair from the heatmap head's hidden filters."""

    def __init__(self, hidden: int, pairs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(hidden, pairs, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.constant_(self.conv.bias, -2.19)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h)  # (B, hidden, H, W) -> (B, pairs, H, W)


class DetectionPretrainModel(nn.Module):
    """Supernet with given (random) gates; the pair head reads the gated hidden filters of its heatmap head."""

    def __init__(self, supernet: nn.Module, aux: PairHead) -> None:
        super().__init__()
        self.supernet, self.aux = supernet, aux

    def forward(self, images: torch.Tensor, gates: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        out_conv = self.supernet.heatmap.out
        handle = out_conv.register_forward_hook(lambda _m, inp, _o: captured.__setitem__("h", inp[0]))
        try:
            out = self.supernet(images, gates=gates)
        finally:
            handle.remove()
        return self.aux(captured["h"]), out


class DetectionObjective:
    """What training optimises for an ``attributed_scenes`` space (host.training calls these hooks).

    pre-training: scenes with uniformly drawn pairs, random gates, every object a positive of its
    category, plus a pair head (one heatmap per (category, colour)) on the heatmap head's hidden filters
    so that they learn colour as well as shape. Joint: task scenes, the task's positives only.
    """

    def __init__(self, space: Any) -> None:
        from host.tasks import get_family

        self.space = space
        self.family = get_family(space.family)
        self.num_classes = len(space.groups["category"])
        self.num_colours = len(space.groups["colour"])
        self.pair_masks = torch.stack([self.family.pair_mask(space, t) for t in space.tasks])
        self._val: Any = None

    # -- models --------------------------------------------------------------------------------------
    def build_supernet(self, backbone: str) -> nn.Module:
        from host.supernets import build_supernet, get_config

        kind, cfg = get_config(backbone)
        if kind != "centernet":
            raise ConfigError(
                f"task space {self.space.name} trains a detector; backbone {backbone!r} is a {kind} classifier. "
                "Use a detection config such as centernet_attrod")
        c, h, _w = self.family.image_shape(self.space)
        over = {}
        if (cfg.in_chans, cfg.image_size, cfg.num_classes) != (c, h, self.num_classes):
            over = {"in_chans": c, "image_size": h, "num_classes": self.num_classes}
        return build_supernet(backbone, **over)

    def build_aux(self, supernet: nn.Module) -> nn.Module:
        return PairHead(supernet.config.head_width, self.num_classes * self.num_colours)

    def pretrain_module(self, supernet: nn.Module, aux: nn.Module) -> nn.Module:
        return DetectionPretrainModel(supernet, aux)

    # -- steps ---------------------------------------------------------------------------------------
    def _targets(self, scenes: Any, out: torch.Tensor, classes: torch.Tensor, positive: torch.Tensor,
                 num_classes: int) -> Targets:
        stride = scenes.images.shape[-1] // out.shape[-1]
        return make_targets(scenes.boxes, classes, positive, num_classes, tuple(out.shape[-2:]), stride)

    def draw_pretrain(self, sampler: Any, b: int, gen: torch.Generator) -> Any:
        return sampler.draw_generic(b, gen)

    def pretrain_loss(self, outputs: tuple[torch.Tensor, torch.Tensor], scenes: Any) -> tuple[torch.Tensor, dict]:
        pairs, out = outputs
        t = self._targets(scenes, out, scenes.category, scenes.valid, self.num_classes)
        loss, parts = detection_loss(out, t, self.num_classes)
        pair_cls = scenes.category.clamp(min=0) * self.num_colours + scenes.colour.clamp(min=0)
        tp = self._targets(scenes, pairs, pair_cls, scenes.valid, pairs.shape[1])
        aux = focal_loss(pairs, tp.heatmap, tp.mask.sum().float())
        return loss + aux, {**parts, "pair": float(aux.detach())}

    def draw_joint(self, sampler: Any, b: int, gen: torch.Generator, seen: torch.Tensor, extra: torch.Tensor,
                   extra_fraction: float) -> Any:
        if len(extra) and extra_fraction > 0:
            n_extra = int(torch.binomial(torch.tensor(float(b)), torch.tensor(extra_fraction), generator=gen))
            parts = [sampler.draw_train(seen, b - n_extra, gen)] if b - n_extra else []
            if n_extra:
                parts.append(sampler.draw_train(extra, n_extra, gen))
            return _cat_scenes(parts)
        return sampler.draw_train(seen, b, gen)

    def positives(self, scenes: Any) -> torch.Tensor:
        masks = self.pair_masks.to(scenes.task_ids.device)
        return scenes.positives(masks[scenes.task_ids])

    def joint_loss(self, out: torch.Tensor, scenes: Any) -> tuple[torch.Tensor, dict]:
        t = self._targets(scenes, out, scenes.category, self.positives(scenes), self.num_classes)
        return detection_loss(out, t, self.num_classes)

    # -- validation ----------------------------------------------------------------------------------
    def validate(self, models: Any, cfg: Any) -> dict[str, float]:
        """Mean mAP@0.5 and activation ratio on the val split, seen and unseen tasks, at ``cfg.eval_limit``
        (keys ``seen_map50`` ...) and each of ``cfg.extra_eval_limits`` (keys ``seen_map50@0.1`` ...);
        ``select`` (what the best checkpoint maximises) is the mean seen mAP@0.5 over those limits."""
        from host.tasks import get_family

        if self._val is None:
            ids = torch.tensor([i for i, t in enumerate(self.space.tasks) if t.split in ("seen", "unseen")])
            sampler = get_family(self.space.family).make_sampler(self.space, "val")
            self._val = sampler.task_scenes(ids, cfg.eval_per_task, seed=cfg.seed + 7919)
        limits = [float(cfg.eval_limit), *(float(x) for x in getattr(cfg, "extra_eval_limits", ()))]
        res = evaluate_tasks(models.supernet, models.assembler, self.space, self._val, limits)
        out: dict[str, float] = {}
        seen_scores = []
        for i, lim in enumerate(limits):
            suffix = "" if i == 0 else f"@{lim:g}"
            rows = res[lim]
            for split in ("seen", "unseen"):
                vals = [r for tid, r in rows.items() if self.space.tasks[tid].split == split and r["map50"] is not None]
                if vals:
                    out[f"{split}_map50{suffix}"] = sum(r["map50"] for r in vals) / len(vals)
                    out[f"{split}_ratio{suffix}"] = sum(r["ratio"] for r in vals) / len(vals)
            seen_scores.append(out.get(f"seen_map50{suffix}", 0.0))
        out["select"] = sum(seen_scores) / len(seen_scores)  # what the best checkpoint maximises
        return out


def _cat_scenes(parts: list[Any]) -> Any:
    from host.tasks.attrod import Scenes

    return Scenes(*(torch.cat([getattr(p, f) for p in parts]) for f in
                    ("images", "boxes", "valid", "category", "colour", "task_ids", "glyph")))


def scene_ground_truth(scenes: Any, masks: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: boxes and category indices of the objects matching its pair mask (masks (B, C, K))."""
    pos = scenes.positives(masks)
    return ([scenes.boxes[i][pos[i]] for i in range(len(scenes))],
            [scenes.category[i][pos[i]] for i in range(len(scenes))])


@torch.no_grad()
def evaluate_tasks(supernet: nn.Module, assembler: nn.Module, space: Any, scenes: Any, limits: list[float],
                   *, batch_size: int = 256) -> dict[float, dict[int, dict[str, Any]]]:
    """Per limit and task id: mAP@0.5 of the gated supernet (hard gates from the assembler) on the task's
    scenes in ``scenes`` (grouped by ``scenes.task_ids``), and the generated activation ratio."""
    from host.tasks import get_family

    fam = get_family(space.family)
    num_classes = len(space.groups["category"])
    was = supernet.training, assembler.training
    supernet.eval()
    assembler.eval()
    try:
        dev = next(supernet.parameters()).device
        task_ids = torch.unique(scenes.task_ids.cpu())
        enc = space.encode([space.tasks[i] for i in task_ids.tolist()]).to(dev)
        out: dict[float, dict[int, dict[str, Any]]] = {}
        for limit in limits:
            res = assembler.generate(enc, torch.full((enc.shape[0],), float(limit), dtype=torch.float64, device=dev))
            rows: dict[int, dict[str, Any]] = {}
            for j, tid in enumerate(task_ids.tolist()):
                sel = torch.nonzero(scenes.task_ids.cpu() == tid).flatten()
                sub = scenes.select(sel)
                gates = res.request(j)
                dets: list[Detections] = []
                for s in range(0, len(sub), batch_size):
                    y = supernet(sub.images[s : s + batch_size].to(dev), gates=gates).float().cpu()
                    stride = sub.images.shape[-1] // y.shape[-1]
                    dets += decode(y, num_classes, stride)
                mask = fam.pair_mask(space, space.tasks[tid])[None].expand(len(sub), -1, -1)
                gb, gc = scene_ground_truth(sub, mask)
                m = coco_map50(gb, gc, dets, num_classes)
                rows[tid] = {"map50": m["map50"], "ratio": float(res.ratios[j]), "gt": m["gt"]}
            out[float(limit)] = rows
        return out
    finally:
        supernet.train(was[0])
        assembler.train(was[1])


# ---- generated models -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_generated_detection(
    factory: Any,
    limits: list[float],
    *,
    tasks: list[str] | None = None,
    per_task: int = 100,
    seed: int = 1234,
    split: str = "test",
    batch_size: int = 256,
) -> dict[str, Any]:
    """mAP@0.5 and activation ratio of generated compact detectors on the space's ``split``.

    For every (task, limit): generate the gates, extract the static compact model and run it on
    ``per_task`` scenes of that task (MNIST glyphs the model never saw for the test split), decode and
    score the task's objects with COCOeval. Returns {"metric": "map50", "seen"/"unseen": {limit:
    {"map50", "activation_ratio", "max_activation_ratio", "tasks"}}, "per_limit": {limit: {task: {...}}}}.
    """
    import statistics

    from host.extraction import extract
    from host.generate import limit_key

    space = factory.space
    fam = space_family(space)
    names = tasks if tasks is not None else space.names("seen") + space.names("unseen")
    task_objs = [space.task(n) for n in names]
    if any(t not in space.tasks for t in task_objs):
        raise ConfigError("evaluation needs tasks listed in the space (seen/unseen/extra), not composed ones")
    ids = torch.tensor([space.tasks.index(t) for t in task_objs], dtype=torch.long)
    scenes = fam.make_sampler(space, split).task_scenes(ids, per_task, seed=seed)
    per_limit: dict[str, dict[str, dict[str, Any]]] = {}
    for lim in limits:
        res = factory.gates(task_objs, [lim] * len(task_objs))
        rows: dict[str, dict[str, Any]] = {}
        for i, t in enumerate(task_objs):
            compact = extract(factory.models.supernet, res.request(i))
            sub = scenes.select(torch.nonzero(scenes.task_ids == ids[i]).flatten())
            m = score_detector(compact, space, t, sub, batch_size=batch_size)
            rows[t.name] = {
                "map50": m["map50"],
                "per_category": {space.groups["category"][k]: v for k, v in m["per_class"].items() if v is not None},
                "objects": m["gt"],
                "activation_ratio": float(res.ratios[i]),
                "params": compact.spec.params(),
                "macs": compact.spec.macs(),
                "split": t.split,
            }
        per_limit[limit_key(lim)] = rows
    out: dict[str, Any] = {"metric": "map50", "per_limit": per_limit}
    for split_name in ("seen", "unseen"):
        out[split_name] = {}
        for lim in limits:
            rows_l = [r for r in per_limit[limit_key(lim)].values() if r["split"] == split_name]
            scored = [r["map50"] for r in rows_l if r["map50"] is not None]
            if rows_l:
                out[split_name][limit_key(lim)] = {
                    "map50": statistics.fmean(scored) if scored else None,
                    "activation_ratio": statistics.fmean(r["activation_ratio"] for r in rows_l),
                    "max_activation_ratio": max(r["activation_ratio"] for r in rows_l),
                    "tasks": len(rows_l),
                }
    out["per_task_samples"] = per_task
    out["data_split"] = split
    out["checkpoint"] = str(factory.checkpoint)
    out["checkpoint_step"] = factory.meta.get("train_state", {}).get("step")
    return out


@torch.no_grad()
def score_detector(model: nn.Module, space: Any, task: Any, scenes: Any, *, batch_size: int = 256) -> dict[str, Any]:
    """COCO AP@0.5 (:func:`coco_map50`) of ``model``'s decoded detections on ``scenes``, the ground truth
    being the objects of ``task``."""
    num_classes = len(space.groups["category"])
    dets: list[Detections] = []
    for s in range(0, len(scenes), batch_size):
        y = model(scenes.images[s : s + batch_size])
        dets += decode(y, num_classes, scenes.images.shape[-1] // y.shape[-1])
    mask = space_family(space).pair_mask(space, task)[None].expand(len(scenes), -1, -1)
    gb, gc = scene_ground_truth(scenes, mask)
    return coco_map50(gb, gc, dets, num_classes)


def space_family(space: Any) -> Any:
    from host.tasks import get_family

    return get_family(space.family)
