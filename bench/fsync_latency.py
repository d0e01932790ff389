"""Latency of one durable append on this disk, three ways.

The journal (src/mxgate/spool/journal.py) appends a batch and fdatasyncs it;
this measures what that costs against the alternatives considered: writing
into a pre-zeroed file (no size change, so no inode write) and into a
posix_fallocate'd one. One commit at a time, ``--size`` bytes each.

Usage: python bench/fsync_latency.py [--dir DIR] [-n 600] [--size 13200] [--rounds 2]
DIR decides the file system measured (default: a directory under /var/tmp).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path


def percentiles(fn: Callable[[int], None], n: int) -> str:
    took = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return f"p50 {took[n // 2]:.3f}  p90 {took[int(n * 0.9)]:.3f}  p99 {took[int(n * 0.99)]:.3f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--dir", type=Path)
    p.add_argument("-n", type=int, default=600)
    p.add_argument("--size", type=int, default=13_200)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="mxgate-fsync-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    data = b"x" * args.size
    total = args.size * (args.n + 1)
    for _ in range(args.rounds):
        path = base / "append"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        print("append + fdatasync       ", percentiles(partial(_append, fd, data), args.n))
        os.close(fd)
        path = base / "zeroed"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.write(fd, b"\0" * total)
        os.fsync(fd)
        print("pre-zeroed + fdatasync   ", percentiles(partial(_at, fd, data), args.n))
        os.close(fd)
        path = base / "fallocated"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.posix_fallocate(fd, 0, total)
        os.fsync(fd)
        print("fallocated + fdatasync   ", percentiles(partial(_at, fd, data), args.n))
        os.close(fd)
    for name in ("append", "zeroed", "fallocated"):
        (base / name).unlink(missing_ok=True)
    if args.dir is None:
        base.rmdir()


def _append(fd: int, data: bytes, _i: int) -> None:
    os.write(fd, data)
    os.fdatasync(fd)


def _at(fd: int, data: bytes, i: int) -> None:
    os.pwrite(fd, data, i * len(data))
    os.fdatasync(fd)


if __name__ == "__main__":
    main()
