"""Exceptions of the sans-IO SMTP layer (after h11's ``ProtocolError`` split).

Owns the distinction between the two ways a conversation can go wrong:

* ``RemoteProtocolError``: the *peer* broke the protocol. It carries the reply
  that answers the offence. ``ServerConnection`` never lets one escape: every
  remote violation becomes a reply on the wire (and a ``ProtocolViolation``
  event), because hostile input must never crash a session.
* ``LocalProtocolError``: *our own code* used the connection wrongly (answered a
  command twice, forgot to answer one, fed bytes during a TLS hand-off). That is
  a bug in the caller, so it is raised and must not be caught to carry on.

Never does I/O and never imports anything but ``core.reply``.
"""

from __future__ import annotations

from mxgate.core.reply import Reply


class ProtocolError(Exception):
    """Root of the SMTP protocol errors."""


class LocalProtocolError(ProtocolError):
    """The caller misused the connection object (a programming error)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; ``reply`` answers it."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.line())
        self.reply = reply
