"""host.fileio: atomic writes keep the umask's modes, leave nothing behind on failure; sha256 of files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from host.fileio import (
    atomic_target,
    atomic_write_bytes,
    atomic_write_text,
    current_umask,
    sha256_file,
    staging_dir,
    write_json_atomic,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_current_umask_reads_without_changing(umask_027) -> None:
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_atomic_writes_honour_the_umask(tmp_path: Path, umask_027) -> None:
    a = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x" * 10)
    b = atomic_write_text(tmp_path / "b.txt", "hé")
    c = write_json_atomic(tmp_path / "c.json", {"k": 1})
    assert [_mode(p) for p in (a, b, c)] == [0o640] * 3  # not mkstemp's 0600
    assert b.read_text(encoding="utf-8") == "hé" and c.read_text() == '{\n  "k": 1\n}\n'
    assert _mode(atomic_write_bytes(tmp_path / "d", b"", mode=0o600)) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "c.json", "d", "sub"]


def test_atomic_target_and_staging_dir(tmp_path: Path, umask_027) -> None:
    out = tmp_path / "model.onnx"
    with atomic_target(out) as tmp:
        assert tmp.name == "model.onnx" and tmp != out
        tmp.write_bytes(b"abc")
        os.chmod(tmp, 0o600)
    assert out.read_bytes() == b"abc" and _mode(out) == 0o640
    with pytest.raises(RuntimeError), atomic_target(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert out.read_bytes() == b"abc" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]

    dest = tmp_path / "dir"
    with staging_dir(dest) as build:
        (build / "f").write_bytes(b"1")
        os.chmod(build / "f", 0o600)
    assert _mode(dest) == 0o750 and _mode(dest / "f") == 0o640
    with staging_dir(dest) as build:  # replaces the whole directory
        (build / "g").write_bytes(b"2")
    assert [p.name for p in dest.iterdir()] == ["g"]
    with pytest.raises(FileExistsError), staging_dir(dest, replace=False) as build:
        (build / "h").write_bytes(b"3")
    assert [p.name for p in dest.iterdir()] == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "model.onnx"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    p = atomic_write_text(tmp_path / "x", "old")

    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["x"]


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    p = tmp_path / "blob"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
