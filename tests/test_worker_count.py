"""How many SMTP workers ``mxgate serve`` starts when ``workers`` is 0: one per
usable core less one, where a container's CPU quota caps the cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mxgate import cpus, supervisor


def _affinity(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)))


def _tree(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup with ``files`` and a fake /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_cgroup)
    return root, proc


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 2), (8, 7)])
def test_one_worker_per_core_less_the_queue_managers_and_never_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cores: int, workers: int
) -> None:
    _affinity(monkeypatch, cores)
    monkeypatch.setattr(cpus, "PROC_SELF_CGROUP", tmp_path / "absent")
    assert supervisor.default_worker_count() == workers


def test_a_v2_quota_caps_the_cores_and_an_ancestor_counts_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _affinity(monkeypatch, 64)
    root, proc = _tree(
        tmp_path,
        "0::/kubepods/pod1/box\n",
        {
            "kubepods/pod1/box/cpu.max": "max 100000",
            "kubepods/pod1/cpu.max": "250000 100000",  # 2.5 CPUs: 3
            "kubepods/cpu.max": "max 100000",
        },
    )
    assert cpus.cgroup_cpu_limit(root, proc) == 3
    assert cpus.available_cpus(root, proc) == 3
    # A quota below one CPU still leaves one.
    (root / "kubepods/pod1/box/cpu.max").write_text("50000 100000\n")
    assert cpus.available_cpus(root, proc) == 1


def test_a_v1_quota_in_a_hybrid_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _affinity(monkeypatch, 16)
    root, proc = _tree(
        tmp_path,
        "4:memory:/box\n2:cpu,cpuacct:/box\n0::/\n",
        {
            "cpu,cpuacct/box/cpu.cfs_quota_us": "400000",
            "cpu,cpuacct/box/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    assert cpus.available_cpus(root, proc) == 4


@pytest.mark.parametrize(
    "files",
    [
        {},  # no cgroup files at all
        {"cpu.max": "max 100000"},
        {"cpu.max": "garbage"},
        {"cpu.max": "0 100000"},
        {"cpu.max": "200000 0"},
    ],
)
def test_no_quota_or_an_unreadable_one_leaves_the_affinity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str]
) -> None:
    _affinity(monkeypatch, 6)
    root, proc = _tree(tmp_path, "0::/\n", files)
    assert cpus.cgroup_cpu_limit(root, proc) is None
    assert cpus.available_cpus(root, proc) == 6


def test_the_affinity_stays_the_cap_under_a_larger_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _affinity(monkeypatch, 2)
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "800000 100000"})
    assert cpus.available_cpus(root, proc) == 2
