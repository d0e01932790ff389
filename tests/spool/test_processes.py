"""Real processes: kill -9 in the middle of a burst, and two writers on one spool."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mxgate.spool import Queue, RecoveryReport, Spool
from tests.spool.child import body_size
from tests.spool.util import assert_clean, assert_intact, make_body

REPO = Path(__file__).resolve().parents[2]


def start_writer(root: Path, count: int, concurrency: int = 8) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.spool.child", str(root), str(count), str(concurrency)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_all_intact(root: Path, acknowledged: set[str]) -> RecoveryReport:
    with Spool(root) as spool:
        report = spool.recover(verify_bodies=True)
        assert report.corrupt == []
        assert_clean(spool)
        present = set(spool.scan(Queue.INCOMING))
        missing = acknowledged - present
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        for queue_id in present:
            assert_intact(spool, queue_id, make_body(queue_id, body_size(queue_id)))
        return report


def test_kill_9_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    acknowledged: set[str] = set()
    interrupted = 0
    for delay in (0.002, 0.005, 0.011):
        child = start_writer(root, count=-1)
        assert child.stdout is not None
        seen = 0
        while seen < 60:
            line = child.stdout.readline()
            assert line.endswith("\n"), f"writer died: {child.communicate()[1]}"
            acknowledged.add(line.strip())
            seen += 1
        time.sleep(delay)  # lands at a different point of the commit cycle each round
        child.send_signal(signal.SIGKILL)  # mid-burst: 8 sessions are writing
        rest, _ = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        # Only whole lines were acknowledged (a line is written after its commit).
        acknowledged.update(line for line in rest.split("\n")[:-1] if line)
        report = check_all_intact(root, acknowledged)
        interrupted += report.tmp_removed + report.orphans_removed
    assert len(acknowledged) >= 180
    assert interrupted > 0, "the kills never caught a message in flight"


def test_two_processes_share_one_spool(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root):
        pass  # created before either writer starts
    children = [start_writer(root, count=150) for _ in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    ids = [out.split() for out, _ in outputs]
    assert all(len(each) == 150 for each in ids)
    everything = set(ids[0]) | set(ids[1])
    assert len(everything) == 300, "two messages got the same queue id"
    assert {i[11:16] for i in ids[0]}.isdisjoint({i[11:16] for i in ids[1]})  # pid part
    check_all_intact(root, everything)
    with Spool(root) as spool:
        assert len(spool.scan(Queue.INCOMING)) == 300
