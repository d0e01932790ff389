"""Benchmark: spool commits with group commit versus naive per-message fsyncs.

Commits N messages of SIZE bytes from C concurrent coroutines and prints, per
mode, messages per second, fsyncs per message (file and directory) and commit
latency, and the CPU time the process spent per message (user + system, all
threads, from getrusage; what a commit costs an SMTP worker). Modes:

  group   ``await writer.commit(env)``: fsyncs shared by every commit of a batch
  naive   ``await asyncio.to_thread(writer.commit_sync, env)``: each message does
          its own file and directory fsyncs, concurrently in threads
  serial  ``writer.commit_sync(env)`` on the loop: one message at a time

Usage: python bench/spool_commit.py [-n 2000] [-c 50] [--size 4096] [--dir PATH]
       [--modes group,naive,serial] [--threads 8] [--repeat 3] [--loop uvloop]
The directory decides the file system measured (default: a temporary
directory). Modes run interleaved, ``--repeat`` times, and the medians are
printed last, so that other load on the machine spreads over all modes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from mxgate.core.envelope import Envelope, Recipient
from mxgate.spool import FileSystem, Spool
from mxgate.spool.store import DEFAULT_FSYNC_THREADS


class CountingFileSystem(FileSystem):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file_fsyncs = 0
        self.dir_fsyncs = 0

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        with self.lock:
            self.file_fsyncs += 1

    def fsync_dir(self, path: Path) -> None:
        super().fsync_dir(path)
        with self.lock:
            self.dir_fsyncs += 1


def envelope(queue_id: str, size: int) -> Envelope:
    rcpt = Recipient("user@example.com", "user@example.com", route={"kind": "smtp"})
    return Envelope(
        queue_id, "sender@example.org", 0.0, "192.0.2.1", "helo", "unknown", size, (rcpt,)
    )


async def run(
    mode: str, root: Path, messages: int, concurrency: int, size: int, threads: int
) -> tuple[float, float]:
    fs = CountingFileSystem()
    body = os.urandom(size)
    latencies: list[float] = []
    with Spool(root, fs=fs, fsync_threads=threads) as spool:
        fs.file_fsyncs = fs.dir_fsyncs = 0
        remaining = [messages]

        async def session() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                with spool.begin() as writer:
                    writer.write(body)
                    env = envelope(writer.queue_id, size)
                    started = time.perf_counter()
                    if mode == "group":
                        await writer.commit(env)
                    elif mode == "naive":
                        await asyncio.to_thread(writer.commit_sync, env)
                    else:
                        writer.commit_sync(env)
                        await asyncio.sleep(0)
                    latencies.append(time.perf_counter() - started)

        usage = resource.getrusage(resource.RUSAGE_SELF)
        switches = usage.ru_nvcsw + usage.ru_nivcsw
        started = time.perf_counter()
        await asyncio.gather(*(session() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        batches = spool.committer.batches
    user_ms = (after.ru_utime - usage.ru_utime) * 1000 / messages
    sys_ms = (after.ru_stime - usage.ru_stime) * 1000 / messages
    switches_per_message = (after.ru_nvcsw + after.ru_nivcsw - switches) / messages
    latencies.sort()
    print(
        f"{mode:6} {messages / elapsed:9.0f} msg/s  "
        f"file fsyncs/msg {fs.file_fsyncs / messages:4.2f}  "
        f"dir fsyncs/msg {fs.dir_fsyncs / messages:5.3f}  "
        f"fsyncs/msg {(fs.file_fsyncs + fs.dir_fsyncs) / messages:5.3f}  "
        f"latency p50 {statistics.median(latencies) * 1000:6.2f} ms "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:6.2f} ms"
        + (f"  batches {batches} (avg {messages / batches:.1f} msg)" if batches else "")
        + f"\n       cpu/msg {user_ms + sys_ms:5.3f} ms (user {user_ms:5.3f} sys {sys_ms:5.3f})"
        f"  context switches/msg {switches_per_message:5.2f}"
    )
    return messages / elapsed, user_ms + sys_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--modes", default="group,naive,serial")
    parser.add_argument("--threads", type=int, default=None, help="fsync threads of group commit")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, modes interleaved")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    runner: Callable[[Coroutine[Any, Any, tuple[float, float]]], tuple[float, float]]
    if args.loop == "uvloop":
        import uvloop  # the SMTP workers' loop

        runner = uvloop.run
    else:
        runner = asyncio.run
    base = Path(tempfile.mkdtemp(prefix="mxgate-bench-", dir=args.dir))
    print(f"{args.messages} messages of {args.size} bytes, {args.concurrency} sessions, in {base}")
    threads = args.threads or DEFAULT_FSYNC_THREADS
    modes = args.modes.split(",")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for round_ in range(args.repeat):
            for mode in modes:
                root = base / f"{mode}{round_}"
                rate, cpu_ms = runner(
                    run(mode, root, args.messages, args.concurrency, args.size, threads)
                )
                rates[mode].append(rate)
                cpu[mode].append(cpu_ms)
                shutil.rmtree(root)
        print(
            "median msg/s: "
            + ", ".join(f"{m} {statistics.median(r):.0f}" for m, r in rates.items())
        )
        print(
            "median cpu ms/msg: "
            + ", ".join(f"{m} {statistics.median(c):.3f}" for m, c in cpu.items())
        )
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
