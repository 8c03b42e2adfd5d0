"""Small helpers shared by the export modules: optional imports, quiet third-party calls, versions.

Atomic writes and hashing live in :mod:`host.fileio`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

from host.errors import MissingExtraError


def require(module: str, what: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming the ``pip install`` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(what, extra, package or module.split(".")[0]) from exc


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
