"""A quick look at mxgate alone, for iterating on the hot path.

Uses the lab of bench/compare.py (same PostgreSQL cluster, data set, smtp-sink
next hop and load client) but starts only mxgate, runs the workloads asked for
and prints accept and end-to-end rates, CPU seconds per 1000 messages (workers
and master apart) and RCPT latency. It writes no report: figures that go into
BENCHMARKS.md come from bench/run.sh, side by side with Postfix.

  python bench/probe.py [--quick] [--workload C:R ...] [--duration S] [--reps N]
                        [--profile DIR]

--profile records py-spy raw samples (``--threads``) of the master and one
worker during the first workload into DIR.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lab
import psutil
from compare import FULL, QUICK, Bench
from lab import log


class Probe(Bench):
    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.pg.start()
        self.mxgate.configure(self.pg)
        lab.prepare_databases(self.pg, self.scale, self.ports, self.mxgate.config)
        self.sink_a.start()
        self.sink_b.start()
        import shutil

        shutil.rmtree(self.mxgate.spool, ignore_errors=True)
        started = self.mxgate.start()
        log(f"mxgate listening after {started:.1f} s")

    def teardown(self) -> None:
        self.mxgate.stop()
        self.sink_a.stop()
        self.sink_b.stop()
        if not self.args.keep_running:
            self.pg.stop()
        self.blackhole.close()

    def profile_start(self, outdir: Path, duration: float) -> list[subprocess.Popen[bytes]]:
        pyspy = Path(sys.executable).parent / "py-spy"
        master = psutil.Process(self.mxgate.pid)
        targets = {"master": master.pid, "worker": master.children()[0].pid}
        outdir.mkdir(parents=True, exist_ok=True)
        procs = []
        for name, pid in targets.items():
            for mode, extra in (("", []), ("-gil", ["--gil"])):
                procs.append(
                    subprocess.Popen(
                        [
                            str(pyspy),
                            "record",
                            "-p",
                            str(pid),
                            "-d",
                            str(int(duration) + 1),
                            "-r",
                            "250",
                            "-f",
                            "raw",
                            "--threads",
                            "--nonblocking",
                            "-o",
                            str(outdir / f"{name}{mode}.txt"),
                            *extra,
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        time.sleep(0.5)
        return procs


def parse_workload(text: str) -> tuple[int, int, float]:
    shape, _, rate = text.partition("@")
    c, r = (int(x) for x in shape.split(":"))
    return c, r, float(rate or 0)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the 100k-mailbox data set")
    p.add_argument(
        "--workload",
        action="append",
        default=[],
        help="C:R or C:R@RATE (messages/s offered; default 1:1 10:1 50:1)",
    )
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--profile", type=Path)
    p.add_argument("--workers", type=int, default=0, help="SMTP workers (default: mxgate's)")
    p.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("MXBENCH_DIR", "/tmp/mxgate-bench"))
    )
    p.add_argument("--keep-running", action="store_true", help="leave PostgreSQL running")
    args = p.parse_args()
    workloads = [parse_workload(w) for w in args.workload] or [
        (1, 1, 0.0),
        (10, 1, 0.0),
        (50, 1, 0.0),
    ]
    bench = Probe(args)
    if args.workers:
        bench.mxgate.workers = args.workers
    bench.plan = dict(QUICK if args.quick else FULL)
    bench.scale = lab.Scale(mailboxes=int(bench.plan["mailboxes"]))
    rows: list[dict[str, Any]] = []
    try:
        bench.setup()
        bench.run_gateway("mxgate", 10, 1, -1, 1.0, record=False)  # warm-up
        for i, (c, r, rate) in enumerate(workloads):
            profs = []
            if args.profile is not None and i == 0:
                profs = bench.profile_start(args.profile, args.duration * args.reps)
            for rep in range(args.reps):
                rows.append(
                    bench.run_gateway("mxgate", c, r, rep, args.duration, record=False, rate=rate)
                )
            for proc in profs:
                proc.wait(120)
    finally:
        bench.teardown()
    print(
        f"{'c:r':>6} {'accept/s':>9} {'e2e/s':>8} {'cpu/1000':>9} {'workers':>8} "
        f"{'master':>7} {'user':>6} {'sys':>6} {'rcpt50':>6} {'rcpt99':>6} "
        f"{'dot50':>6} {'dot99':>6}"
    )
    for i, (c, r, rate) in enumerate(workloads):
        sel = rows[i * args.reps : (i + 1) * args.reps]

        def m(key: str, sel: list[dict[str, Any]] = sel) -> float:
            return float(statistics.median(x[key] for x in sel))

        def per(key: str, sel: list[dict[str, Any]] = sel) -> float:
            return float(
                statistics.median(1000 * x[key] / max(1, x["messages_accepted"]) for x in sel)
            )

        lat = sel[0]["rcpt_latency_ok"]
        dot = sel[0].get("data_latency_ok", {})
        print(
            f"{c:>3}:{r:<2}{'@' + format(rate, 'g') if rate else ''} {m('accept_rate'):9.1f} "
            f"{m('e2e_rate'):8.1f} {per('cpu_s'):9.2f} "
            f"{per('cpu_s') - per('cpu_master_s'):8.2f} {per('cpu_master_s'):7.2f} "
            f"{per('cpu_user_s'):6.2f} {per('cpu_system_s'):6.2f} "
            f"{lat.get('p50_us', 0) / 1000:6.2f} {lat.get('p99_us', 0) / 1000:6.2f} "
            f"{dot.get('p50_us', 0) / 1000:6.2f} {dot.get('p99_us', 0) / 1000:6.2f}"
        )


if __name__ == "__main__":
    main()
