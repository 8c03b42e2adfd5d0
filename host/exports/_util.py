"""Small helpers shared by the export modules: atomic file targets, hashing, quiet third-party calls."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from host.errors import MissingExtraError


def require(module: str, what: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming the ``pip install`` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(what, extra, package or module.split(".")[0]) from exc


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_target(out: Path) -> Iterator[Path]:
    """Yield a temporary path with ``out``'s file name (in a fresh directory next to ``out``); on
    success it atomically replaces ``out``. Exporters that embed the file name (torch.export archives)
    thus see the final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp = work / out.name
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python and C level) to stderr for the duration.

    The exporters print progress on stdout (torch.onnx, litert-torch), which would break the
    ``--json`` contract of the CLI (exactly one JSON object on stdout).
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real fd 1 (e.g. captured by a test harness): Python-level redirect only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def quiet_torch_jit() -> Iterator[None]:
    """TorchScript is deprecated in torch 2.13 but still what older PyTorch runtimes load: silence that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence known third-party warnings raised inside torch.export / onnx / litert conversion."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(torch|torchao|onnx|litert|google|jax|tensorflow).*")
        yield


def versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the given distributions (those installed), without importing them."""
    out: dict[str, str] = {}
    for name in distributions:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
