"""File systems for spool tests: recording, failing, and crashing ones.

All of them subclass the spool's own seam (``mxgate.spool.fsio.FileSystem``);
nothing here patches ``os``. They are thread-safe because group commit calls
them from a thread pool.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mxgate.spool.fsio import FileSystem

MUTATING = ("mkdir", "create", "write", "fsync", "close", "rename", "unlink", "fsync_dir")


class RecordingFS(FileSystem):
    """Logs every call as (operation, path) in call order; counts them."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.log: list[tuple[str, str]] = []
        self.paths: dict[int, Path] = {}  # open fd -> current path of its file

    def note(self, op: str, path: Path | str) -> None:
        with self.lock:
            self.log.append((op, str(path)))

    def count(self, op: str, path: Path | None = None) -> int:
        with self.lock:
            return sum(1 for o, p in self.log if o == op and (path is None or p == str(path)))

    def before(self, op: str, path: Path | None) -> None:
        """Hook run before every mutating call (subclasses fail or crash here)."""

    def _fd_path(self, fd: int) -> Path:
        with self.lock:
            return self.paths.get(fd, Path(f"fd:{fd}"))

    def mkdir(self, path: Path) -> None:
        self.before("mkdir", path)
        super().mkdir(path)

    def create(self, path: Path) -> int:
        self.before("create", path)
        fd = super().create(path)
        with self.lock:
            self.paths[fd] = path
        self.note("create", path)
        return fd

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        self.before("write", self._fd_path(fd))
        written = super().write(fd, data)
        self.note("write", self._fd_path(fd))
        return written

    def fsync(self, fd: int) -> None:
        self.before("fsync", self._fd_path(fd))
        super().fsync(fd)
        self.note("fsync", self._fd_path(fd))

    def close(self, fd: int) -> None:
        self.before("close", self._fd_path(fd))
        path = self._fd_path(fd)
        super().close(fd)
        with self.lock:
            self.paths.pop(fd, None)
        self.note("close", path)

    def rename(self, src: Path, dst: Path) -> None:
        self.before("rename", dst)
        super().rename(src, dst)
        with self.lock:
            for fd, path in self.paths.items():
                if path == src:
                    self.paths[fd] = dst
        self.note("rename", dst)

    def unlink(self, path: Path) -> None:
        self.before("unlink", path)
        super().unlink(path)
        self.note("unlink", path)

    def fsync_dir(self, path: Path) -> None:
        self.before("fsync_dir", path)
        super().fsync_dir(path)
        self.note("fsync_dir", path)


class FailingFS(RecordingFS):
    """Raises OSError(``code``) at the ``fail_at``-th mutating call (0-based), once,
    or at every call ``matches`` accepts."""

    def __init__(
        self,
        fail_at: int | None = None,
        code: int = errno.EIO,
        matches: Callable[[str, Path | None], bool] | None = None,
    ) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.code = code
        self.matches = matches
        self.steps = 0
        self.failed = False

    def before(self, op: str, path: Path | None) -> None:
        with self.lock:
            step = self.steps
            self.steps += 1
        if step == self.fail_at or (self.matches is not None and self.matches(op, path)):
            self.failed = True
            raise OSError(self.code, os.strerror(self.code), str(path))


class SimulatedCrash(BaseException):
    """The process died here (BaseException: no ``except Exception`` cleanup runs)."""


@dataclass
class _File:
    path: Path
    synced_size: int = 0
    dirty: bool = True


@dataclass
class _EntryOp:
    kind: str  # "create" or "rename"
    dst: Path
    src: Path | None = None
    file: _File | None = None
    replaced: bytes | None = None  # what a rename over an existing file replaced


class CrashFS(RecordingFS):
    """Dies at the ``crash_at``-th mutating call: that call and every later one raise
    SimulatedCrash. ``power_loss()`` then undoes what was not fsynced, the worst
    case a machine crash allows: file bytes written after the file's last fsync
    are cut off, and directory entries added (create, rename) after the last fsync
    of their directory are taken back (a rename goes back to its source name)."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.steps = 0
        self.crashed = False
        self.files: dict[Path, _File] = {}
        self.ops: list[_EntryOp] = []

    def before(self, op: str, path: Path | None) -> None:
        with self.lock:
            if not self.crashed and self.steps == self.crash_at:
                self.crashed = True
            self.steps += 1
            if self.crashed:
                raise SimulatedCrash(f"crash before {op} {path}")

    def create(self, path: Path) -> int:
        fd = super().create(path)
        with self.lock:
            record = _File(path)
            self.files[path] = record
            self.ops.append(_EntryOp("create", path, file=record))
        return fd

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        written = super().write(fd, data)
        with self.lock:
            self.files[self._fd_path(fd)].dirty = True
        return written

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        path = self._fd_path(fd)
        with self.lock:
            record = self.files[path]
            record.synced_size = os.fstat(fd).st_size
            record.dirty = False

    def rename(self, src: Path, dst: Path) -> None:
        replaced = dst.read_bytes() if dst.exists() else None
        super().rename(src, dst)
        with self.lock:
            record = self.files.pop(src, None)
            if record is not None:
                record.path = dst
                self.files[dst] = record
            self.ops.append(_EntryOp("rename", dst, src=src, file=record, replaced=replaced))

    def unlink(self, path: Path) -> None:
        super().unlink(path)
        with self.lock:
            self.files.pop(path, None)
            self.ops = [op for op in self.ops if op.dst != path]

    def fsync_dir(self, path: Path) -> None:
        super().fsync_dir(path)
        with self.lock:
            # Entries that appeared in this directory are now durable.
            self.ops = [op for op in self.ops if op.dst.parent != path]

    def release(self) -> None:
        """Close every file the dead process left open (the kernel would)."""
        with self.lock:
            for fd in list(self.paths):
                os.close(fd)
            self.paths.clear()

    def power_loss(self) -> None:
        """Undo everything that was not made durable (call after the crash)."""
        self.release()
        with self.lock:
            for op in reversed(self.ops):
                if not op.dst.exists():
                    continue
                if op.kind == "create":
                    os.unlink(op.dst)
                    if op.file is not None:
                        self.files.pop(op.dst, None)
                elif op.src is not None and not op.src.exists():
                    os.rename(op.dst, op.src)
                    if op.replaced is not None:  # the old file comes back
                        op.dst.write_bytes(op.replaced)
                    if op.file is not None:
                        op.file.path = op.src
                        self.files.pop(op.dst, None)
                        self.files[op.src] = op.file
            self.ops.clear()
            for record in self.files.values():
                if record.dirty and record.path.exists():
                    os.truncate(record.path, record.synced_size)
