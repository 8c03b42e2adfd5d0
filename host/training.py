"""Joint training of a gated supernet and its module assembler (docs/design.md §3).

Two phases, one optimizer, one step counter:

1. **pre-train** (``pretrain_steps``): the backbone learns what every task of the space is built
   from. For a ``digit_grid_count`` space that is the number of cells holding each class of digit
   (a small auxiliary head on the pooled features, dropped afterwards). Each sample runs with random
   hard gates (keep ratio drawn per sample) so that features survive the removal of modules.
2. **joint**: mixed, shuffled batches over all training tasks (seen + extra attribute combinations),
   a limit drawn per sample, the assembler producing each sample's gates from ``<task, limit>``, and
   ``L = CE + λ·GL`` with ``GL = (ratio − limit)²`` only above the limit, the ratio being that of the
   hard gates (straight-through gradient). The supernet's gates follow Improved SemHash (random half
   hard with straight-through, half soft). A short curriculum starts the
   limits high and widens them to ``limit_min``.

Every batch is a pure function of ``(seed, step, rank)``, the learning rate a pure function of the
step, and a checkpoint holds weights, BN statistics and optimizer state, so ``--resume`` continues
exactly where the last checkpoint left off. Under ``torchrun`` (``WORLD_SIZE > 1``) the same code
trains with DistributedDataParallel (gloo on CPU, NCCL on CUDA: ``--target cuda``, one GPU per process,
``LOCAL_RANK`` picks it); rank 0 writes checkpoints. Batches are always drawn on the CPU from the step's
generator and then moved, so a run's data do not depend on where it trains; ``--amp`` runs the forward
passes under bfloat16 autocast on CUDA. Exact resume is guaranteed on the CPU; CUDA kernels may differ in
the last bits between runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from host.assembler import ModuleAssembler, gate_loss, hard_gates_st, semhash_gates
from host.checkpoint import RUN_INDEX, Checkpoint, read_checkpoint, write_checkpoint
from host.errors import ConfigError, SpecError
from host.fileio import atomic_write_text
from host.models import AuxCountHead, Models, build_models, final_linear, load_models, warm_start
from host.tasks import TaskSpace, get_family, load_space

TRAIN_CONFIG_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint)."""

    space: str = "numvqa"
    backbone: str = "resnet_numvqa"
    seed: int = 0
    steps: int = 6000  # total optimizer steps, pre-training included
    pretrain_steps: int = 600
    batch_size: int = 128  # global: split over DDP ranks
    lr: float = 2e-3
    pretrain_lr: float = 2e-3
    warmup_steps: int = 50
    grad_clip: float = 5.0
    gate_lambda: float = 100.0
    limit_min: float = 0.03
    limit_max: float = 1.0
    low_limit_fraction: float = 0.0  # share of joint samples whose limit is drawn from [lo, low_limit_max]
    low_limit_max: float = 0.35
    augment: bool = False  # training inputs jittered by the family's augmentation (e.g. small affine per digit)
    curriculum_steps: int = 300  # joint steps over which limit_min widens from curriculum_limit_start
    curriculum_limit_start: float = 0.3
    extra_fraction: float = 0.2  # share of samples from extra attribute combinations
    pretrain_keep_min: float = 0.2  # pre-training keeps each module with p ~ U[keep_min, 1]
    hidden: int = 128
    experts: int = 4
    limit_dims: int = 16
    checkpoint_every: int = 100
    eval_every: int = 250
    eval_per_task: int = 24
    eval_limit: float = 0.3
    extra_eval_limits: tuple[float, ...] = ()  # validated too; the best checkpoint maximises the mean seen accuracy
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.pretrain_steps < 0:
            raise ConfigError("steps must be >= 1 and pretrain_steps >= 0")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2 (BatchNorm needs more than one sample)")
        if not 0 < self.limit_min <= self.limit_max <= 1:
            raise ConfigError("limits need 0 < limit_min <= limit_max <= 1")
        self.extra_eval_limits = tuple(float(v) for v in self.extra_eval_limits)
        for v in (self.eval_limit, *self.extra_eval_limits):
            if not 0 < v <= 1:
                raise ConfigError(f"validation limit {v} is outside (0, 1]")
        if not 0 <= self.low_limit_fraction <= 1 or not self.limit_min < self.low_limit_max <= self.limit_max:
            raise ConfigError(
                "low_limit_fraction must lie in [0, 1] and low_limit_max in (limit_min, limit_max]")
        if self.checkpoint_every < 1 or self.eval_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("checkpoint_every, eval_every and keep_checkpoints must be >= 1")
        if self.eval_per_task < 2 or self.eval_per_task % 2:
            raise ConfigError("eval_per_task must be an even number >= 2")

    def to_json(self) -> dict:
        return {**asdict(self), "version": TRAIN_CONFIG_VERSION}

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        if int(data.get("version", 0)) > TRAIN_CONFIG_VERSION:
            raise SpecError(f"training config version {data.get('version')} is newer than this NN-Factory")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---- training wrappers ----------------------------------------------------------------------------


