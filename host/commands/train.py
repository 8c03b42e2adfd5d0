"""``nnf train``: pre-train a gated supernet, then train it jointly with its module assembler.

Writes a run directory (numbered checkpoints + latest.json). ``--resume`` continues an interrupted run
exactly from its last checkpoint. Under ``torchrun --nproc_per_node N -m host train ...`` the same
command trains with DDP (gloo on CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from host.training import TrainConfig, Trainer


def register(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train supernet + assembler on a task space", description=__doc__)
    p.add_argument("--space", default=d.space, help="task space name or .toml path (default: %(default)s)")
    p.add_argument("--backbone", default=None,
                   help=f"supernet config (default: the space's `backbone`, else {d.backbone})")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, latest.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (its saved settings apply; only --steps may change)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start a new run in --out from a checkpoint without optimizer state (e.g. the shipped "
                        "one): same config and step, fresh optimizer moments")
    p.add_argument("--warm-start", type=Path, default=None,
                   help="start a new run (step 0, this command's settings) from a checkpoint's supernet and "
                        "assembler weights; tensors it lacks (e.g. a new classifier head) start fresh")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimizer steps incl. pre-training (default: %(default)s)")
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps, help="backbone pre-training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="joint-phase learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="joint steps between validations (default: %(default)s)")
    p.add_argument("--eval-per-task", type=int, default=d.eval_per_task, help="validation samples per task (default: %(default)s)")
    p.add_argument("--curriculum-steps", type=int, default=d.curriculum_steps, help="joint steps of limit curriculum (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="learning-rate warm-up steps per phase (default: %(default)s)")
    p.add_argument("--low-limit-fraction", type=float, default=d.low_limit_fraction,
                   help="share of joint samples whose limit is drawn from [limit_min, --low-limit-max] "
                        "(default: %(default)s)")
    p.add_argument("--low-limit-max", type=float, default=d.low_limit_max, help="upper end of those limits (default: %(default)s)")
    p.add_argument("--augment", action="store_true", help="jitter training inputs (small affine warp per digit)")
    p.add_argument("--eval-limits", type=float, nargs="+", default=None, metavar="LIMIT",
                   help=f"activation limits validated at (default: {d.eval_limit}); the best checkpoint has the "
                        "highest mean seen accuracy over them")
    p.add_argument("--target", default="cpu",
                   help="where to train: cpu (default), cuda (under torchrun: the GPU of LOCAL_RANK, DDP over "
                        "NCCL) or cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward passes (CUDA only)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.cli import print_json
    from host.commands.options import check_out
    from host.tasks import load_space

    backbone = args.backbone or str(load_space(args.space).params.get("backbone", TrainConfig().backbone))
    cfg = TrainConfig(
        space=args.space,
        backbone=backbone,
        seed=args.seed,
        steps=args.steps,
        pretrain_steps=args.pretrain_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_per_task=args.eval_per_task,
        curriculum_steps=args.curriculum_steps,
        warmup_steps=args.warmup_steps,
        low_limit_fraction=args.low_limit_fraction,
        low_limit_max=args.low_limit_max,
        augment=args.augment,
        **({"eval_limit": args.eval_limits[0], "extra_eval_limits": tuple(args.eval_limits[1:])}
           if args.eval_limits else {}),
    )
    check_out(args.out, directory=True)
    trainer = Trainer(cfg, args.out, resume=args.resume, threads=args.threads, progress=not args.no_progress,
                      init_from=args.init_from, warm_from=args.warm_start, target=args.target, amp=args.amp)
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    if trainer.rank == 0:
        if args.json:
            print_json(summary)
        else:
            best = summary["best"]
            print(
                f"trained {summary['step']}/{summary['steps']} steps in {summary['seconds_trained']:.0f} s "
                f"(world size {summary['world_size']}); last {summary['last']}; "
                f"best {best['checkpoint'] if best else '-'}; run dir {summary['out']}"
            )
    return 0
