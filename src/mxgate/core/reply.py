"""SMTP replies as values, and the catalogue of the standard ones.

Owns the ``Reply`` type (basic code, RFC 3463 enhanced status, text) and the
exact wording of every reply the routing decision can give (SPEC section 3).
The texts follow Postfix's, so that people's log greps and fail2ban filters
keep matching.

Never does I/O and never renders bytes for the wire: the SMTP layer adds CRLF
and decides about multi-line framing of its own replies. Never raises.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, init=False)
class Reply:
    """One SMTP reply: ``code`` (RFC 5321 4.2), ``enhanced`` (RFC 3463, may be
    '' for replies that carry none) and a free ``text``."""

    code: int
    enhanced: str
    text: str

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "enhanced", enhanced)
        object.__setattr__(self, "text", text)

    # Written out rather than generated: compiled, these run as C, and every
    # reply sent is a cache lookup (smtp.replies.render).
    def __hash__(self) -> int:
        return hash((self.code, self.enhanced, self.text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return (
            self.code == other.code and self.enhanced == other.enhanced and self.text == other.text
        )

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4yz: the client keeps the message and tries again later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5yz: the client must not retry this command unchanged."""
        return 500 <= self.code < 600

    def line(self) -> str:
        """The reply as one line without CRLF: ``250 2.1.5 Ok``."""
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"

    def lines(self) -> list[str]:
        """The reply as RFC 5321 4.2.1 lines (``250-first``, ``250 last``),
        one per line of ``text``, each carrying the enhanced code."""
        parts = self.text.split("\n") or [""]
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = [f"{self.code}-{prefix}{part}" for part in parts[:-1]]
        out.append(f"{self.code} {prefix}{parts[-1]}")
        return out

    def __str__(self) -> str:
        return self.line()


# --- Positive --------------------------------------------------------------

MAIL_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")


def queued(queue_id: str) -> Reply:
    """End of DATA once the message is on stable storage (SPEC section 3)."""
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


# --- Transient -------------------------------------------------------------

# RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients; beyond
# smtpd_recipient_limit Postfix answers with this 452, which clients treat as
# "send the rest in another transaction".
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")

CONFIGURATION_ERROR = Reply(451, "4.3.5", "Server configuration error")


def lookup_failure(address: str) -> Reply:
    """No routing snapshot at all: never a 5xx for a lookup problem."""
    return Reply(451, "4.3.0", f"<{address}>: Temporary lookup failure")


def no_route(address: str, reason: str) -> Reply:
    """Known recipient, but none of its final recipients has a transport:
    refused for now rather than accepted and bounced later (SPEC section 9)."""
    return Reply(
        451, "4.3.0", f"<{address}>: Recipient address rejected: Temporary failure: {reason}"
    )


def configuration_error(address: str) -> Reply:
    return Reply(
        451, "4.3.5", f"<{address}>: Recipient address rejected: Server configuration error"
    )


# --- Permanent -------------------------------------------------------------

BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")

# RFC 6531 3.5: a non-ASCII address without the SMTPUTF8 parameter.
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")


def relay_denied(address: str) -> Reply:
    return Reply(554, "5.7.1", f"<{address}>: Relay access denied")


def unknown_recipient(address: str) -> Reply:
    return Reply(
        550,
        "5.1.1",
        f"<{address}>: Recipient address rejected: User unknown in relay recipient table",
    )


def unknown_local_recipient(address: str) -> Reply:
    """A non-postmaster address at one of our own IP literals: that domain
    class is "local" to us and we deliver nothing locally."""
    return Reply(
        550,
        "5.1.1",
        f"<{address}>: Recipient address rejected: User unknown in local recipient table",
    )


def need_fqdn(address: str) -> Reply:
    return Reply(
        504, "5.5.2", f"<{address}>: Recipient address rejected: need fully-qualified address"
    )


def need_fqdn_sender(address: str) -> Reply:
    """Postfix's reject_non_fqdn_sender: RFC 5321 4.1.2 wants a domain, and an
    unqualified sender would reach the next hop (and bounces) as it is."""
    return Reply(
        504, "5.5.2", f"<{address}>: Sender address rejected: need fully-qualified address"
    )


def expansion_failed(address: str, enhanced: str, reason: str) -> Reply:
    """Refusal of a known recipient whose expansion reaches nothing
    deliverable: 5.4.6 for a loop or a limit, 5.1.1 for dead ends, or the
    status of an ``error:`` transport."""
    return Reply(550, enhanced, f"<{address}>: Recipient address rejected: {reason}")
