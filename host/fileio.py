"""How NN-Factory writes files: atomically, durably, with the modes the user's umask asks for.

Every file the host writes (checkpoints, compact models, exports and their sidecars, run indexes, device
profiles, inventories) goes through these helpers, so a crash or a full disk never leaves a half-written
file under the final name, and nothing ends up private by accident:

- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`write_json_atomic`: a temporary file in
  the target's directory, ``fsync``, the mode an ordinary ``open()`` would give (``0o666 & ~umask``,
  unless ``mode=`` says otherwise), ``os.replace``, then ``fsync`` of the directory. A temporary file
  from ``mkstemp`` is ``0600``; it is never left that way.
- :func:`atomic_target`: for writers that need a path rather than bytes (exporters that embed the
  file name): yields a temporary path with the final file name, moved into place on success.
- :func:`staging_dir`: build a whole directory next to its destination, then move it into place (an
  existing destination is replaced as a whole); :func:`finish_tree` gives a built tree ordinary modes
  and flushes it to disk.
- :func:`sha256_file`: the hex sha256 of a file (``hashlib.file_digest``).

The on-device agent keeps its own small copies: it never imports ``host``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (usually 0o644)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the current umask (usually 0o755)."""
    return 0o777 & ~current_umask()


def fsync_dir(path: PathLike) -> None:
    """Flush a directory's entries (a rename in it) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path.

    The parent directory is created if needed. ``mode`` defaults to what the umask gives a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON (plus a final newline) to ``path`` atomically and durably."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_target(out: PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path with ``out``'s file name (in a fresh directory next to ``out``).

    When the block succeeds the file is flushed, given ``mode`` (default: the umask's) and atomically
    moved to ``out``; when it fails nothing is left behind. Writers that embed the file name (e.g.
    torch.export archives) thus see the final name.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp = work / out.name
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_tree(root: PathLike) -> None:
    """Give every file and directory under ``root`` (included) the umask's modes and flush them to disk.

    ``mkdtemp`` creates ``0700`` directories and ``mkstemp`` ``0600`` files; a built tree moved into place
    must look like one made with ordinary ``mkdir``/``open``.
    """
    root = Path(root)
    fmode, dmode = file_mode(), dir_mode()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            os.chmod(p, fmode)
            _fsync_file(p)
        os.chmod(dirpath, dmode)
        fsync_dir(dirpath)


def replace_dir(build: PathLike, dest: PathLike) -> Path:
    """Move the finished directory ``build`` to ``dest``, replacing an existing ``dest`` as a whole."""
    build, dest = Path(build), Path(dest)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(build, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build, dest)
    fsync_dir(dest.parent)
    return dest


@contextlib.contextmanager
def staging_dir(dest: PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh directory next to ``dest`` to build in; on success it becomes ``dest``.

    The built tree gets ordinary modes (:func:`finish_tree`) before the move. With ``replace`` an
    existing ``dest`` is replaced as a whole; without it an existing ``dest`` makes the move fail
    (``FileExistsError``/``OSError``) and the build is discarded. On any failure nothing is left.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield build
        finish_tree(build)
        if replace:
            replace_dir(build, dest)
        else:
            if dest.exists():
                raise FileExistsError(f"{dest} already exists")
            os.replace(build, dest)
            fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


__all__ = [
    "atomic_target",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "dir_mode",
    "file_mode",
    "finish_tree",
    "fsync_dir",
    "replace_dir",
    "sha256_file",
    "staging_dir",
    "write_json_atomic",
]
