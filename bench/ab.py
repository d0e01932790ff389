"""Two or more values of one setting side by side: a fresh gateway per value, in turn.

Every round starts ``mxgate serve`` once per value (the README's gateway: the
embedded PostgreSQL under ./var with the example data), the setting given as
its ``MXGATE_<NAME>`` environment variable, sends a warm-up of 500 messages,
then ``smtp-source -s C -m M -l 3900`` (one message per connection, one
recipient, a client outside mynetworks), and prints the accept rate and the
CPU milliseconds per message of the master (queue manager and delivery, with
its remover helper) and of the workers (with their sync helpers), from /proc,
counted until the master is idle again (the sink has every message). The
values take turns within each round, so a machine that slows down or speeds up
meanwhile weighs on all of them alike; the last lines give the medians.

    python bench/ab.py delivery_nice 0 10 [--concurrency 10] [--messages 4000] [--rounds 4]

The next hop is an ``smtp-sink`` on 127.0.0.1:2526 (the example data's
transport), started here. Loopback only; stops only what it started. Needs
smtp-source and smtp-sink (Debian's postfix package). Not part of the test
suite. Used for BENCHMARKS.md's session 19 (``delivery_nice``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LISTEN = "127.0.0.1:2525"
SINK = "127.0.0.1:2526"
WARM_UP = 500


@dataclass
class Round:
    value: str
    rate: float  # messages per second of load
    master_ms: float  # CPU per message
    workers_ms: float


def smtp_source(concurrency: int, messages: int) -> float:
    """Seconds ``smtp-source`` took to send ``messages``."""
    started = time.monotonic()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(concurrency),
            "-m",
            str(messages),
            "-l",
            "3900",
            "-f",
            "load@outside.example",
            "-t",
            "james@server1.example.com",
            LISTEN,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def wait_idle(processes: list[psutil.Process], timeout: float = 20.0) -> None:
    """Until their CPU time stops rising for half a second (deliveries done)."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(processes)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(processes)
        if now - before < 0.005:
            return
        before = now


def one_round(name: str, value: str, concurrency: int, messages: int) -> Round:
    env = dict(os.environ, **{f"MXGATE_{name.upper()}": value})
    with tempfile.TemporaryFile() as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "mxgate", "serve"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            master = psutil.Process(gateway.pid)
            deadline = time.monotonic() + 120
            while True:
                log.seek(0)
                if b"started " in log.read():
                    break
                if gateway.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    sys.exit(f"mxgate serve did not start:\n{log.read().decode()[-2000:]}")
                time.sleep(0.2)
            workers = [p for p in master.children() if "worker" in " ".join(p.cmdline())]
            worker_tree = [p for worker in workers for p in tree(worker)]
            master_tree = [p for p in tree(master) if p not in worker_tree]
            smtp_source(concurrency, WARM_UP)
            wait_idle(master_tree)
            master_before, workers_before = cpu_seconds(master_tree), cpu_seconds(worker_tree)
            seconds = smtp_source(concurrency, messages)
            wait_idle(master_tree)
            master_cpu = cpu_seconds(master_tree) - master_before
            workers_cpu = cpu_seconds(worker_tree) - workers_before
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)
    return Round(
        value, messages / seconds, 1000 * master_cpu / messages, 1000 * workers_cpu / messages
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", help="a setting's name, as in mxgate.toml")
    parser.add_argument("values", nargs="+", help="the values to compare")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sink = subprocess.Popen(
        ["smtp-sink", "-u", "nobody", SINK, "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: list[Round] = []
    try:
        for number in range(1, args.rounds + 1):
            for value in args.values:
                result = one_round(args.setting, value, args.concurrency, args.messages)
                results.append(result)
                print(
                    f"round {number} {args.setting}={value}: {result.rate:,.0f} messages/s, "
                    f"master {result.master_ms:.3f} ms, workers {result.workers_ms:.3f} ms "
                    f"per message",
                    flush=True,
                )
    finally:
        sink.terminate()
        sink.wait(10)
    for value in args.values:
        mine = [r for r in results if r.value == value]
        print(
            f"median {args.setting}={value}: "
            f"{statistics.median(r.rate for r in mine):,.0f} messages/s, "
            f"master {statistics.median(r.master_ms for r in mine):.3f} ms, "
            f"workers {statistics.median(r.workers_ms for r in mine):.3f} ms per message "
            f"(c={args.concurrency}, {args.messages} messages, {len(mine)} rounds)"
        )


if __name__ == "__main__":
    main()
