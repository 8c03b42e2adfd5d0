"""Joint training: exact resume (also after kill -9), DDP with 2 CPU processes, checkpoints, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from host.checkpoint import read_checkpoint
from host.errors import ArtifactError, ConfigError, SpecError
from host.training import TrainConfig, Trainer, lr_at

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(steps=6, pretrain_steps=3, batch_size=8, checkpoint_every=2, eval_every=100, eval_per_task=2,
            curriculum_steps=2, warmup_steps=2)


def _final_tensors(run: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run / "latest.json").read_text())["latest"]
    return load_file(str(run / latest / "model.safetensors"))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # three training runs
def test_resume_is_exact(tmp_path):
    full = Trainer(TrainConfig(**TINY), tmp_path / "full", progress=False)
    summary = full.run()
    assert summary["step"] == 6 and summary["phase"] == "joint"
    part = Trainer(TrainConfig(**TINY), tmp_path / "part", progress=False)
    part.run(stop_after=4)  # "interrupted" after step 4 (a checkpoint step)
    resumed = Trainer(TrainConfig(**TINY), tmp_path / "part", resume=True, progress=False)
    assert resumed.state["step"] == 4
    resumed.run()
    a, b = _final_tensors(tmp_path / "full"), _final_tensors(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Optimizer state went through safetensors and back.
    ck = read_checkpoint(tmp_path / "part" / "step-0000006", with_optimizer=True)
    assert ck.optimizer["state"] and all("exp_avg" in s for s in ck.optimizer["state"].values())
    assert ck.meta["train_state"]["phase"] == "joint"


@pytest.mark.slow  # a training subprocess, killed and resumed
def test_kill_9_loses_at_most_steps_since_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "host", "train", "--out", str(run), "--steps", "400", "--pretrain-steps", "200",
            "--batch-size", "4", "--checkpoint-every", "2", "--eval-every", "1000", "--eval-per-task", "2",
            "--no-progress"]
    log = tmp_path / "train.log"
    with log.open("w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            idx = run / "latest.json"
            if idx.is_file() and json.loads(idx.read_text())["step"] >= 4:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        else:
            pytest.fail("training never reached step 4")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Whatever was on disk at the kill is a complete checkpoint; resuming continues from it.
    step = json.loads((run / "latest.json").read_text())["step"]
    ck = read_checkpoint(run, with_optimizer=True)
    assert ck.meta["train_state"]["step"] == step and step % 2 == 0
    t = Trainer(TrainConfig(steps=400), run, resume=True, progress=False)
    assert t.state["step"] == step and t.cfg.batch_size == 4
    t.run(stop_after=2)
    assert t.state["step"] == step + 2


@pytest.mark.slow  # two torchrun processes
def test_ddp_two_cpu_processes(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "host", "train", "--out", str(run), "--steps", "4", "--pretrain-steps", "2", "--batch-size", "8",
           "--checkpoint-every", "2", "--eval-every", "100", "--eval-per-task", "2", "--no-progress", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["step"] == 4
    assert summary["ranks_in_sync"] is True
    ck = read_checkpoint(run)
    assert ck.meta["world_size"] == 2 and ck.meta["train_state"]["step"] == 4


def test_lr_schedule_and_config_checks():
    cfg = TrainConfig(steps=100, pretrain_steps=20, warmup_steps=5, lr=1e-3, pretrain_lr=2e-3)
    assert lr_at(cfg, 0) == pytest.approx(2e-3 / 5)
    assert lr_at(cfg, 20) == pytest.approx(1e-3 / 5)  # joint phase restarts the warm-up
    assert lr_at(cfg, 99) < lr_at(cfg, 30)
    with pytest.raises(ConfigError):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError):
        TrainConfig(limit_min=0.0)


def test_bad_run_directories_and_checkpoints(tmp_path):
    run = tmp_path / "r"
    Trainer(TrainConfig(**{**TINY, "steps": 2, "pretrain_steps": 2}), run, progress=False).run()
    with pytest.raises(ConfigError, match="already holds a training run.*--resume"):
        Trainer(TrainConfig(**TINY), run, progress=False)
    with pytest.raises(SpecError, match="trains numvqa/resnet_numvqa, not numvqa/resnet_tiny"):
        Trainer(TrainConfig(**{**TINY, "backbone": "resnet_tiny"}), run, resume=True, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        Trainer(TrainConfig(**TINY), other, progress=False)
    with pytest.raises(SpecError, match="neither a checkpoint"):
        read_checkpoint(other)
    # A corrupt tensor file is detected by its checksum.
    ck_dir = run / json.loads((run / "latest.json").read_text())["latest"]
    blob = bytearray((ck_dir / "model.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (ck_dir / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        read_checkpoint(run)
    (ck_dir / "checkpoint.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        read_checkpoint(ck_dir)


@pytest.mark.slow  # trains twice (~4 s)
def test_slim_export_and_init_from(tmp_path):
    from host.checkpoint import export_slim

    run = tmp_path / "run"
    Trainer(TrainConfig(**{**TINY, "steps": 4}), run, progress=False).run()
    slim = export_slim(run, tmp_path / "ship" / "numvqa_resnet")
    ck = read_checkpoint(slim)
    assert ck.optimizer is None and not any(k.startswith("aux.") for k in ck.model)
    assert not (slim / "optimizer.safetensors").exists()
    with pytest.raises(SpecError, match="no optimizer.safetensors"):
        read_checkpoint(slim, with_optimizer=True)
    cont = Trainer(TrainConfig(**{**TINY, "steps": 6}), tmp_path / "cont", init_from=slim, progress=False)
    assert cont.state["step"] == 4
    before = {k: v.clone() for k, v in cont.models.assembler.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in ck.section("assembler").items())
    cont.run()
    assert cont.state["step"] == 6
    # exporting again replaces the shipped copy atomically
    export_slim(tmp_path / "cont", slim)
    assert read_checkpoint(slim).meta["train_state"]["step"] == 6


def _linear_head_copy(src: Path, dest: Path) -> Path:
    """A copy of checkpoint ``src`` whose supernet has the standard linear classifier (as before head_hidden)."""
    from host.checkpoint import write_checkpoint

    ck = read_checkpoint(src)
    tensors = {k: v for k, v in ck.model.items() if not k.startswith("supernet.fc.")}
    gen = torch.Generator().manual_seed(0)
    tensors["supernet.fc.weight"] = torch.randn(2, 128, generator=gen)
    tensors["supernet.fc.bias"] = torch.randn(2, generator=gen)
    meta = {k: v for k, v in ck.meta.items() if k not in ("files", "kind", "version", "optimizer")}
    return write_checkpoint(dest, meta, tensors)


def test_warm_start_replaces_a_linear_head(tmp_path):
    run = tmp_path / "run"
    Trainer(TrainConfig(**{**TINY, "steps": 4}), run, progress=False).run()
    src = read_checkpoint(run / json.loads((run / "latest.json").read_text())["latest"])
    old = _linear_head_copy(src.path, tmp_path / "linear")
    cfg = TrainConfig(**{**TINY, "steps": 3, "pretrain_steps": 0, "lr": 5e-4})
    warm = Trainer(cfg, tmp_path / "warm", warm_from=old, progress=False)
    assert sorted(warm.fresh_tensors) == [f"supernet.fc.{m}.{p}" for m in ("fc1", "fc2") for p in ("bias", "weight")]
    assert warm.state["step"] == 0 and warm.cfg.lr == 5e-4  # a new run with this command's settings
    assert warm.state["warm_start"]["source_step"] == 4 and warm.state["warm_start"]["fresh"] == warm.fresh_tensors
    sd = warm.models.supernet.state_dict()
    for k, v in src.section("supernet").items():
        if not k.startswith("fc."):
            assert torch.equal(sd[k], v), k
    for k, v in src.section("assembler").items():
        assert torch.equal(warm.models.assembler.state_dict()[k], v), k
    warm.run()
    assert warm.state["step"] == 3
    # the same structure: nothing is fresh, the head is copied too
    same = Trainer(cfg, tmp_path / "same", warm_from=src.path, progress=False)
    assert same.fresh_tensors == []
    assert torch.equal(same.models.supernet.state_dict()["fc.fc1.weight"], src.model["supernet.fc.fc1.weight"])


def test_warm_start_bad_input(tmp_path):
    from host.checkpoint import write_checkpoint

    run = tmp_path / "run"
    Trainer(TrainConfig(**{**TINY, "steps": 2}), run, progress=False).run()
    src = read_checkpoint(run / json.loads((run / "latest.json").read_text())["latest"])
    meta = {k: v for k, v in src.meta.items() if k not in ("files", "kind", "version", "optimizer")}
    cfg = TrainConfig(**{**TINY, "pretrain_steps": 0})
    bad_shape = dict(src.model)
    bad_shape["supernet.conv1.weight"] = torch.zeros(3, 1, 3, 3)
    write_checkpoint(tmp_path / "shape", meta, bad_shape)
    with pytest.raises(SpecError, match="conv1.weight has shape"):
        Trainer(cfg, tmp_path / "a", warm_from=tmp_path / "shape", progress=False)
    extra = {**src.model, "supernet.stages.9.0.conv1.weight": torch.zeros(1)}
    write_checkpoint(tmp_path / "extra", meta, extra)
    with pytest.raises(SpecError, match="no place in this model"):
        Trainer(cfg, tmp_path / "b", warm_from=tmp_path / "extra", progress=False)
    with pytest.raises(ConfigError, match="either --init-from"):
        Trainer(cfg, tmp_path / "c", warm_from=src.path, init_from=src.path, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg, run, resume=True, warm_from=src.path, progress=False)


def test_low_limits_augmentation_and_several_validation_limits(tmp_path):
    cfg = TrainConfig(**{**TINY, "eval_every": 2}, low_limit_fraction=1.0, low_limit_max=0.2, augment=True,
                      eval_limit=0.3, extra_eval_limits=(0.1,))
    t = Trainer(cfg, tmp_path / "run", progress=False)
    t.run()
    rec = t.state["history"][-1]
    assert {"seen_acc", "seen_acc@0.1", "unseen_acc@0.1", "select"} <= rec.keys()
    assert rec["select"] == pytest.approx((rec["seen_acc"] + rec["seen_acc@0.1"]) / 2, abs=1e-4)
    assert t.state["last"]["lim"] <= 0.2  # every joint sample's limit came from [limit_min, 0.2]
    assert t.sampler.augment
    saved = TrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert saved == cfg  # tuples survive the JSON round trip
    old = {k: v for k, v in cfg.to_json().items() if k not in ("low_limit_fraction", "augment", "extra_eval_limits")}
    assert TrainConfig.from_json(old).low_limit_fraction == 0.0  # configs of earlier runs still load
    with pytest.raises(ConfigError, match="validation limit 1.5"):
        TrainConfig(extra_eval_limits=(1.5,))
    with pytest.raises(ConfigError, match="low_limit_fraction"):
        TrainConfig(low_limit_fraction=2.0)


def test_training_target_is_checked_before_any_work(tmp_path, capsys):
    from host.cli import main
    from host.training import resolve_target

    assert resolve_target("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown training target 'tpu'"):
        resolve_target("tpu")
    with pytest.raises(ConfigError, match="--amp .* for --target cuda only"):
        resolve_target("cpu", amp=True)
    if not torch.cuda.is_available():  # this machine: the error says what to do
        rc = main(["train", "--out", str(tmp_path / "run"), "--target", "cuda", "--steps", "2"])
        err = capsys.readouterr().err
        assert rc == 2 and "sees none" in err and "train with --target cpu" in err, err
        assert not (tmp_path / "run").exists()
