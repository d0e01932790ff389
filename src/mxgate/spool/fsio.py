"""Durable file operations, and the seam through which tests break them.

Owns the system calls through which the spool writes, moves, deletes and reads
its files (``FileSystem``, one method per call, so a test subclass can fail or
"crash" at any chosen step without monkeypatching ``os``) and the atomic write recipe:
write to ``tmp/`` under a unique name, fsync the file, rename it over the
target, fsync the target's directory. After ``atomic_write`` returns, the target
holds the new bytes on stable storage; if it raises, or the machine stops at any
point, the target holds the old bytes or the new ones, never a mix (a stray file
may remain in ``tmp/``, which recovery deletes).

The directory fsync is what makes the rename itself durable; chasquid's safeio,
the model for this module, leaves it out. Never decides what to write or where.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

_tmp_counter = itertools.count()


class FileSystem:
    """The os calls the spool makes. Subclass to inject faults in tests."""

    def mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def create(self, path: Path) -> int:
        """Open a new file for writing; fails (FileExistsError) if it exists."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def size(self, path: Path) -> int:
        return os.stat(path).st_size


def write_all(fs: FileSystem, fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = fs.write(fd, view)
        view = view[written:]


def unlink_quietly(fs: FileSystem, path: Path) -> None:
    """Remove ``path`` if it exists; cleanup after a failure must not raise again."""
    with contextlib.suppress(OSError):
        fs.unlink(path)


def close_quietly(fs: FileSystem, fd: int) -> None:
    with contextlib.suppress(OSError):
        fs.close(fd)


def tmp_name(stem: str) -> str:
    """A file name in tmp/ that no other process or thread can pick."""
    return f"{stem}.{os.getpid()}.{next(_tmp_counter)}"


def write_new(fs: FileSystem, path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist), write ``data``, fsync; removed again on failure."""
    fd = fs.create(path)
    try:
        write_all(fs, fd, data)
        fs.fsync(fd)
    except BaseException:
        close_quietly(fs, fd)
        unlink_quietly(fs, path)
        raise
    fs.close(fd)


def atomic_write(fs: FileSystem, tmp_dir: Path, target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` durably: tmp file, fsync, rename, fsync dir.

    Raises OSError; on a failure before the rename the tmp file is removed.
    """
    tmp = tmp_dir / tmp_name(target.name)
    write_new(fs, tmp, data)
    try:
        fs.rename(tmp, target)
    except BaseException:
        unlink_quietly(fs, tmp)
        raise
    fs.fsync_dir(target.parent)


def move(fs: FileSystem, src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (another directory of the same file system) durably."""
    fs.rename(src, dst)
    fs.fsync_dir(dst.parent)
    if src.parent != dst.parent:
        # The old name must not come back after a crash either.
        fs.fsync_dir(src.parent)
