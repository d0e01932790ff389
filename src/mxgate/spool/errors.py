"""The spool's exceptions, and which SMTP reply each one stands for.

Owns the mapping from storage failures to the few cases callers must tell apart:
the session answers ``SpoolFullError`` with 452 4.3.1 and any other
``SpoolError`` with 451 4.3.0 (RFC 3463). Never carries SMTP text itself.
"""

from __future__ import annotations

import errno

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class SpoolError(Exception):
    """The spool could not do what was asked; nothing was acknowledged (451 4.3.0)."""


class SpoolFullError(SpoolError):
    """No space left (ENOSPC) or over quota (EDQUOT) (452 4.3.1)."""


class SpoolCorruptError(SpoolError):
    """A record is torn, truncated or not ours; recovery moves it to corrupt/."""


class SpoolBusyError(SpoolError):
    """recover() was asked while another process or writer uses the spool."""


class MessageNotFoundError(SpoolError):
    """No record with this queue id in the queue(s) asked about."""


def from_os_error(err: OSError, doing: str) -> SpoolError:
    """The spool exception for an OSError met while ``doing`` something."""
    cls = SpoolFullError if err.errno in _FULL_ERRNOS else SpoolError
    return cls(f"{doing}: {err.strerror or err}")
