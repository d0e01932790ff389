"""Which modules run compiled (mypyc), and whether the compiled copies are current.

The SMTP receive path, the spool and the queue manager's delivery path are
compiled to C extension modules with mypyc (``scripts/build-native``, run by
both README commands): the same typed Python, without the interpreter's
dispatch. BENCHMARKS.md (session 5) shows what it gains; the source
stays the one truth, and a module missing its extension runs as plain Python.

An extension takes precedence over its ``.py`` at import, so a copy built from
older source would silently run old code: ``stale()`` compares a digest of the
sources with the one recorded at build time, and the test suite refuses to run
on a stale build.

What stays interpreted inside a compiled module, and is avoided on the paths
run per message: the ``__init__`` that ``@dataclass`` generates (made by
``exec`` at import; about 1.3 µs per frozen object of three fields here,
0.06 µs written out and compiled), so the classes built per message say
``@dataclass(init=False)`` and write theirs out (tests/test_native.py holds
each to its fields, their order and defaults; None stands for a
``default_factory``); ``dataclasses.replace``; and on enums, hashing a member
(``Enum.__hash__``), ``Member(value)`` and the ``.value`` property, where
``_value_`` is the plain attribute.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.metadata
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent

RECEIVE_PATH: tuple[str, ...] = (
    # The protocol, the session, headers, logging.
    "mxgate.smtp.buffer",
    "mxgate.smtp.data",
    "mxgate.smtp.encode",
    "mxgate.smtp.errors",
    "mxgate.smtp.events",
    "mxgate.smtp.outbox",
    "mxgate.smtp.parse",
    "mxgate.smtp.proxy",
    "mxgate.smtp.replies",
    "mxgate.smtp.server",
    "mxgate.smtp.state",
    "mxgate.smtp.xclient",
    "mxgate.server.busy_poll",
    "mxgate.server.headers",
    "mxgate.server.listener",
    "mxgate.server.recipients",
    "mxgate.server.session",
    "mxgate.server.session_log",
    "mxgate.server.transaction",
    "mxgate.maillog",
    # The routing decision at RCPT time.
    "mxgate.core.address",
    "mxgate.core.decision",
    "mxgate.core.envelope",
    "mxgate.core.expand",
    "mxgate.core.policy",
    "mxgate.core.reply",
    "mxgate.core.routing",
    "mxgate.core.rules",
    "mxgate.core.snapshot",
    "mxgate.core.transport",
    # The spool.
    "mxgate.spool.commit",
    "mxgate.spool.format",
    "mxgate.spool.journal",
    "mxgate.spool.journal_index",
    "mxgate.spool.layout",
    "mxgate.spool.store",
    "mxgate.spool.writer",
    "mxgate.spool.sync_helper",
    # Per session, beside the above.
    "mxgate.metrics.counts",
    "mxgate.client_counts",
    "mxgate.worker",  # its closures run per session and per commit (the session
    # factory, the quiet check, the master channel's ticks): 4% of a worker's CPU
    "mxgate.core.srs",
    "mxgate.core.srs_keys",  # an SrsContext per message, here and in the master
    "mxgate.core.srs_policy",
)

DELIVERY_PATH: tuple[str, ...] = (
    "mxgate.core.outcome",
    "mxgate.core.retry",
    "mxgate.delivery.notices",
    "mxgate.delivery.pool",
    "mxgate.delivery.remover",
    "mxgate.delivery.result",
    "mxgate.delivery.courier",
    "mxgate.delivery.nexthop",
    "mxgate.delivery.scheduler",
    "mxgate.delivery.session",
    "mxgate.delivery.wakeup",
    "mxgate.smtp.client",
    "mxgate.smtp.client_events",
    "mxgate.smtp.reader",
)

GROUPS: dict[str, tuple[str, ...]] = {
    "mxgate_receive": RECEIVE_PATH,
    "mxgate_delivery": DELIVERY_PATH,
}
"""Each group is one C library, compiled in parallel with the other. Calls
within a group are direct C calls; across groups they cost more (a library per
module made a session 25% slower than one library), so each group holds a
whole path: the SMTP workers' and the queue manager's."""

MODULES: tuple[str, ...] = RECEIVE_PATH + DELIVERY_PATH

EXTENSION_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
"""What a compiled module's file name ends in here (``.cpython-311-...so``)."""

STAMP = PACKAGE_ROOT / "native.stamp"
"""Written by the build: the digest of the sources it compiled."""


def source_path(module: str) -> Path:
    return PACKAGE_ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")


def _compiler_version() -> str:
    try:
        return importlib.metadata.version("mypy")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def sources_digest() -> str:
    """SHA-256 over the groups, the modules' sources, and the Python and mypyc
    versions (a new compiler pinned in pyproject.toml rebuilds too)."""
    digest = hashlib.sha256(f"{sys.version}\0{_compiler_version()}\0{GROUPS!r}".encode())
    for module in MODULES:
        digest.update(module.encode() + b"\0" + source_path(module).read_bytes() + b"\0")
    return digest.hexdigest()


def extension_paths() -> list[Path]:
    """The extension files of the build now on disk: a shim per module, and a
    library per group holding the compiled code."""
    candidates = [source_path(module).with_suffix(EXTENSION_SUFFIX) for module in MODULES]
    candidates += [PACKAGE_ROOT.parent / f"{group}__mypyc{EXTENSION_SUFFIX}" for group in GROUPS]
    return [path for path in candidates if path.exists()]


def stale() -> str | None:
    """Why the extensions on disk do not match the sources (None: they do, or
    there are none and everything runs as plain Python)."""
    present = extension_paths()
    if not present:
        return None
    if len(present) != len(MODULES) + len(GROUPS):
        return "the compiled modules are an incomplete build"
    try:
        built = STAMP.read_text().strip()
    except OSError:
        return "compiled modules are present but no build stamp"
    if built != sources_digest():
        return "compiled modules were built from other sources"
    return None


def compiled() -> list[str]:
    """The modules of MODULES imported now from an extension."""
    return [
        name
        for name in MODULES
        if (module := sys.modules.get(name)) is not None
        and str(getattr(module, "__file__", "")).endswith(
            tuple(importlib.machinery.EXTENSION_SUFFIXES)
        )
    ]
