"""How many CPUs this process may use: its affinity, capped by a cgroup quota.

Owns the answer behind ``workers = 0``. ``os.sched_getaffinity`` alone counts
every CPU of the host in a container started with a CPU limit (``docker run
--cpus 2`` on a 64-core host: 64), and each SMTP worker holds a copy of the
routing snapshot (170 MiB of RSS with a million mailboxes), so the default
must follow the quota, as the container runtimes mean it: ``ceil(quota /
period)`` CPUs, the smallest over the process's cgroup and its ancestors.
Both cgroup versions: v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``. Anything unreadable or unlimited means no cap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(root: Path | None = None, self_cgroup: Path | None = None) -> int:
    """CPUs this process may run on, at least one (the paths: for tests)."""
    cpus = len(os.sched_getaffinity(0)) or 1
    quota = cgroup_cpu_limit(root, self_cgroup)
    return max(1, min(cpus, quota)) if quota is not None else cpus


def cgroup_cpu_limit(root: Path | None = None, self_cgroup: Path | None = None) -> int | None:
    """The CPU quota of this process's cgroups in whole CPUs; None: no quota."""
    root = root or CGROUP_ROOT
    try:
        lines = (self_cgroup or PROC_SELF_CGROUP).read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            # v2: the unified hierarchy, alone at the root or beside v1 ("hybrid").
            for mount in (root, root / "unified"):
                limits += _each_level(mount, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu"):
                limits += _each_level(mount, path, _v1_limit)
    return min(limits) if limits else None


def _each_level(mount: Path, path: str, read: Callable[[Path], int | None]) -> list[int]:
    """The limits found in ``mount/path`` and every directory above it."""
    found: list[int] = []
    directory = mount / path.strip("/")
    while True:
        limit = read(directory)
        if limit is not None:
            found.append(limit)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_limit(directory: Path) -> int | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    return _cpus(quota, period or "100000")


def _v1_limit(directory: Path) -> int | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _cpus(quota, period)


def _cpus(quota: str, period: str) -> int | None:
    """``ceil(quota / period)``; None for "max", -1 or anything malformed."""
    if not (quota.isdigit() and period.isdigit()) or int(period) == 0 or int(quota) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))
