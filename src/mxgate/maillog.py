"""The mail log: one line per mail event, in Postfix's format.

Owns the wording of the lines that pflogsumm, fail2ban and administrators'
greps already understand (``connect from``, ``NOQUEUE: reject: RCPT from``,
``QUEUEID: from=<...>, size=..., nrcpt=...``, ``to=<...>, relay=...,
status=...``, ``removed``), and where they go: stderr by default, a file
(Postfix's ``maillog_file``), the local syslog daemon (``syslog_facility``,
syslog_socket.py), each prefixed the way syslog would, so the output can be
fed to those tools as it is. Debug logging is separate (logging).

Never decides anything: callers pass facts, this module only words them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Protocol, TextIO

from mxgate.syslog_socket import SyslogSocket

PROGRAM = "mxgate"

# getpid() is a system call per log line otherwise (several lines per message);
# a forked child learns its own.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def client_label(hostname: str | None, ip: str) -> str:
    """``host[ip]`` as Postfix writes it (``unknown`` when there is no name)."""
    return f"{hostname or 'unknown'}[{ip}]"


def _quote(address: str) -> str:
    return f"<{address}>"


def delay_text(seconds: float, decimals: int = 2) -> str:
    """A ``delay=`` or ``delays=`` figure as Postfix writes it.

    Postfix shows two significant digits and at most ``decimals`` after the
    point (``delay_logging_resolution_limit``, 0 to 6, default 2; postconf(5)),
    rounded half up, with no trailing zeros: ``0``, ``0.01``, ``0.15``,
    ``1.1``, ``12``, ``4000``. Never an exponent: ``%.2g`` would write
    ``2.2e-05`` and ``1.5e+02``, which log parsers that expect Postfix's
    digits (grok's POSREAL, awk scripts) misread. Integer arithmetic on
    microseconds, as Postfix counts them; a negative figure (a clock stepped
    back) is written as 0.
    """
    micros = round(seconds * 1_000_000) if seconds > 0 else 0
    whole, fraction = divmod(micros, 1_000_000)
    # The place of the last digit shown, in microseconds, chosen before rounding.
    if whole >= 10 or decimals <= 0:
        unit = 1_000_000
    elif whole >= 1:
        unit = 100_000
    else:
        unit = 10 ** (6 - min(decimals, 6))
        while fraction >= 100 * unit:  # two significant digits at most
            unit *= 10
    micros += unit // 2
    whole, fraction = divmod(micros, 1_000_000)
    if fraction < unit:
        return str(whole)
    places = 7 - len(str(unit))  # digits after the point down to the unit's
    digits = str(fraction // unit).rjust(places, "0").rstrip("0")
    return f"{whole}.{digits}"


class LogStream(Protocol):
    """Where the lines go: stderr (a TextIO) or a ``MaillogFile``."""

    def write(self, text: str) -> object: ...

    def flush(self) -> None: ...


class MaillogFile:
    """The ``maillog_file`` setting: the mail log appended to a file.

    Every process of ``serve`` (the master and each SMTP worker) opens the file
    itself with O_APPEND and writes each batch of lines with one ``write``, so
    their lines never interleave mid-line and never overwrite each other, and a
    ``copytruncate`` rotation needs no signal. ``reopen`` (the master on
    SIGHUP; workers are replaced then) follows a rotation that renames the
    file instead.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = self._open()

    def _open(self) -> int:
        # 0640: the log names senders and recipients; the group may read it.
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "surrogateescape")
        done = 0
        # Not ``view = view[os.write(fd, view):]``: compiled by mypyc (2.4.1),
        # a call in a memoryview's slice bound ran twice, so each line was
        # written twice (tests/test_maillog.py would show it).
        while done < len(data):
            try:
                done += os.write(self.fd, data[done:] if done else data)
            except InterruptedError:
                continue
            except OSError:
                # A full disk must not stop the mail flow: the lines are lost
                # (as syslog would lose them), the mail is not.
                return 0
        return done

    def flush(self) -> None:
        """Nothing is buffered: each ``write`` went to the file."""

    def reopen(self) -> None:
        """Open the path anew (after a rotation renamed the file); keep the old
        descriptor when the path cannot be opened."""
        try:
            fd = self._open()
        except OSError:
            return
        os.close(self.fd)
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


def open_maillog(path: str) -> MaillogFile | None:
    """The ``maillog_file`` opened for appending; None for stderr (an empty
    path, or a file that cannot be opened, which is said on stderr: serve
    checks the file before any process starts, so this is a file made
    unwritable since)."""
    if not path:
        return None
    try:
        return MaillogFile(path)
    except OSError as exc:
        print(
            f"mxgate: warning: cannot open maillog_file: {exc}; logging to stderr", file=sys.stderr
        )
        return None


def open_mail_log(
    hostname: str, maillog_file: str, syslog_facility: int | None, syslog_socket: str
) -> tuple[MailLog, MaillogFile | None]:
    """A process's mail log from its settings, and the file it writes (to
    reopen after a rotation; None when it writes none). A ``maillog_file``
    that cannot be opened sends the lines to stderr instead, syslog or not."""
    logfile = open_maillog(maillog_file)
    stream = logfile if logfile is not None or not maillog_file else sys.stderr
    syslog = SyslogSocket(syslog_facility, syslog_socket) if syslog_facility is not None else None
    return MailLog(hostname, stream, syslog), logfile


