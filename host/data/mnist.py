"""MNIST carried inside the package, verified by sha256 on every load.

The four standard gzip'd IDX files live next to this module (``host/data/mnist/``); they are
byte-identical to the canonical distribution. :func:`load_mnist` checks each file's sha256 before
parsing and raises :class:`~host.errors.ArtifactError` on a mismatch, so a truncated or altered copy
is never used silently. Nothing is fetched from the network and nothing outside the package is read.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from host.errors import ArtifactError, ConfigError

MNIST_DIR = Path(__file__).with_name("mnist")

# sha256 of the gzip'd files (equal to the canonical MNIST distribution).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


@dataclass(frozen=True)
class MnistSplit:
    """One MNIST split: ``images`` (N, 28, 28) uint8 and ``labels`` (N,) int64."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    if not path.is_file():
        raise ArtifactError(
            f"MNIST file {path} is missing; the package ships it under host/data/mnist/ — "
            "reinstall the package or restore the file from the repository"
        )
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected_sha256:
        raise ArtifactError(
            f"MNIST file {path} has sha256 {digest} but {expected_sha256} was expected "
            "(truncated or altered copy); restore the original file from the repository"
        )
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError) as exc:  # pragma: no cover - sha256 already guards this
        raise ArtifactError(f"MNIST file {path} is not valid gzip: {exc}") from exc


def _parse_idx(raw: bytes, path: Path, *, ndim: int) -> np.ndarray:
    magic = int.from_bytes(raw[0:4], "big")
    if magic != 0x0800 + ndim:
        raise ArtifactError(f"{path}: IDX magic {magic:#x} does not describe a {ndim}-d uint8 array")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) != offset + count:
        raise ArtifactError(f"{path}: expected {offset + count} bytes after decompression, got {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load_mnist(split: str, root: Path | None = None) -> MnistSplit:
    """Load the ``"train"`` (60000) or ``"test"`` (10000) split, verifying checksums first."""
    if split not in MNIST_FILES:
        raise ConfigError(f"unknown MNIST split {split!r}; choose 'train' or 'test'")
    base = Path(root) if root is not None else MNIST_DIR
    img_name, lbl_name = MNIST_FILES[split]
    img_path, lbl_path = base / img_name, base / lbl_name
    images = _parse_idx(_read_verified(img_path, MNIST_SHA256[img_name]), img_path, ndim=3)
    labels = _parse_idx(_read_verified(lbl_path, MNIST_SHA256[lbl_name]), lbl_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise ArtifactError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return MnistSplit(
        name=split,
        images=torch.from_numpy(images.copy()),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )
