"""The mail log sent to the local syslog daemon, as Postfix sends it.

Owns the ``syslog_facility`` output: each line becomes one datagram on the
local syslog socket (``syslog_socket``, ``/dev/log``), in the form syslog(3)
writes, ``<PRI>Mmm dd hh:mm:ss mxgate/SERVICE[PID]: text``. rsyslog then puts
mxgate's lines into ``/var/log/mail.log`` beside Postfix's (facility mail),
and under systemd journald files them under the identifier ``mxgate/smtpd``
and the others, so ``journalctl -t mxgate/smtpd``, pflogsumm and fail2ban read
them as they read Postfix's.

Written here rather than with the standard library's ``syslog`` module or
``logging.handlers.SysLogHandler``: both take one identifier per process,
while one mxgate process logs under several names (a worker as smtpd,
cleanup and qmgr; the master as qmgr, smtp, lmtp...), as Postfix's lines
do, and each line must keep its own.

A line that cannot be sent (no syslog daemon, its socket full) is dropped:
the mail flow never waits for, or fails because of, the log. A daemon that
restarted is found again at the next line.
"""

from __future__ import annotations

import socket

FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}

# Severities (RFC 5424 6.2.1) by the word a line starts with, as Postfix's
# msg_warn, msg_error, msg_fatal and msg_panic log; everything else is info.
_SEVERITY = {"warning:": 4, "error:": 3, "fatal:": 2, "panic:": 0}
INFO = 6


def facility_code(name: str) -> int:
    """The code of a facility name (``mail``); ValueError for an unknown one."""
    try:
        return FACILITIES[name.lower()]
    except KeyError:
        raise ValueError(f"{name!r} is not a syslog facility ({', '.join(FACILITIES)})") from None


def severity(text: str) -> int:
    word = text.split(" ", 1)[0]
    return _SEVERITY.get(word, INFO)


class SyslogSocket:
    """Datagrams to the local syslog socket, one per line."""

    def __init__(self, facility: int, path: str = "/dev/log") -> None:
        self.facility = facility
        self.path = path
        self._sock: socket.socket | None = None

    def send(self, stamp: str, tag: str, text: str) -> bool:
        """Send ``text`` under ``tag`` (``mxgate/smtpd[123]``) stamped
        ``stamp`` (``Dec  2 15:04:05``); False when it was dropped."""
        data = f"<{self.facility * 8 + severity(text)}>{stamp} {tag}: {text}".encode(
            "utf-8", "surrogateescape"
        )
        for _attempt in range(2):  # the second after reconnecting
            sock = self._sock or self._connect()
            if sock is None:
                return False
            try:
                sock.send(data)
                return True
            except BlockingIOError:
                return False  # the daemon is behind: drop rather than wait
            except OSError:
                self.close()  # gone or restarted: connect again
        return False

    def reachable(self) -> bool:
        """Whether a syslog daemon listens at ``path`` now."""
        return (self._sock or self._connect()) is not None

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        self._sock = sock
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
