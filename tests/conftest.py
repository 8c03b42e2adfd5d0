"""Shared pytest fixtures: deterministic seeds and a single torch thread (the machine has 2 cores)."""

from __future__ import annotations

import pytest
import torch

from tests.support.arm64 import arm64_device  # noqa: F401 - session fixture: the emulated aarch64 device


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