class MailLog:
    """Writes syslog-shaped lines: ``Mon DD HH:MM:SS host mxgate/SERVICE[pid]: text``,
    to ``stream`` (stderr when there is neither a stream nor ``syslog``) and
    to ``syslog`` (the local syslog daemon, syslog_socket.py)."""

    def __init__(
        self,
        myhostname: str,
        stream: LogStream | None = None,
        syslog: SyslogSocket | None = None,
    ) -> None:
        self.myhostname = ""
        self.rename(myhostname)
        self.stream: LogStream | None = stream
        if stream is None and syslog is None:
            self.stream = sys.stderr
        self.syslog = syslog
        self._pending: list[str] = []
        self._to_syslog: list[tuple[str, str, str]] = []  # stamp, tag, text
        self._flush_scheduled = False
        self._stamp_second = -1
        self._stamp = ""

    def rename(self, myhostname: str) -> None:
        """The host field of the lines from now on: myhostname's first label."""
        self.myhostname = myhostname.split(".", 1)[0] or myhostname

    def line(self, service: str, text: str, now: float | None = None) -> None:
        when = time.time() if now is None else now
        if int(when) != self._stamp_second:
            self._stamp_second = int(when)
            self._stamp = time.strftime("%b %e %H:%M:%S", time.localtime(when))
        if self.stream is not None:
            self._pending.append(
                f"{self._stamp} {self.myhostname} {PROGRAM}/{service}[{_pid}]: {text}\n"
            )
        if self.syslog is not None:
            self._to_syslog.append((self._stamp, f"{PROGRAM}/{service}[{_pid}]", text))
        # Inside an event loop, the lines of one loop iteration go out in one
        # write (a busy worker logs several lines per message; a write each cost
        # ~5% of its CPU). Outside a loop, at once.
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write out the lines logged so far (called by the loop, and at exit)."""
        self._flush_scheduled = False
        if self._pending and self.stream is not None:
            text = "".join(self._pending)
            self._pending.clear()
            self.stream.write(text)
            self.stream.flush()
        if self._to_syslog and self.syslog is not None:
            for stamp, tag, text in self._to_syslog:
                self.syslog.send(stamp, tag, text)
            self._to_syslog.clear()

    # smtpd events -------------------------------------------------------
    def connect(self, client: str) -> None:
        self.line("smtpd", f"connect from {client}")

    def disconnect(
        self, client: str, counts: dict[str, int], failed: dict[str, int] | None = None
    ) -> None:
        # Postfix 3.x: "disconnect from host[ip] ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1
        # commands=3/5": a verb with refusals shows succeeded/total.
        failed = failed or {}
        parts = " ".join(
            f"{verb}={n - failed[verb]}/{n}" if failed.get(verb) else f"{verb}={n}"
            for verb, n in counts.items()
            if n
        )
        self.line("smtpd", f"disconnect from {client} {parts}".rstrip())

    def timeout(self, client: str, after: str) -> None:
        self.line("smtpd", f"timeout after {after} from {client}")

    def too_many_errors(self, client: str, after: str) -> None:
        self.line("smtpd", f"too many errors after {after} from {client}")

    def reject(
        self,
        stage: str,
        client: str,
        reply: str,
        sender: str | None,
        recipient: str | None,
        proto: str,
        helo: str | None,
        queue_id: str | None = None,
    ) -> None:
        # "NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 <x>: Relay access denied;
        #  from=<s> to=<r> proto=ESMTP helo=<h>"
        details = []
        if sender is not None:
            details.append(f"from={_quote(sender)}")
        if recipient is not None:
            details.append(f"to={_quote(recipient)}")
        details.append(f"proto={proto}")
        if helo is not None:
            details.append(f"helo={_quote(helo)}")
        self.line(
            "smtpd",
            f"{queue_id or 'NOQUEUE'}: reject: {stage} from {client}: {reply}; {' '.join(details)}",
        )

    def accepted(self, queue_id: str, client: str) -> None:
        self.line("smtpd", f"{queue_id}: client={client}")

    # queue events -------------------------------------------------------
    def message_id(self, queue_id: str, message_id: str) -> None:
        self.line("cleanup", f"{queue_id}: message-id={message_id}")

    def queued(self, queue_id: str, sender: str, size: int, nrcpt: int) -> None:
        self.line(
            "qmgr", f"{queue_id}: from={_quote(sender)}, size={size}, nrcpt={nrcpt} (queue active)"
        )

    def removed(self, queue_id: str) -> None:
        self.line("qmgr", f"{queue_id}: removed")


class _SyslogShape(logging.Formatter):
    """Diagnostic lines shaped like the mail log's: ``Mon DD HH:MM:SS host
    mxgate/<module>[pid]: <level>: text``."""

    def __init__(self, myhostname: str) -> None:
        super().__init__()
        self.host = myhostname.split(".", 1)[0] or myhostname

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(record.created))
        module = record.name.rpartition(".")[2]
        text = (
            f"{stamp} {self.host} {PROGRAM}/{module}[{record.process}]: "
            f"{record.levelname.lower()}: {record.getMessage()}"
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_diagnostics(level: str, myhostname: str, stream: TextIO | None = None) -> None:
    """Send mxgate's diagnostic logging (``logging``; not the mail log) to
    ``stream`` (stderr) at ``level`` (the ``log_level`` setting)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_SyslogShape(myhostname))
    logger = logging.getLogger(PROGRAM)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