class PretrainModel(nn.Module):
    """Supernet with random gates; the auxiliary head reads the classifier's input features."""

    def __init__(self, supernet: nn.Module, aux: AuxCountHead) -> None:
        super().__init__()
        self.supernet, self.aux = supernet, aux
        self._head = final_linear(supernet)[1]

    def forward(self, images: torch.Tensor, gates: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handle = self._head.register_forward_hook(lambda _m, inp, _o: captured.__setitem__("x", inp[0]))
        try:
            out = self.supernet(images, gates=gates)
        finally:
            handle.remove()
        return self.aux(captured["x"]), out


class JointModel(nn.Module):
    """Assembler + supernet: requests in, answers out (gates via Improved SemHash)."""

    def __init__(self, supernet: nn.Module, assembler: ModuleAssembler) -> None:
        super().__init__()
        self.supernet, self.assembler = supernet, assembler

    def forward(
        self, images: torch.Tensor, tasks: torch.Tensor, limits: torch.Tensor, use_hard: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Returns (answers, the gates the supernet used, hard straight-through gates for the ratio)."""
        logits = self.assembler(tasks, limits)
        gates = [semhash_gates(w, use_hard) for w in logits]
        return self.supernet(images, gates=gates), gates, [hard_gates_st(w) for w in logits]


# ---- helpers ------------------------------------------------------------------------------------


def step_generator(seed: int, step: int, rank: int, stream: str = "train") -> torch.Generator:
    """The RNG of one step on one rank: a pure function of its arguments (exact resume)."""
    digest = hashlib.sha256(f"{stream}:{seed}:{step}:{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Warm-up then cosine, restarted at the start of the joint phase."""
    if step < cfg.pretrain_steps:
        base, start, length = cfg.pretrain_lr, 0, cfg.pretrain_steps
    else:
        base, start, length = cfg.lr, cfg.pretrain_steps, max(1, cfg.steps - cfg.pretrain_steps)
    s = step - start
    if s < cfg.warmup_steps:
        return base * (s + 1) / cfg.warmup_steps
    frac = min(1.0, (s - cfg.warmup_steps) / max(1, length - cfg.warmup_steps))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def batch_to(batch: Any, device: torch.device) -> Any:
    """A copy of a sampler's batch (a dataclass of tensors) with every tensor field on ``device``."""
    import dataclasses

    if device.type == "cpu" or not dataclasses.is_dataclass(batch):
        return batch
    moved = {f.name: getattr(batch, f.name).to(device, non_blocking=True) for f in dataclasses.fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved)


def as_float(out: Any) -> Any:
    """Model outputs (tensors, or tuples/lists of them) in float32, e.g. after bfloat16 autocast."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: as_float(v) for k, v in out.items()}
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a NamedTuple
        return type(out)(*(as_float(o) for o in out))
    if isinstance(out, (tuple, list)):
        return type(out)(as_float(o) for o in out)
    return out


def resolve_target(target: str, *, amp: bool = False) -> torch.device:
    """The device a training process computes on: ``cpu``, ``cuda`` (this process's ``LOCAL_RANK`` GPU
    under torchrun) or ``cuda:N``. A ConfigError that says what to do when it cannot be used."""
    name = str(target).strip().lower()
    if name == "cpu":
        if amp:
            raise ConfigError("--amp (bfloat16 autocast) is offered for --target cuda only; drop --amp on the CPU")
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"unknown training target {target!r}; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--target {target} asks for a CUDA GPU, but this PyTorch sees none (torch.cuda.is_available() is "
            f"False; torch {torch.__version__}, built with CUDA {torch.version.cuda or 'no'}); train with "
            "--target cpu, or install a CUDA build of torch on a machine with a GPU"
        )
    index = int(name[5:]) if ":" in name else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--target {target}: GPU {index} does not exist ({torch.cuda.device_count()} visible)")
    return torch.device("cuda", index)


# ---- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    models: Models,
    batch: Any,
    limits: list[float],
    *,
    batch_size: int = 256,
) -> dict[float, dict[str, Any]]:
    """Hard-gate accuracy per (limit, task) on a fixed labelled set, gates from the assembler.

    Returns {limit: {"per_task": {task_id: acc}, "ratio": {task_id: generated ratio}}}.
    """
    net, asm, space = models.supernet, models.assembler, models.space
    dev = next(net.parameters()).device
    was = net.training, asm.training
    net.eval()
    asm.eval()
    try:
        task_ids = torch.unique(batch.task_ids)
        enc = space.encode([space.tasks[i] for i in task_ids.tolist()]).to(dev)
        row_of = torch.full((len(space.tasks),), -1, dtype=torch.long)
        row_of[task_ids] = torch.arange(task_ids.shape[0])
        out: dict[float, dict[str, Any]] = {}
        for limit in limits:
            res = asm.generate(enc, torch.full((enc.shape[0],), float(limit), dtype=torch.float64, device=dev))
            correct = torch.zeros(task_ids.shape[0])
            count = torch.zeros(task_ids.shape[0])
            for s in range(0, batch.labels.shape[0], batch_size):
                tid = batch.task_ids[s : s + batch_size]
                rows = row_of[tid]
                gates = [g[rows.to(dev)] for g in res.gates]
                pred = net(batch.images[s : s + batch_size].to(dev), gates=gates).argmax(dim=1).cpu()
                ok = (pred == batch.labels[s : s + batch_size]).float()
                correct.index_add_(0, rows, ok)
                count.index_add_(0, rows, torch.ones_like(ok))
            acc = correct / count.clamp(min=1)
            out[float(limit)] = {
                "per_task": {int(t): float(a) for t, a in zip(task_ids.tolist(), acc.tolist(), strict=True)},
                "ratio": {int(t): float(r) for t, r in zip(task_ids.tolist(), res.ratios.cpu().tolist(), strict=True)},
            }
        return out
    finally:
        net.train(was[0])
        asm.train(was[1])


def split_means(space: TaskSpace, result: dict[str, Any]) -> dict[str, float]:
    """Mean accuracy and ratio over seen and unseen tasks for one limit's result."""
    out: dict[str, float] = {}
    for split in ("seen", "unseen"):
        ids = [i for i, t in enumerate(space.tasks) if t.split == split and i in result["per_task"]]
        if ids:
            out[f"{split}_acc"] = sum(result["per_task"][i] for i in ids) / len(ids)
            out[f"{split}_ratio"] = sum(result["ratio"][i] for i in ids) / len(ids)
    return out


# ---- the trainer --------------------------------------------------------------------------------


class Trainer:
    """Runs (or resumes) one training run into a run directory."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, *, resume: bool = False, threads: int = 1,
                 progress: bool = True, init_from: Path | None = None, warm_from: Path | None = None,
                 target: str = "cpu", amp: bool = False) -> None:
        self.out = Path(out_dir)
        self.world, self.rank = _dist_info()
        self.device = resolve_target(target, amp=amp)
        self.amp = amp
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.set_num_threads(max(1, threads))
        self.progress = progress and self.rank == 0
        self.state: dict[str, Any] = {"step": 0, "seconds": 0.0, "history": [], "best": None}
        ckpt, self.cfg = self._resolve_source(cfg, resume, init_from, warm_from)
        self._build(ckpt, warm_from)

    # -- where the run starts from ----------------------------------------------------------------
    def _resolve_source(self, cfg: TrainConfig, resume: bool, init_from: Path | None,
                        warm_from: Path | None) -> tuple[Checkpoint | None, TrainConfig]:
        """The checkpoint the run continues from (its own latest, or --init-from) and the config in force."""
        ckpt = self._prepare_dir(resume)
        if ckpt is not None and (init_from is not None or warm_from is not None):
            raise ConfigError(
                f"{self.out} already holds a run; continue it with --resume, without --init-from/--warm-start")
        if init_from is not None and warm_from is not None:
            raise ConfigError("pass either --init-from (continue a run's schedule) or --warm-start (new schedule)")
        source = ckpt if ckpt is not None else (read_checkpoint(init_from) if init_from is not None else None)
        if source is None:
            return None, cfg
        saved = TrainConfig.from_json(source.meta["train_config"])
        if (saved.space, saved.backbone) != (cfg.space, cfg.backbone):
            raise SpecError(
                f"run {self.out} trains {saved.space}/{saved.backbone}, not {cfg.space}/{cfg.backbone}; "
                "resume with the same --space and --backbone or choose another --out"
            )
        # Only the length of the run may change on resume; everything else comes from the run.
        saved.steps = cfg.steps
        return source, saved

    # -- models, data, optimizer ------------------------------------------------------------------
    def _build(self, ckpt: Checkpoint | None, warm_from: Path | None) -> None:
        """Build models, sampler and optimizer for ``self.cfg``; load ``ckpt`` or warm-start into them."""
        cfg = self.cfg
        if cfg.batch_size % self.world:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {self.world} processes")
        self.local_batch = cfg.batch_size // self.world
        self.space = load_space(cfg.space)
        torch.manual_seed(cfg.seed)
        self.models = build_models(self.space, cfg.backbone, cfg)
        for mod in (self.models.supernet, self.models.assembler, self.models.aux):
            if mod is not None:
                mod.to(self.device)
        fam = get_family(self.space.family)
        self.sampler = fam.make_sampler(self.space, "train", augment=cfg.augment)
        # The family's training hooks (model, samples, losses, validation); None: yes/no questions.
        self.objective = fam.objective(self.space)
        self.optimizer = torch.optim.Adam(self.models.parameters(), lr=cfg.lr)
        if ckpt is not None:
            self._load(ckpt)
        self.fresh_tensors: list[str] = []
        if warm_from is not None:
            self._warm_start(warm_from)
        self._val = None
        seen = [i for i, t in enumerate(self.space.tasks) if t.split == "seen"]
        extra = [i for i, t in enumerate(self.space.tasks) if t.split == "extra"]
        self.seen_ids = torch.tensor(seen, dtype=torch.long)
        self.extra_ids = torch.tensor(extra, dtype=torch.long)
        self.task_enc = self.space.encode(self.space.tasks).to(self.device)
        self._wrapped: dict[str, nn.Module] = {}

    def _load(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt``: weights, optimizer moments (when it has them) and training state."""
        own_run = Path(ckpt.path).resolve().parent == self.out.resolve()  # resuming needs the very space definition
        loaded = load_models(ckpt, self.space, self.cfg.backbone, exact=own_run)
        self.models.supernet.load_state_dict(loaded.supernet.state_dict())
        self.models.assembler.load_state_dict(loaded.assembler.state_dict())
        if loaded.aux is not None and self.models.aux is not None:
            self.models.aux.load_state_dict(loaded.aux.state_dict())
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        elif self.rank == 0:  # --init-from a slim checkpoint: fresh optimizer moments
            print(f"nnf train: continuing from {ckpt.path} at step {ckpt.meta['train_state']['step']} "
                  "with fresh optimizer state", file=sys.stderr)
        self.state = dict(ckpt.meta["train_state"])
        if ckpt.optimizer is None:
            self.state["best"] = None  # the source run's checkpoints are not in this run directory

    def _warm_start(self, warm_from: Path) -> None:
        """Start from another checkpoint's weights with this run's own settings and schedule."""
        src = read_checkpoint(warm_from)
        self.fresh_tensors = warm_start(self.models, src)
        self.state["warm_start"] = {  # provenance, kept in every checkpoint of this run
            "from": str(warm_from), "source_step": src.meta.get("train_state", {}).get("step"),
            "source_seconds": src.meta.get("train_state", {}).get("seconds"), "fresh": self.fresh_tensors,
        }
        if self.rank == 0:
            print(f"nnf train: warm start from {warm_from}; freshly initialised: "
                  f"{', '.join(self.fresh_tensors) or 'none'}", file=sys.stderr)

    # -- run directory --------------------------------------------------------------------------
    def _prepare_dir(self, resume: bool) -> Checkpoint | None:
        index = self.out / RUN_INDEX
        if self.rank == 0:
            if self.out.exists() and not self.out.is_dir():
                raise ConfigError(f"--out {self.out} exists and is not a directory")
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.tmp"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        if self.world > 1:
            dist.barrier()
        if index.is_file():
            if not resume:
                raise ConfigError(
                    f"{self.out} already holds a training run (it has {RUN_INDEX}); pass --resume to "
                    "continue it or choose another --out"
                )
            return read_checkpoint(self._latest_dir(), with_optimizer=True)
        if not resume:
            leftovers = [p.name for p in self.out.iterdir() if not p.name.endswith(".log")]
            if leftovers:
                raise ConfigError(
                    f"--out {self.out} is not empty ({', '.join(sorted(leftovers)[:3])}); choose an empty "
                    "or new directory"
                )
        elif self.rank == 0:
            print(f"nnf train: no checkpoint in {self.out} yet; starting from step 0", file=sys.stderr)
        return None

    def _latest_dir(self) -> Path:
        data = json.loads((self.out / RUN_INDEX).read_text())
        return self.out / data["latest"]

    def _save(self) -> Path | None:
        if self.rank != 0:
            return None
        step = self.state["step"]
        name = f"step-{step:07d}"
        path = self.out / name
        if not path.exists():
            meta = self.models.meta()
            meta["train_config"] = self.cfg.to_json()
            meta["train_state"] = self.state
            meta["world_size"] = self.world
            write_checkpoint(path, meta, self.models.tensors(), self.optimizer.state_dict())
        best = self.state.get("best")
        index = {"latest": name, "best": best["checkpoint"] if best else None, "step": step}
        atomic_write_text(self.out / RUN_INDEX, json.dumps(index, indent=1))
        keep = {name} | ({best["checkpoint"]} if best else set())
        ckpts = sorted(p for p in self.out.glob("step-*") if p.is_dir())
        recent = {p.name for p in ckpts[-self.cfg.keep_checkpoints :]}
        for p in ckpts:
            if p.name not in keep | recent:
                shutil.rmtree(p)
        return path

    # -- one step -------------------------------------------------------------------------------
    def _module(self, phase: str) -> nn.Module:
        if phase not in self._wrapped:
            if phase == "pretrain":
                m = (PretrainModel(self.models.supernet, self.models.aux) if self.objective is None
                     else self.objective.pretrain_module(self.models.supernet, self.models.aux))
            else:
                m = JointModel(self.models.supernet, self.models.assembler)
            if self.world > 1:
                m = DistributedDataParallel(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self._wrapped[phase] = m
        return self._wrapped[phase]

    def _pretrain_step(self, gen: torch.Generator) -> dict[str, float]:
        b = self.local_batch
        if self.objective is not None:
            batch = self.objective.draw_pretrain(self.sampler, b, gen)
        else:
            pool = torch.cat([self.seen_ids, self.extra_ids])
            tids = pool[torch.randint(len(pool), (b,), generator=gen)]
            batch = self.sampler.draw(tids, torch.rand(b, generator=gen) < 0.5, gen)
        keep = self.cfg.pretrain_keep_min + (1 - self.cfg.pretrain_keep_min) * torch.rand(b, 1, generator=gen)
        layout = self.models.supernet.gate_layout()
        gates = [(torch.rand(b, d, generator=gen) < keep).float().to(self.device) for d in layout.module_counts]
        batch = batch_to(batch, self.device)
        with self._autocast():
            counts, out = as_float(self._module("pretrain")(batch.images, gates))
        metrics: dict[str, float] = {}
        if self.objective is not None:
            loss, metrics = self.objective.pretrain_loss((counts, out), batch)
        else:
            loss = nn.functional.cross_entropy(counts.reshape(-1, counts.shape[-1]), batch.class_counts.reshape(-1))
            loss = loss + 0.0 * out.sum()  # keeps the classifier in the graph (DDP needs every parameter used)
            metrics["acc"] = (counts.argmax(-1) == batch.class_counts).float().mean().item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.models.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item(), **metrics,
                "act": float(sum(g.sum() for g in gates) / (b * layout.total_modules))}

    def _joint_step(self, gen: torch.Generator, joint_step: int) -> dict[str, float]:
        cfg, b = self.cfg, self.local_batch
        if self.objective is not None:
            batch = self.objective.draw_joint(self.sampler, b, gen, self.seen_ids, self.extra_ids, cfg.extra_fraction)
            tids = batch.task_ids
        else:
            tids = self.seen_ids[torch.randint(len(self.seen_ids), (b,), generator=gen)]
            if len(self.extra_ids):
                use_extra = torch.rand(b, generator=gen) < cfg.extra_fraction
                extra = self.extra_ids[torch.randint(len(self.extra_ids), (b,), generator=gen)]
                tids = torch.where(use_extra, extra, tids)
            batch = self.sampler.draw(tids, torch.rand(b, generator=gen) < 0.5, gen)
        frac = min(1.0, joint_step / cfg.curriculum_steps) if cfg.curriculum_steps > 0 else 1.0
        lo = max(cfg.limit_min, cfg.curriculum_limit_start + (cfg.limit_min - cfg.curriculum_limit_start) * frac)
        lo = min(lo, cfg.limit_max)
        limits = lo + (cfg.limit_max - lo) * torch.rand(b, generator=gen)
        if cfg.low_limit_fraction > 0:  # more samples at the low limits that small devices ask for
            hi = max(lo, min(cfg.low_limit_max, cfg.limit_max))
            low = lo + (hi - lo) * torch.rand(b, generator=gen)
            limits = torch.where(torch.rand(b, generator=gen) < cfg.low_limit_fraction, low, limits)
        use_hard = torch.rand(b, generator=gen) < 0.5
        dev = self.device
        batch, limits = batch_to(batch, dev), limits.to(dev)
        with self._autocast():
            out, _gates, hard = as_float(
                self._module("joint")(batch.images, self.task_enc[tids.to(dev)], limits, use_hard.to(dev)))
        if self.objective is not None:
            ce, metrics = self.objective.joint_loss(out, batch)
        else:
            ce = nn.functional.cross_entropy(out, batch.labels)
            metrics = {"acc": (out.argmax(1) == batch.labels).float().mean().item()}
        gl = gate_loss(hard, limits)
        loss = ce + cfg.gate_lambda * gl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.models.parameters(), cfg.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            hard_ratio = torch.cat(hard, dim=1).mean(dim=1)
        return {
            "loss": loss.item(),
            "ce": ce.item(),
            "gl": gl.item(),
            **metrics,
            "act": hard_ratio.mean().item(),
            "lim": limits.mean().item(),
        }

    def _autocast(self) -> Any:
        """bfloat16 autocast for --amp on CUDA; otherwise a no-op context."""
        import contextlib

        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- validation -----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean seen/unseen accuracy and ratio at ``eval_limit`` (keys ``seen_acc`` ...) and at each
        extra limit (keys ``seen_acc@0.1`` ...); ``select`` is what the best checkpoint maximises.
        A family objective returns its own metrics (with ``select``)."""
        if self.objective is not None:
            return self.objective.validate(self.models, self.cfg)
        if self._val is None:
            fam = get_family(self.space.family)
            vs = fam.make_sampler(self.space, "val")
            ids = torch.tensor([i for i, t in enumerate(self.space.tasks) if t.split in ("seen", "unseen")])
            self._val = vs.balanced(ids, self.cfg.eval_per_task, seed=self.cfg.seed + 7919)
        limits = [float(self.cfg.eval_limit), *self.cfg.extra_eval_limits]
        res = evaluate(self.models, self._val, limits)
        out = split_means(self.space, res[limits[0]])
        for lim in limits[1:]:
            out.update({f"{k}@{lim:g}": v for k, v in split_means(self.space, res[lim]).items()})
        seen = [out.get("seen_acc", 0.0)] + [out.get(f"seen_acc@{lim:g}", 0.0) for lim in limits[1:]]
        out["select"] = sum(seen) / len(seen)
        return out

    # -- the loop -------------------------------------------------------------------------------
    def run(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Train until ``cfg.steps`` (or ``stop_after`` more steps). Returns a summary dict."""
        from tqdm import tqdm

        cfg = self.cfg
        start_step = self.state["step"]
        end = cfg.steps if stop_after is None else min(cfg.steps, start_step + stop_after)
        bar = tqdm(
            total=cfg.steps, initial=start_step, disable=not self.progress, dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0, desc="train",
        )
        self.models.supernet.train()
        self.models.assembler.train()
        last = {}
        t_mark = time.perf_counter()
        imgs = 0
        try:
            while self.state["step"] < end:
                step = self.state["step"]
                phase = "pretrain" if step < cfg.pretrain_steps else "joint"
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(cfg, step)
                gen = step_generator(cfg.seed, step, self.rank)
                t0 = time.perf_counter()
                if phase == "pretrain":
                    last = self._pretrain_step(gen)
                else:
                    last = self._joint_step(gen, step - cfg.pretrain_steps)
                self.state["seconds"] += time.perf_counter() - t0
                imgs += cfg.batch_size
                self.state["step"] = step + 1
                self.state["phase"] = phase
                self.state["last"] = {k: round(v, 5) for k, v in last.items()}
                now = step + 1
                if phase == "joint" and (now % cfg.eval_every == 0 or now == cfg.steps):
                    if self.rank == 0:
                        metrics = self.validate()
                        rec = {"step": now, **{k: round(v, 5) for k, v in metrics.items()}}
                        self.state["history"].append(rec)
                        best = self.state.get("best")
                        score = metrics["select"]
                        if best is None or score >= best.get("select", best["seen_acc"]):
                            self.state["best"] = {"step": now, "seen_acc": metrics.get("seen_acc", 0.0),
                                                  "select": score, "checkpoint": f"step-{now:07d}"}
                            self._save()  # the best must exist on disk
                        if self.progress:
                            tqdm.write(f"step {now}: validation at limit {cfg.eval_limit}: {json.dumps(rec)}")
                    if self.world > 1:
                        dist.barrier()
                if now % cfg.checkpoint_every == 0 or now == end:
                    self._save()
                    if self.world > 1:
                        dist.barrier()
                dt = time.perf_counter() - t_mark
                bar.set_postfix(phase=phase, loss=f"{last['loss']:.3f}", acc=f"{last.get('acc', float('nan')):.3f}",
                                act=f"{last['act']:.3f}", img_s=f"{imgs * 1.0 / max(dt, 1e-9):.0f}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        summary = {
            "out": str(self.out),
            "step": self.state["step"],
            "steps": cfg.steps,
            "phase": self.state.get("phase"),
            "seconds_trained": round(self.state["seconds"], 2),
            "world_size": self.world,
            "last": self.state.get("last", {}),
            "best": self.state.get("best"),
            "history_tail": self.state["history"][-3:],
        }
        if self.world > 1:
            summary["ranks_in_sync"] = self._ranks_in_sync()
        return summary

    def _ranks_in_sync(self) -> bool:
        flat = torch.cat([p.detach().flatten() for p in self.models.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        return all(torch.equal(gathered[0], g) for g in gathered[1:])

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
