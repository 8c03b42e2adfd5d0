"""Packaging the agent for a device: a deterministic, versioned tarball of the ``agent`` package.

Only the ``agent`` package travels (its generated gRPC stubs live inside it); nothing of ``host`` does, so
the device needs only the agent's own requirements. The tarball is byte-for-byte reproducible (sorted
members, zero mtimes/uids, fixed gzip header), so its sha256 identifies the release: the release id is
``<agent version>-<first 12 hex digits of the sha256>`` and a redeploy of the same code copies nothing.

The device-side requirements are read from the package itself: every third-party module imported at module
level (outside ``try`` blocks and functions) is required; runtimes (torch, LiteRT, ONNX Runtime) are
imported lazily by the agent and are checked separately, per the device's ``runtime`` setting.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from host.errors import DeployError

PACKAGE_NAME = "agent"
MIN_DEVICE_PYTHON: tuple[int, int] = (3, 10)

# import name -> pip distribution name (where they differ)
PIP_NAMES: dict[str, str] = {
    "grpc": "grpcio",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "google": "protobuf",
    "google.protobuf": "protobuf",
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "onnxruntime": "onnxruntime",
    "torch": "torch",
    "numpy": "numpy",
    "psutil": "psutil",
}

# runtime name in the inventory -> alternatives of importable modules (any one is enough)
RUNTIME_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "litert": ("ai_edge_litert", "tflite_runtime"),
    "onnx": ("onnxruntime",),
}


@dataclass(frozen=True)
class AgentPackage:
    """A built agent tarball and what it needs on the device."""

    data: bytes
    sha256: str
    version: str
    files: tuple[str, ...]
    requirements: tuple[str, ...]  # importable module names required at import time

    @property
    def release_id(self) -> str:
        return f"{self.version}-{self.sha256[:12]}"

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def default_agent_dir() -> Path:
    """The ``agent`` package next to ``host`` (source checkout or installed)."""
    import agent  # the host may import the agent; never the other way round

    return Path(agent.__file__).resolve().parent


def _agent_version(agent_dir: Path) -> str:
    init = agent_dir / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"), str(init))
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise DeployError(f"{init} defines no __version__ string; the agent package cannot be versioned")


def _module_level_imports(source: str, filename: str) -> set[str]:
    """Top-level module names imported unconditionally at module level."""
    tree = ast.parse(source, filename)
    names: set[str] = set()
    for node in tree.body:  # only direct module-level statements: try/if/def bodies are optional
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def scan_requirements(agent_dir: Path) -> tuple[str, ...]:
    """Third-party modules the agent imports unconditionally (``google.protobuf`` kept dotted)."""
    found: set[str] = set()
    for path in sorted(agent_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        for name in _module_level_imports(path.read_text(encoding="utf-8"), str(path)):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == PACKAGE_NAME or top == "__future__":
                continue
            if top == "host":
                raise DeployError(f"{path} imports 'host': the agent must never depend on the host controller")
            found.add("google.protobuf" if top == "google" else top)
    return tuple(sorted(found))


def _package_files(agent_dir: Path) -> list[Path]:
    files = []
    for path in sorted(agent_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        files.append(path)
    return files


def build_agent_package(agent_dir: Path | None = None) -> AgentPackage:
    """Build the reproducible agent tarball (members under ``agent/``)."""
    agent_dir = (agent_dir or default_agent_dir()).resolve()
    if not (agent_dir / "__init__.py").is_file():
        raise DeployError(f"{agent_dir} is not the agent package (no __init__.py)")
    version = _agent_version(agent_dir)
    requirements = scan_requirements(agent_dir)
    raw = io.BytesIO()
    names: list[str] = []
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _package_files(agent_dir):
            rel = path.relative_to(agent_dir).as_posix()
            arcname = f"{PACKAGE_NAME}/{rel}"
            info = tarfile.TarInfo(arcname)
            data = path.read_bytes()
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
            names.append(arcname)
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=9) as f:
        f.write(raw.getvalue())
    data = gz.getvalue()
    return AgentPackage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        version=version,
        files=tuple(names),
        requirements=requirements,
    )


def pip_name(module: str) -> str:
    return PIP_NAMES.get(module, PIP_NAMES.get(module.split(".")[0], module.split(".")[0]))
