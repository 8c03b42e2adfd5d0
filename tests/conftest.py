"""Shared pytest fixtures: deterministic seeds, a single torch thread (the machine has 2 cores), and the
expensive fixtures several test modules share, built once per session."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from tests.support.arm64 import arm64_device  # noqa: F401 - session fixture: the emulated aarch64 device


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI timeout, `kill`) ends the run like Ctrl-C, so session teardowns still run: the emulated
    device's mounts and sshd, agents and ssh servers are taken down instead of outliving the run.

    Under pytest-xdist (`-n 2`) each worker gets its own temporary directory: the agents a worker starts
    keep their device lock there ($TMPDIR/nnf-agent-device-UID.lock), so two workers' agents do not queue
    behind each other's measurements (tests assert who holds that lock)."""
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        own = Path(tempfile.mkdtemp(prefix=f"nnf-tests-{worker}-"))
        os.environ["TMPDIR"] = str(own)
        tempfile.tempdir = None  # gettempdir() reads $TMPDIR again
        config.add_cleanup(lambda: shutil.rmtree(own, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A TFLite conversion takes tens of seconds on a 2-core CPU: tests marked `tflite` run in the slow tier."""
    for item in items:
        if item.get_closest_marker("tflite") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _user_dirs(tmp_path_factory: pytest.TempPathFactory):
    """Hermetic user directories: what NN-Factory keeps in XDG config/data dirs (inventory, campaigns,
    fitted profiles; host/paths.py) goes to a temporary directory, never into the developer's home."""
    base = tmp_path_factory.mktemp("xdg")
    keys = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "NNF_PROFILES_DIR", "NNF_CAMPAIGNS_DIR", "NNF_INVENTORY")
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys[2:]:
        os.environ.pop(k, None)
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")
    os.environ["XDG_DATA_HOME"] = str(base / "data")
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ---- expensive fixtures, built once per test session (keep the fast tier fast) ---------------------------


@pytest.fixture(scope="session")
def tiny_numvqa_run(tmp_path_factory: pytest.TempPathFactory):
    """A 4-step NumVQA training run (accuracy near chance): a real run directory and checkpoint for the
    generation, export and device-budget tests. Read it, never write into it."""
    from host.training import TrainConfig, Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tiny_numvqa") / "run"
        cfg = TrainConfig(steps=4, pretrain_steps=2, batch_size=8, checkpoint_every=2, eval_every=100,
                          eval_per_task=2, warmup_steps=1)
        Trainer(cfg, out, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def numvqa_run(tiny_numvqa_run, tmp_path_factory: pytest.TempPathFactory):
    """(run dir, profiles dir, gate layout): the tiny run plus a synthetic device profile 'synthetic-dev'
    with a known linear latency law, for `nnf generate --device` tests."""
    import numpy as np

    from host.generate import ModelFactory
    from host.profiling.device_profile import write_profile_entry
    from host.profiling.predictor import LatencyModel, LatencySchema, MemoryModel, StructureModel

    tmp = tmp_path_factory.mktemp("gen_dev")
    net = ModelFactory.load(space="numvqa", checkpoint=tiny_numvqa_run).models.supernet
    layout = net.gate_layout()
    schema = LatencySchema.named("linear")
    coef = np.array([800.0] + [4.0] * layout.num_layers)
    from tests.support.campaign_fakes import synthetic_entry

    entry = synthetic_entry(layout, LatencyModel(layout, schema, coef=coef), MemoryModel(coef=np.array([3e6, 1.0, 1.0, 0.0])),
                            StructureModel.calibrate(net), backbone=net.backbone,
                            measure={"threads": 1, "warmup_runs": 1, "repeats": 3, "min_time_s": 0.0, "deadline_s": 60.0})
    write_profile_entry("synthetic-dev", {"cpu_model": "synthetic law (test)"}, entry, tmp / "profiles")
    return tiny_numvqa_run, tmp / "profiles", layout

