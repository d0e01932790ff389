"""Telling systemd (or any service manager speaking its protocol) how serve is.

Owns the ``sd_notify`` messages of ``mxgate serve`` under ``Type=notify``
(``contrib/systemd/mxgate.service``): ``READY=1`` once every SMTP worker
listens (so units ordered after mxgate start when mail can be taken, and a
failed start is a failed unit), ``RELOADING=1`` and ``READY=1`` around a
SIGHUP, ``STOPPING=1``, a ``STATUS=`` line for ``systemctl status``, and
``WATCHDOG=1`` keep-alives when the unit sets ``WatchdogSec=`` (systemd then
restarts a master whose event loop stopped turning).

The protocol is one datagram to the AF_UNIX socket named by ``NOTIFY_SOCKET``
(``@`` for the abstract namespace). Written here with the standard library
rather than taken from a package: python-systemd needs libsystemd and its
headers to build, and the pure-Python ``sdnotify`` package has not been
maintained for years; the whole protocol is the ten lines below. Without
``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time

ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""The variables systemd gives the main process; not for its children."""


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` lines in one datagram; False when there is nowhere
    to send them or the manager is gone (never an error: a gateway must not
    stop because its service manager cannot be told)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not assignments:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError:
        return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` with the time systemd (253 and later) wants beside it."""
    return notify(
        "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    )


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` messages (half the unit's
    ``WatchdogSec=``, as sd_watchdog_enabled(3) advises); None when the
    watchdog is off or meant for another process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or not os.environ.get("NOTIFY_SOCKET"):
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
