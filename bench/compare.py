"""Benchmark: mxgate against the tutorial's Postfix + PostgreSQL gateway.

Sets up a closed lab on loopback (bench/lab.py): a private PostgreSQL 15
cluster (Debian's binaries) with database ``mail`` in the tutorial's schema and
a data set of 1,000,000 mailboxes (``--quick``: 100,000), a reference Postfix
configured as the tutorial describes (bench/postfix/), ``mxgate serve`` on a
migrated copy of the same rows, and smtp-sink next hops. Then runs the same
workloads against Postfix, mxgate and the raw smtp-source -> smtp-sink
loopback limit, interleaved and repeated:

  throughput   accept and end-to-end rate, concurrency 1, 10, 50, 1 and 5
               recipients, 4 KiB messages, from 127.0.0.2-127.0.0.6 (outside
               mynetworks); CPU seconds per 1000 messages; RCPT latency
  placement    one session at a time, the floor (floor.py) and mxgate with
               the client on the same CPU, on another, or where the scheduler
               puts it (placement.py)
  latency      RCPT and end-of-DATA reply latency at a fixed offered load
               (100 messages/s over 10 sessions, open loop), both gateways
  rejection    unknown recipients (dictionary attack), 9 per session
  edits        time from an INSERT into mailbox until the gateway accepts it
  outage       PostgreSQL stopped: fraction of valid recipients accepted
  profile      py-spy on mxgate's processes during one extra run (not timed)

and writes bench/results.json, BENCHMARKS.md and bench/comparison.png.

Usage: bench/run.sh [--quick]   (installs what is missing, then runs this)
       python bench/compare.py [--quick] [--reps N] [--duration S] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import lab
import placement
import psutil
from lab import log
from loadgen import ClientProtocol, connect

SOURCES = "127.0.0.2-127.0.0.6"
SIZE = 4096
CONCURRENCY = (1, 10, 50)
RCPTS = (1, 5)
REJECT_CONCURRENCY = 10
REJECT_RCPTS = 9  # per session: below Postfix's smtpd_soft_error_limit (10) tarpit
# The latency workload: an offered load that both gateways carry (Postfix peaks
# near 290 messages/s here), so that reply latencies are service times, not the
# queueing of a saturated machine that the throughput runs measure.
LATENCY_RATE = 100.0
LATENCY_CONCURRENCY = 10

# The workloads in the order of a full run; --only picks some of them.
STAGES = ("throughput", "placement", "latency", "rejection", "profile", "edits", "outage")

FULL = {
    "mailboxes": 1_000_000,
    "reps": 5,
    "duration": 8.0,
    "reject_duration": 10.0,
    "latency": 10.0,
    "edits": 10,
    "outage": 30.0,
    "profile": 10.0,
}
QUICK = {
    "mailboxes": 100_000,
    "reps": 2,
    "duration": 2.0,
    "reject_duration": 3.0,
    "latency": 4.0,
    "edits": 4,
    "outage": 10.0,
    "profile": 4.0,
}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.floor_port: int | None = None  # while the latency stage runs the floor
        self.plan = dict(QUICK if args.quick else FULL)
        if args.reps:
            self.plan["reps"] = args.reps
        if args.duration:
            self.plan["duration"] = args.duration
        self.root: Path = args.workdir
        self.ports = lab.Ports.from_env()
        self.scale = lab.Scale(mailboxes=int(self.plan["mailboxes"]))
        self.pg = lab.Postgres(self.root / "pg", self.ports.postgres)
        self.postfix = lab.Postfix(self.root / "postfix", self.ports)
        # DNS for mxgate's MX lookups: a bound port that never answers (nothing
        # here needs DNS, and nothing may try to reach a real resolver).
        self.blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.blackhole.bind((lab.LOOPBACK, 0))
        self.mxgate = lab.Mxgate(
            self.root / "mxgate", self.ports, dns_port=self.blackhole.getsockname()[1]
        )
        sinks = self.root / "sinks"
        self.sink_a = lab.Sink(sinks, "a", self.ports.sink_a)
        self.sink_b = lab.Sink(sinks, "b", self.ports.sink_b)
        self.sink_limit = lab.Sink(sinks, "limit", self.ports.sink_limit)
        self.sampler: lab.Sampler | None = None
        self.runs: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}

    # -- set-up and tear-down ------------------------------------------------
    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        # Leftovers of an interrupted run: our own instances, by their own files.
        self.postfix.stop()
        log(f"PostgreSQL on {lab.LOOPBACK}:{self.ports.postgres} ({self.pg.datadir})")
        self.pg.start()
        self.mxgate.configure(self.pg)
        lab.prepare_databases(self.pg, self.scale, self.ports, self.mxgate.config)
        rows = lab.count_rows(self.pg, lab.POSTFIX_DB)
        rows_mx = lab.count_rows(self.pg, lab.MXGATE_DB)
        if rows != rows_mx:
            raise RuntimeError(f"the two databases differ: {rows} vs {rows_mx}")
        self.results["rows"] = rows
        for sink in (self.sink_a, self.sink_b, self.sink_limit):
            sink.start()
        log(f"Postfix on {lab.LOOPBACK}:{self.ports.postfix}")
        self.postfix.configure()
        self.postfix.flush_queue()
        self.postfix.start()
        log(f"mxgate on {lab.LOOPBACK}:{self.ports.mxgate}")
        shutil.rmtree(self.mxgate.spool, ignore_errors=True)
        started = self.mxgate.start()
        log(f"mxgate listening after {started:.1f} s")
        self.results["mxgate_start_s"] = started
        pg_pid = self.pg.pid()
        self.sampler = lab.Sampler(
            members={
                "postfix": (self.postfix.master_pid(), None),
                "mxgate": (self.mxgate.pid, None),
                "postgresql": (pg_pid, None),
                # Each gateway with the cluster's shared processes and its own backends.
                "postgresql for postfix": (pg_pid, f" {lab.MXGATE_DB} "),
                "postgresql for mxgate": (pg_pid, f" {lab.POSTFIX_DB} "),
            },
            groups={
                "postfix+postgresql": ("postfix", "postgresql for postfix"),
                "mxgate+postgresql": ("mxgate", "postgresql for mxgate"),
            },
        )
        self.sampler.sample()
        self.results["memory_idle"] = {k: vars(v).copy() for k, v in self.sampler.peaks.items()}
        self.sampler.peaks.clear()
        self.sampler.start()

    def teardown(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.mxgate.stop()
        self.postfix.stop()
        for sink in (self.sink_a, self.sink_b, self.sink_limit):
            sink.stop()
        if not self.args.keep_running:
            self.pg.stop()
        self.blackhole.close()

    # -- helpers -----------------------------------------------------------------
    def sink_count(self) -> int:
        return self.sink_a.messages() + self.sink_b.messages()

    def roots(self, system: str) -> list[int | None]:
        if system == "postfix":
            return [self.postfix.master_pid()]
        if system == "mxgate":
            return [self.mxgate.pid]
        return []

    def target(self, system: str) -> str:
        port = {
            "postfix": self.ports.postfix,
            "mxgate": self.ports.mxgate,
            "floor": self.floor_port,
        }[system]
        return f"{lab.LOOPBACK}:{port}"

    def loadgen(
        self,
        target: str,
        *,
        concurrency: int,
        rcpts: int,
        duration: float,
        mode: str = "deliver",
        seed: int = 1,
        rate: float = 0.0,
    ) -> dict[str, Any]:
        cmd = [
            sys.executable,
            str(lab.BENCH_DIR / "loadgen.py"),
            "--target",
            target,
            "--sources",
            SOURCES,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            "--rcpts",
            str(rcpts),
            "--size",
            str(SIZE),
            "--mode",
            mode,
            "--mailboxes",
            str(self.scale.regular_mailboxes),
            "--domains",
            str(self.scale.domains),
            "--seed",
            str(seed),
            "--rate",
            str(rate),
        ]
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=duration + 300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed:\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def queued(self, system: str) -> int:
        if system == "floor":
            return 0  # keeps nothing
        return self.postfix.queued() if system == "postfix" else self.mxgate.queued()

    def wait_idle(self, system: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.queued(system) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.queued(system)
        if left:
            log(f"  warning: {left} message(s) still queued in {system} after {timeout:.0f} s")

    # -- throughput ---------------------------------------------------------------
    def run_gateway(
        self,
        system: str,
        concurrency: int,
        rcpts: int,
        rep: int,
        duration: float,
        record: bool = True,
        rate: float = 0.0,
    ) -> dict[str, Any]:
        self.wait_idle(system)
        roots = self.roots(system)
        pg_root = self.pg.pid()
        before_sinks = self.sink_count()
        cpu0 = lab.cpu_of(roots)
        split0 = lab.cpu_breakdown(roots[0])
        pg0 = lab.tree_cpu(pg_root)
        if rate:
            out = self.loadgen(
                self.target(system),
                concurrency=concurrency,
                rcpts=rcpts,
                duration=duration,
                seed=1000 * rep + concurrency * 10 + rcpts,
                rate=rate,
            )
        else:
            out = self.source_load(self.target(system), concurrency, rcpts, duration)
        counts = out["counts"]
        accepted = counts.get("messages_accepted", 0)
        timeout = max(60.0, 10 * duration)
        deadline = time.monotonic() + timeout
        while self.sink_count() - before_sinks < accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        done_wall = time.time()
        arrived = self.sink_count() - before_sinks
        cpu = lab.cpu_of(roots) - cpu0
        split = {k: v - split0[k] for k, v in lab.cpu_breakdown(roots[0]).items()}
        cpu_pg = lab.tree_cpu(pg_root) - pg0
        e2e_s = done_wall - out["started_at"]
        run = {
            "system": system,
            "kind": "throughput",
            "concurrency": concurrency,
            "rcpts": rcpts,
            "rep": rep,
            "duration_s": duration,
            "elapsed_s": out["elapsed_s"],
            "messages_accepted": accepted,
            "rcpts_accepted": counts.get("rcpt_delivered", 0),
            "accept_rate": accepted / out["elapsed_s"],
            "arrived_at_sinks": arrived,
            "e2e_complete": arrived >= accepted,
            "e2e_s": e2e_s,
            # A run stopped by the clock may leave a few messages accepted but
            # not yet counted by the client: they arrive too and are not counted.
            "e2e_rate": min(arrived, accepted) / e2e_s if e2e_s > 0 else 0.0,
            "cpu_s": cpu,
            "cpu_postgresql_s": cpu_pg,
            "client_cpu_s": out["client_cpu_s"],
            "cpu_user_s": split["user"],
            "cpu_system_s": split["system"],
            "cpu_master_s": split["root"],
            "counts": counts,
            "samples": out["samples"],
            "rcpt_latency_ok": out["rcpt_latency_ok"],
            "data_latency_ok": out.get("data_latency_ok", {}),
            "rcpt_latency_tempfail": out["rcpt_latency_tempfail"],
        }
        if not run["e2e_complete"]:
            log(
                f"  warning: only {arrived} of {accepted} messages reached the sinks "
                f"after {timeout:.0f} s"
            )
        self.say(run)
        if record:
            self.runs.append(run)
        return run

    def source_load(
        self, target: str, concurrency: int, rcpts: int, duration: float
    ) -> dict[str, Any]:
        """``smtp-source`` (the issue's load client, in C) against a gateway for
        ``duration`` seconds; what it says in loadgen.py's terms.

        It runs with a message count it cannot reach and is stopped by the
        clock; ``-c`` prints a counter after each message's reply to the end of
        DATA (250: without ``-A`` any other reply makes it exit with an error,
        which counts as one)."""
        port = int(target.rpartition(":")[2])
        with tempfile.TemporaryFile() as counter, tempfile.TemporaryFile() as errors:
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            started_at = time.time()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                self.limit_command(concurrency, rcpts, 10_000_000, port=port, counter=True),
                stdin=subprocess.DEVNULL,
                stdout=counter,
                stderr=errors,
            )
            try:
                code = proc.wait(timeout=duration)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=30)
                code = 0
            elapsed = time.monotonic() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            counter.seek(0)
            errors.seek(0)
            # "1\r2\r3\r...": the number of messages answered 250 so far.
            numbers = re.findall(rb"(\d+)\r", counter.read())
            accepted = int(numbers[-1]) if numbers else 0
            complaint = errors.read().decode("ascii", "replace")
        counts: dict[str, int] = {
            "messages_accepted": accepted,
            "rcpt_delivered": accepted * rcpts,
        }
        samples: dict[str, list[str]] = {}
        if code != 0:
            counts["unexpected_exit"] = 1
            samples["unexpected_exit"] = [complaint[-500:]]
        return {
            "counts": counts,
            "elapsed_s": elapsed,
            "started_at": started_at,
            "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "samples": samples,
            "rcpt_latency_ok": {},
            "data_latency_ok": {},
            "rcpt_latency_tempfail": {},
        }

    def limit_command(
        self,
        concurrency: int,
        rcpts: int,
        messages: int,
        *,
        port: int | None = None,
        counter: bool = False,
    ) -> list[str]:
        # -l: payload bytes; smtp-source adds about 200 bytes of headers. -N
        # numbers the recipients: 1user@d0..., 2user@d0..., all mailboxes of
        # the data set (lab.Scale.source_mailboxes), all on one next hop.
        return [
            "smtp-source",
            *(["-c"] if counter else []),
            "-s",
            str(concurrency),
            "-m",
            str(messages),
            "-l",
            "3900",
            "-r",
            str(rcpts),
            "-N",
            "-f",
            "load@outside.example",
            "-t",
            "user@d0.bench.example",
            f"{lab.LOOPBACK}:{self.ports.sink_limit if port is None else port}",
        ]

    def run_limit(self, concurrency: int, rcpts: int, rep: int, duration: float) -> None:
        """smtp-source -> smtp-sink: the loopback limit."""
        messages = int(max(500, 5000 * duration / 2))
        before = self.sink_limit.messages()
        sink_proc = psutil.Process(self.sink_limit.proc.pid) if self.sink_limit.proc else None
        sink0 = sum(sink_proc.cpu_times()[:2]) if sink_proc else 0.0
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run(
            self.limit_command(concurrency, rcpts, messages),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        elapsed = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        deadline = time.monotonic() + 10
        while self.sink_limit.messages() - before < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        arrived = self.sink_limit.messages() - before
        sink_cpu = (sum(sink_proc.cpu_times()[:2]) if sink_proc else 0.0) - sink0
        client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        run = {
            "system": "limit",
            "kind": "throughput",
            "concurrency": concurrency,
            "rcpts": rcpts,
            "rep": rep,
            "elapsed_s": elapsed,
            "messages_accepted": messages,
            "accept_rate": messages / elapsed,
            "arrived_at_sinks": arrived,
            "e2e_rate": arrived / elapsed,
            "cpu_s": sink_cpu,
            "client_cpu_s": client_cpu,
            "e2e_complete": arrived >= messages,
        }
        self.say(run)
        self.runs.append(run)

    def say(self, run: dict[str, Any]) -> None:
        extra = ""
        if "e2e_rate" in run and run["system"] in ("postfix", "mxgate"):
            lat = run["rcpt_latency_ok"]
            extra = (
                f", e2e {run['e2e_rate']:7.1f}/s, cpu {run['cpu_s']:.1f}+"
                f"{run['cpu_postgresql_s']:.1f} s, rcpt p50/p99 "
                f"{lat.get('p50_us', 0) / 1000:.2f}/{lat.get('p99_us', 0) / 1000:.2f} ms"
            )
            bad = {
                k: v
                for k, v in run["counts"].items()
                if k.startswith(
                    (
                        "unexpected",
                        "greeting",
                        "connect_error",
                        "connection_lost",
                        "rcpt_4xx",
                        "rcpt_5xx",
                        "data_",
                    )
                )
            }
            if bad:
                extra += f" {bad} {run['samples']}"
        log(
            f"  {run['system']:8} c={run['concurrency']:<3} r={run['rcpts']} rep {run['rep']}: "
            f"{run['messages_accepted']:6} msgs, accept {run['accept_rate']:7.1f}/s{extra}"
        )

    def throughput(self) -> None:
        reps = int(self.plan["reps"])
        duration = float(self.plan["duration"])
        log(
            f"throughput: {reps} rounds x {len(CONCURRENCY) * len(RCPTS)} workloads, "
            f"{duration:g} s per gateway run"
        )
        for rep in range(reps):
            for rcpts in RCPTS:
                for conc in CONCURRENCY:
                    order = ["postfix", "mxgate", "limit"]
                    shift = rep % len(order)
                    for system in order[shift:] + order[:shift]:
                        if system in ("postfix", "mxgate"):
                            self.run_gateway(system, conc, rcpts, rep, duration)
                        else:
                            self.run_limit(conc, rcpts, rep, duration)

    def warmup(self) -> None:
        log("warm-up (not recorded)")
        for system in ("postfix", "mxgate"):
            self.run_gateway(
                system, 10, 1, -1, max(1.0, float(self.plan["duration"]) / 2), record=False
            )

    # -- one client at a time: where the two ends run ----------------------------
    def placement(self) -> None:
        """c=1, 1 recipient, for the floor and mxgate, with the server and the
        load client pinned to one CPU, to two, or left to the scheduler: on a
        VM whose idle vCPUs halt, a round trip across vCPUs costs wake-ups
        that one on a single vCPU does not, and that decides the c=1 rate."""
        if len(os.sched_getaffinity(0)) < 2 or self.mxgate.pid is None:
            return
        reps = min(2, int(self.plan["reps"]))
        duration = float(self.plan["duration"])
        log(f"placement: {reps} rounds, floor and mxgate, c=1, 1 rcpt, {duration:g} s each")
        recipient = "user@d0.bench.example"
        found: dict[str, dict[str, list[float]]] = {}
        with self.floor() as (floor_port, floor):
            servers = {
                "floor": (floor_port, [floor.pid]),
                "mxgate": (self.ports.mxgate, placement.mxgate_workers(self.ports.mxgate)),
            }
            try:
                for rep in range(reps):
                    for system, (port, pids) in servers.items():
                        for where in placement.placements():
                            rate = placement.placed_rate(port, pids, where, duration, recipient)
                            found.setdefault(system, {}).setdefault(where, []).append(rate)
                            log(f"  {system:7s} {where:8s} rep {rep}: {rate:7.1f}/s")
                    self.wait_idle("mxgate")
            except (RuntimeError, OSError) as exc:
                # A measuring aid: the rest of the run goes on without it.
                log(f"placement: stopped: {exc}")
                found = {}
        self.results["placement"] = found

    @contextlib.contextmanager
    def floor(self) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
        """floor.py on a free loopback port for the block (its port also in
        ``self.floor_port``, for ``target("floor")``), stopped after it."""
        with socket.socket() as probe:
            probe.bind((lab.LOOPBACK, 0))
            port = probe.getsockname()[1]
        proc = placement.start_floor(port, self.root)
        self.floor_port = port
        try:
            yield port, proc
        finally:
            self.floor_port = None
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    # -- latency at a fixed offered load ------------------------------------------------
    def latency(self) -> None:
        """RCPT and end-of-DATA reply times at a load all carry, for Postfix, mxgate
        and the floor (floor.py: fixed replies and an fdatasync per message, the
        least a durable Python server does), in turn, rotating the order: the
        floor's figures show what the machine allowed in the same minutes."""
        reps = int(self.plan["reps"])
        duration = float(self.plan.get("latency", 4.0))
        log(
            f"latency: {reps} rounds, {duration:g} s each, {LATENCY_RATE:g} messages/s offered "
            f"over {LATENCY_CONCURRENCY} sessions, 1 rcpt; Postfix, mxgate and the floor"
        )
        systems = ("postfix", "mxgate", "floor")
        with self.floor():
            for rep in range(reps):
                for system in systems[rep % 3 :] + systems[: rep % 3]:
                    self.wait_idle(system)
                    self.latency_round(system, rep, duration)

    def latency_round(self, system: str, rep: int, duration: float) -> None:
        stolen = lab.StolenTime()
        out = self.loadgen(
            self.target(system),
            concurrency=LATENCY_CONCURRENCY,
            rcpts=1,
            duration=duration,
            seed=500 + rep,
            rate=LATENCY_RATE,
        )
        run = {
            "system": system,
            "kind": "latency",
            "concurrency": LATENCY_CONCURRENCY,
            "rate": LATENCY_RATE,
            "rep": rep,
            "elapsed_s": out["elapsed_s"],
            "messages_accepted": out["counts"].get("messages_accepted", 0),
            "rcpt_latency_ok": out["rcpt_latency_ok"],
            "data_latency_ok": out.get("data_latency_ok", {}),
            "counts": out["counts"],
            "steal_pct": stolen.percent(),
        }
        rl, dl = run["rcpt_latency_ok"], run["data_latency_ok"]
        log(
            f"  {system:8} rep {rep}: {run['messages_accepted']} msgs; RCPT p50/p99 "
            f"{rl.get('p50_us', 0) / 1000:.2f}/{rl.get('p99_us', 0) / 1000:.2f} ms, "
            f"end of DATA p50/p99 {dl.get('p50_us', 0) / 1000:.2f}/"
            f"{dl.get('p99_us', 0) / 1000:.2f} ms; stolen {run['steal_pct']:.1f}%"
        )
        self.runs.append(run)

    # -- rejection ---------------------------------------------------------------
    def rejection(self) -> None:
        reps = int(self.plan["reps"])
        duration = float(self.plan["reject_duration"])
        log(
            f"unknown recipients: {reps} rounds, {duration:g} s each, c={REJECT_CONCURRENCY}, "
            f"{REJECT_RCPTS} RCPTs per session"
        )
        for rep in range(reps):
            for system in ("postfix", "mxgate") if rep % 2 == 0 else ("mxgate", "postfix"):
                roots = self.roots(system)
                cpu0 = lab.cpu_of(roots)
                pg0 = lab.tree_cpu(self.pg.pid())
                out = self.loadgen(
                    self.target(system),
                    concurrency=REJECT_CONCURRENCY,
                    rcpts=REJECT_RCPTS,
                    duration=duration,
                    mode="unknown",
                    seed=77 + rep,
                )
                c = out["counts"]
                run = {
                    "system": system,
                    "kind": "reject",
                    "concurrency": REJECT_CONCURRENCY,
                    "rcpts": REJECT_RCPTS,
                    "rep": rep,
                    "elapsed_s": out["elapsed_s"],
                    "rejected": c.get("rcpt_5xx", 0),
                    "accepted": c.get("rcpt_2xx", 0),
                    "tempfail": c.get("rcpt_4xx", 0),
                    "reject_rate": c.get("rcpt_5xx", 0) / out["elapsed_s"],
                    "cpu_s": lab.cpu_of(roots) - cpu0,
                    "cpu_postgresql_s": lab.tree_cpu(self.pg.pid()) - pg0,
                    "rcpt_latency_rejected": out["rcpt_latency_rejected"],
                    "counts": c,
                    "samples": out["samples"],
                }
                log(
                    f"  {system:8} rep {rep}: {run['rejected']} rejected "
                    f"({run['reject_rate']:.1f}/s), {run['accepted']} accepted, "
                    f"{run['tempfail']} 4xx; p50/p99 "
                    f"{run['rcpt_latency_rejected'].get('p50_us', 0) / 1000:.2f}/"
                    f"{run['rcpt_latency_rejected'].get('p99_us', 0) / 1000:.2f} ms"
                )
                self.runs.append(run)

    # -- edits ------------------------------------------------------------------------
    async def probe(self, port: int, rcpt: str) -> int:
        loop = asyncio.get_running_loop()
        proto = ClientProtocol()
        await connect(loop, proto, lab.LOOPBACK, port, "127.0.0.2")
        try:
            await proto.read()
            await proto.command(b"EHLO probe.outside.example\r\n")
            await proto.command(b"MAIL FROM:<probe@outside.example>\r\n")
            code, _ = await proto.command(f"RCPT TO:<{rcpt}>\r\n".encode())
            await proto.command(b"QUIT\r\n")
            await proto.wait_closed(1.0)
            return code
        finally:
            if proto.transport is not None:
                proto.transport.close()

    async def edit_once(self, system: str, index: int) -> dict[str, Any]:
        database = lab.POSTFIX_DB if system == "postfix" else lab.MXGATE_DB
        port = self.ports.postfix if system == "postfix" else self.ports.mxgate
        rcpt = f"edit{index}-{uuid.uuid4().hex[:8]}@d2.bench.example"
        before = await self.probe(port, rcpt)
        conn = await asyncpg.connect(self.pg.dsn(database))
        try:
            t0 = time.monotonic()
            await conn.execute(
                "INSERT INTO mailbox (email, password, node) VALUES ($1, 'x', 'maila')", rcpt
            )
            committed = time.monotonic()
            probes = 0
            code = 0
            while time.monotonic() - committed < 30:
                code = await self.probe(port, rcpt)
                probes += 1
                if code == 250:
                    break
                await asyncio.sleep(0.005)
            took = time.monotonic() - committed
        finally:
            await conn.close()
        return {
            "system": system,
            "kind": "edit",
            "rep": index,
            "before": before,
            "after": code,
            "in_force_s": took if code == 250 else None,
            "insert_s": committed - t0,
            "probes": probes,
        }

    def edits(self) -> None:
        n = int(self.plan["edits"])
        log(f"edits: {n} INSERTs per gateway, each probed until it takes effect")
        for i in range(n):
            for system in ("postfix", "mxgate") if i % 2 == 0 else ("mxgate", "postfix"):
                run = asyncio.run(self.edit_once(system, i))
                took = run["in_force_s"]
                log(
                    f"  {system:8} edit {i}: RCPT {run['before']} before, {run['after']} after, "
                    + (
                        f"in force after {took * 1000:.0f} ms"
                        if took is not None
                        else "not in force after 30 s"
                    )
                )
                self.runs.append(run)
        for database in (lab.POSTFIX_DB, lab.MXGATE_DB):
            self.pg.psql("DELETE FROM mailbox WHERE email LIKE 'edit%'", database)

    # -- outage ---------------------------------------------------------------------------
    def outage(self) -> None:
        duration = float(self.plan["outage"])
        log(f"outage: PostgreSQL stopped; {duration:g} s of valid recipients per gateway, c=10")
        self.wait_idle("postfix")
        self.wait_idle("mxgate")
        self.pg.stop()
        try:
            for system in ("postfix", "mxgate"):
                before_sinks = self.sink_count()
                out = self.loadgen(
                    self.target(system), concurrency=10, rcpts=1, duration=duration, seed=99
                )
                c = out["counts"]
                accepted = c.get("messages_accepted", 0)
                deadline = time.monotonic() + 60
                while self.sink_count() - before_sinks < accepted and time.monotonic() < deadline:
                    time.sleep(0.05)
                attempted = c.get("rcpt_attempted", 0)
                run = {
                    "system": system,
                    "kind": "outage",
                    "duration_s": duration,
                    "rcpt_attempted": attempted,
                    "rcpt_accepted": c.get("rcpt_2xx", 0),
                    "rcpt_tempfail": c.get("rcpt_4xx", 0),
                    "rcpt_rejected": c.get("rcpt_5xx", 0),
                    "fraction_accepted": c.get("rcpt_2xx", 0) / attempted if attempted else 0.0,
                    "messages_accepted": accepted,
                    "arrived_at_sinks": self.sink_count() - before_sinks,
                    "counts": c,
                    "samples": out["samples"],
                }
                log(
                    f"  {system:8}: {run['rcpt_accepted']} of {attempted} valid recipients "
                    f"accepted ({run['fraction_accepted']:.1%}), {run['rcpt_tempfail']} 4xx, "
                    f"{run['arrived_at_sinks']} delivered; {out['samples']}"
                )
                self.runs.append(run)
        finally:
            self.pg.start()

    # -- profile ----------------------------------------------------------------------
    def profile(self) -> None:
        """py-spy on mxgate's master and one worker during a c=50 run (not timed)."""
        pyspy = Path(sys.executable).parent / "py-spy"
        if not pyspy.exists() or self.mxgate.pid is None:
            log("profile: py-spy not installed; skipped")
            return
        duration = float(self.plan["profile"])
        master = psutil.Process(self.mxgate.pid)
        workers = [p.pid for p in master.children()]
        targets = {"master": master.pid, "worker": workers[0] if workers else None}
        log(f"profile: py-spy on mxgate {targets} during {duration:g} s at c=50, 1 rcpt")
        outdir = self.root / "profile"
        outdir.mkdir(exist_ok=True)
        procs = {}
        for name, pid in targets.items():
            if pid is None:
                continue
            # Default mode: every sample of a thread that is not idle in the event
            # loop's poll (time blocked in a system call, such as fsync or unlink,
            # counts). "--gil": only samples holding the GIL, i.e. Python on CPU.
            for mode, extra in (("", []), (" --gil", ["--gil"])):
                key = name + mode
                procs[key] = subprocess.Popen(
                    [
                        str(pyspy),
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(int(duration) + 1),
                        "-r",
                        "200",
                        "-f",
                        "raw",
                        "-o",
                        str(outdir / f"{key.replace(' ', '')}.txt"),
                        "--nonblocking",
                        *extra,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        time.sleep(0.5)
        self.run_gateway("mxgate", 50, 1, -2, duration, record=False)
        summary = {}
        for name, proc in procs.items():
            proc.wait(120)
            summary[name] = summarise_profile(outdir / f"{name.replace(' ', '')}.txt")
        self.results["profile"] = summary

    # -- main -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.time()
        self.results["meta"] = self.meta()
        try:
            self.setup()
            self.warmup()
            for stage in self.args.only or STAGES:
                getattr(self, stage)()
        finally:
            self.teardown()
        if self.sampler is not None:
            self.results["memory_peak"] = {k: vars(v) for k, v in self.sampler.peaks.items()}
            self.results["sampler_cpu_s"] = self.sampler.sampling_cpu_s
        self.results["meta"]["wall_s"] = time.time() - started
        self.results["runs"] = self.runs
        self.results["summary"] = summarise(self.runs, self.results)
        return self.results

    def meta(self) -> dict[str, Any]:
        mem_kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")
            )
        )
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        disk = lab.run(["df", "-hT", str(self.root.parent)], check=False).strip().splitlines()
        return {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": self.args.quick,
            "plan": self.plan,
            "scale": dataclasses.asdict(self.scale),
            "machine": {
                "nproc": os.cpu_count(),
                "cpu_model": cpu,
                "memory_gib": round(mem_kb / 1024 / 1024, 1),
                "kernel": platform.release(),
                "disk": disk[-1] if disk else "",
                "python": f"{platform.python_implementation()} {platform.python_version()}",
                "postfix": lab.run(["postconf", "-d", "-h", "mail_version"]).strip(),
                "postgresql": lab.run([str(lab.PG_BIN / "postgres"), "--version"]).strip(),
                "mxgate": self.mxgate.version(),
                "mxgate_python": lab.python_description(lab.SERVE_PYTHON),
                "mxgate_source": source_state(),
                "mxgate_build": build_state(),
                "mxgate_workers": self.mxgate.workers,
                "load_average_at_start": os.getloadavg(),
            },
            "ports": dataclasses.asdict(self.ports),
            "commands": {
                "postfix_start": f"postfix -c {self.postfix.etc} start",
                "mxgate": " ".join(self.mxgate.command()),
                "sink": " ".join(self.sink_a.command()),
                "limit": " ".join(self.limit_command(10, 1, 10000)),
                "throughput": " ".join(
                    self.limit_command(10, 1, 10_000_000, port=0, counter=True)
                ).replace(":0", ":PORT")
                + f"  (stopped after {self.plan['duration']:g} s)",
                "loadgen": (
                    f"python bench/loadgen.py --target 127.0.0.1:PORT --sources {SOURCES}"
                    f" --concurrency C --duration {self.plan['duration']:g} --rcpts R"
                    f" --size {SIZE} --mailboxes {self.scale.regular_mailboxes}"
                    f" --domains {self.scale.domains}"
                ),
                "reject": (
                    f"python bench/loadgen.py --target 127.0.0.1:PORT --mode unknown"
                    f" --concurrency {REJECT_CONCURRENCY} --rcpts {REJECT_RCPTS}"
                    f" --duration {self.plan['reject_duration']:g}"
                ),
            },
        }


def build_state() -> str:
    """Whether mxgate's hot modules ran compiled (scripts/build-native) or as Python."""
    from mxgate import native

    why = native.stale()
    if why is not None:
        return f"a stale compiled build ({why})"
    if native.extension_paths():
        return f"its {len(native.MODULES)} hot modules compiled with mypyc (scripts/build-native)"
    return "plain Python (no compiled modules)"


def source_state() -> str:
    """The commit mxgate ran from, and whether src/ had uncommitted changes."""
    git = ["git", "-C", str(lab.REPO)]
    head = lab.run([*git, "log", "-1", "--format=%h %s"], check=False).strip()
    changed = lab.run([*git, "status", "--porcelain", "--", "src"], check=False).splitlines()
    state = f"commit {head}"
    if changed:
        state += f", plus {len(changed)} uncommitted file(s) under src/ (work in progress)"
    return state


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in py-spy raw output."""
    if not path.exists():
        return {}
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        names = [frame_name(f) for f in frames]
        self_counts[names[-1]] += count
        for name in set(names):
            if not any(marker in name for marker in FRAMEWORK):
                incl_counts[name] += count
    if not total:
        return {}
    return {
        "samples": total,
        "self": [(name, round(100 * c / total, 1)) for name, c in self_counts.most_common(top)],
        "inclusive": [
            (name, round(100 * c / total, 1)) for name, c in incl_counts.most_common(top + 10)
        ],
    }


# Frames every sample passes through (entry points, event loop, thread pool):
# left out of the inclusive list, which would otherwise start with them.
FRAMEWORK = (
    "(typer/",
    "(<frozen runpy>)",
    "(asyncio/",
    "(threading.py)",
    "(concurrent/",
    "(mxgate/__main__.py)",
    "(mxgate/cli/",
    "(uvloop/",
    "(selectors.py)",
)


def frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


# -- summary ---------------------------------------------------------------------------


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values: list[float]) -> list[float] | None:
    return [min(values), max(values)] if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(runs: list[dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    def pick(kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r for r in runs if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())
        ]

    throughput = []
    for rcpts in RCPTS:
        for conc in CONCURRENCY:
            row: dict[str, Any] = {"concurrency": conc, "rcpts": rcpts}
            for system in ("postfix", "mxgate", "limit"):
                rs = pick("throughput", system=system, concurrency=conc, rcpts=rcpts)
                entry: dict[str, Any] = {
                    "n": len(rs),
                    "accept_rate": med([r["accept_rate"] for r in rs]),
                    "e2e_rate": med([r["e2e_rate"] for r in rs]),
                    "all_e2e_complete": all(r.get("e2e_complete", True) for r in rs),
                    "accept_range": spread([r["accept_rate"] for r in rs]),
                    "e2e_range": spread([r["e2e_rate"] for r in rs]),
                }
                if system in ("postfix", "mxgate"):
                    entry["cpu_s_per_1000"] = med(
                        [
                            1000 * (r["cpu_s"] + r["cpu_postgresql_s"]) / r["messages_accepted"]
                            for r in rs
                            if r["messages_accepted"]
                        ]
                    )
                    entry["cpu_own_s_per_1000"] = med(
                        [
                            1000 * r["cpu_s"] / r["messages_accepted"]
                            for r in rs
                            if r["messages_accepted"]
                        ]
                    )
                    for part in ("user", "system", "master"):
                        entry[f"cpu_{part}_s_per_1000"] = med(
                            [
                                1000 * r[f"cpu_{part}_s"] / r["messages_accepted"]
                                for r in rs
                                if r["messages_accepted"] and f"cpu_{part}_s" in r
                            ]
                        )
                    entry["client_cpu_s_per_1000"] = med(
                        [
                            1000 * r["client_cpu_s"] / r["messages_accepted"]
                            for r in rs
                            if r["messages_accepted"]
                        ]
                    )
                    # smtp-source times no single reply: None for its runs.
                    timed = [r for r in rs if r["rcpt_latency_ok"].get("n")]
                    entry["rcpt_p50_ms"] = med(
                        [r["rcpt_latency_ok"]["p50_us"] / 1000 for r in timed]
                    )
                    entry["rcpt_p99_ms"] = med(
                        [r["rcpt_latency_ok"]["p99_us"] / 1000 for r in timed]
                    )
                    entry["errors"] = sum(
                        v
                        for r in rs
                        for k, v in r["counts"].items()
                        if k.startswith(
                            (
                                "unexpected",
                                "greeting",
                                "connect_error",
                                "connection_lost",
                                "rcpt_4xx",
                                "rcpt_5xx",
                                "data_",
                            )
                        )
                    )
                row[system] = entry
            pf, mx, lim = row["postfix"], row["mxgate"], row["limit"]
            row["accept_mx_over_pf"] = ratio(mx["accept_rate"], pf["accept_rate"])
            row["accept_mx_over_limit"] = ratio(mx["accept_rate"], lim["accept_rate"])
            row["e2e_mx_over_pf"] = ratio(mx["e2e_rate"], pf["e2e_rate"])
            row["e2e_mx_over_limit"] = ratio(mx["e2e_rate"], lim["e2e_rate"])
            throughput.append(row)

    reject: dict[str, Any] = {}
    for system in ("postfix", "mxgate"):
        rs = pick("reject", system=system)
        reject[system] = {
            "n": len(rs),
            "reject_rate": med([r["reject_rate"] for r in rs]),
            "p50_ms": med([r["rcpt_latency_rejected"].get("p50_us", 0) / 1000 for r in rs]),
            "p99_ms": med([r["rcpt_latency_rejected"].get("p99_us", 0) / 1000 for r in rs]),
            "cpu_s_per_1000": med(
                [
                    1000 * (r["cpu_s"] + r["cpu_postgresql_s"]) / r["rejected"]
                    for r in rs
                    if r["rejected"]
                ]
            ),
            "wrongly_accepted": sum(r["accepted"] for r in rs),
            "tempfail": sum(r["tempfail"] for r in rs),
        }
    reject["mx_over_pf"] = ratio(reject["mxgate"]["reject_rate"], reject["postfix"]["reject_rate"])

    latency: dict[str, Any] = {}
    for system in ("postfix", "mxgate", "floor"):
        rs = pick("latency", system=system)
        if not rs:
            continue  # the floor: not in runs before session 14
        latency[system] = {
            "steal_pct": med([r["steal_pct"] for r in rs if "steal_pct" in r]),
            "n": len(rs),
            "messages": sum(r["messages_accepted"] for r in rs),
            "rate": rs[0]["rate"] if rs else None,
            "concurrency": rs[0]["concurrency"] if rs else None,
        }
        for key, field in (("rcpt", "rcpt_latency_ok"), ("data", "data_latency_ok")):
            for q in ("p50", "p99", "p999"):
                latency[system][f"{key}_{q}_ms"] = med(
                    [r[field][f"{q}_us"] / 1000 for r in rs if f"{q}_us" in r.get(field, {})]
                )

    edits = {}
    for system in ("postfix", "mxgate"):
        rs = pick("edit", system=system)
        took = sorted(r["in_force_s"] for r in rs if r["in_force_s"] is not None)
        edits[system] = {
            "n": len(rs),
            "median_s": med(took),
            "max_s": took[-1] if took else None,
            "not_in_force": sum(1 for r in rs if r["in_force_s"] is None),
        }

    outage = {
        r["system"]: {
            k: r[k]
            for k in (
                "fraction_accepted",
                "rcpt_attempted",
                "rcpt_accepted",
                "rcpt_tempfail",
                "messages_accepted",
                "arrived_at_sinks",
            )
        }
        for r in pick("outage")
    }

    memory = results.get("memory_peak", {})
    return {
        "throughput": throughput,
        "reject": reject,
        "latency": latency,
        "edits": edits,
        "outage": outage,
        "memory": memory,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100k mailboxes, 2 rounds, short runs")
    p.add_argument("--reps", type=int, default=0, help="rounds (default 3, quick 2)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds per gateway run")
    p.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("MXBENCH_DIR", "/tmp/mxgate-bench"))
    )
    p.add_argument("--results", type=Path, default=lab.BENCH_DIR / "results.json")
    p.add_argument("--markdown", type=Path, default=lab.REPO / "BENCHMARKS.md")
    p.add_argument("--chart", type=Path, default=lab.BENCH_DIR / "comparison.png")
    p.add_argument("--keep-running", action="store_true", help="leave PostgreSQL running")
    p.add_argument(
        "--only",
        action="append",
        choices=STAGES,
        help="run only this workload (repeatable) after the warm-up; its figures go to the "
        "log and to --results (default WORKDIR/only.json), BENCHMARKS.md is left alone",
    )
    p.add_argument("--command", default="bench/run.sh", help=argparse.SUPPRESS)
    args = p.parse_args()
    if os.geteuid() != 0:
        p.error("needs root (Postfix instance, PostgreSQL as user postgres)")
    if args.only and "--results" not in sys.argv:
        args.results = args.workdir / "only.json"
    results = Bench(args).run()
    results["meta"]["command"] = args.command + (" --quick" if args.quick else "")
    args.results.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"results: {args.results}")
    if args.only:
        return  # a partial run: the report needs every workload
    import report

    report.write_chart(results, args.chart)
    report.write_markdown(results, args.markdown, args.chart, args.results)
    log(f"report: {args.markdown}, chart: {args.chart}")
    print(report.table(results))


if __name__ == "__main__":
    main()
