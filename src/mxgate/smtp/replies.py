"""The replies the SMTP protocol gives on its own, and their wire form.

Owns the wording of every protocol-level reply (greeting, EHLO, syntax and
sequencing errors, size refusals, 421 closes) and ``render()``, the one place a
``Reply`` becomes bytes. Texts follow Postfix's so that log greps, fail2ban
filters and people's habits keep working; enhanced status codes (RFC 2034,
RFC 3463) are sent always, as Postfix does, except on the greeting, the
HELO/EHLO answers and 354, which carry none in Postfix either.

Never decides policy (the routing core words MAIL/RCPT/end-of-DATA answers) and
never does I/O.
"""

from __future__ import annotations

from functools import lru_cache

from mxgate.core.reply import Reply


@lru_cache(maxsize=512)
def render(reply: Reply) -> bytes:
    """``reply`` as RFC 5321 4.2.1 lines with CRLF; a ``\\n`` in the text makes
    a multi-line reply. CR is dropped so no text can forge a reply line.
    Cached: the same few replies are sent millions of times."""
    if "\r" in reply.text:
        reply = Reply(reply.code, reply.enhanced, reply.text.replace("\r", ""))
    return ("\r\n".join(reply.lines()) + "\r\n").encode("utf-8")


def greeting(hostname: str, banner: str) -> Reply:
    # RFC 5321 4.3.1: the greeting starts with our own domain name.
    return Reply(220, "", f"{hostname} {banner}".rstrip())


def helo(hostname: str) -> Reply:
    return Reply(250, "", hostname)


def ehlo(hostname: str, *, size_limit: int, starttls: bool, xclient: bool = False) -> Reply:
    """The EHLO answer, keywords in Postfix's order (without VRFY/ETRN/AUTH);
    XCLIENT only to the clients allowed to use it, as Postfix does."""
    lines = [hostname, "PIPELINING", f"SIZE {size_limit}" if size_limit else "SIZE"]
    if starttls:
        lines.append("STARTTLS")
    if xclient:
        lines.append("XCLIENT " + " ".join(XCLIENT_ATTRIBUTES))
    lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]
    return Reply(250, "", "\n".join(lines))


# Postfix's XCLIENT attributes, in its order. NAME, ADDR, PROTO and HELO
# change who the client is; the others are checked and kept for nothing here
# (no AUTH, one service per address), so that front ends that send them work.
XCLIENT_ATTRIBUTES = (
    "NAME",
    "ADDR",
    "PORT",
    "PROTO",
    "HELO",
    "REVERSE_NAME",
    "LOGIN",
    "DESTADDR",
    "DESTPORT",
)
XCLIENT_DENIED = Reply(550, "5.7.0", "Error: insufficient authorization")


def bad_xclient(what: str) -> Reply:
    return Reply(501, "5.5.4", f"Bad XCLIENT {what}")


def timeout(hostname: str) -> Reply:
    return Reply(421, "4.4.2", f"{hostname} Error: timeout exceeded")


def too_many_errors(hostname: str) -> Reply:
    return Reply(421, "4.7.0", f"{hostname} Error: too many errors")


def syntax(usage: str) -> Reply:
    return Reply(501, "5.5.4", f"Syntax: {usage}")


def bad_parameter(name: str) -> Reply:
    return Reply(501, "5.5.4", f"Bad {name} parameter syntax")


def unsupported_option(option: str) -> Reply:
    # RFC 5321 4.1.1.11: 555 for MAIL/RCPT parameters we do not implement.
    # The option as sent, within a reply line's 512 octets (RFC 5321
    # 4.5.3.1.5) and in printable ASCII whatever the client sent.
    shown = "".join(c if " " < c < "\x7f" else "?" for c in option[:OPTION_SHOWN])
    if len(option) > OPTION_SHOWN:
        shown += "..."
    return Reply(555, "5.5.4", f"Unsupported option: {shown}")


OPTION_SHOWN = 64


OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
# RFC 5321 3.5.3: 252 = "cannot verify, but will take the message"; says nothing
# about whether the address exists (no address harvesting).
VRFY_UNSURE = Reply(252, "2.0.0", "Cannot VRFY user; try RCPT to attempt delivery")
HELP = Reply(214, "2.0.0", "See RFC 5321")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")

# Malformed command lines (RFC 5321 2.3.8, 4.1.2, 4.5.3.1.4).
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
BARE_LF = Reply(500, "5.5.2", "Error: bare <LF> received")
BARE_CR = Reply(500, "5.5.2", "Error: bare <CR> received")
NUL_CHARACTER = Reply(500, "5.5.2", "Error: NUL character received")
BAD_UTF8 = Reply(500, "5.5.2", "Error: bad UTF-8 syntax")
EMPTY_COMMAND = Reply(500, "5.5.2", "Error: bad syntax")
UNRECOGNIZED = Reply(502, "5.5.2", "Error: command not recognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
# 503 as Postfix answers AUTH when SASL is off (smtpd.c), not 502.
AUTH_DISABLED = Reply(503, "5.5.1", "Error: authentication not enabled")
TLS_ALREADY_ACTIVE = Reply(554, "5.5.1", "Error: TLS already active")
# Postfix's smtpd_forbidden_commands: an HTTP client (or a cross-protocol
# attack through a browser) talking to port 25 is disconnected at once.
FORBIDDEN = Reply(521, "5.7.0", "Error: I can break rules, too. Goodbye.")
DUPLICATE_PARAMETER = Reply(501, "5.5.4", "Error: duplicate parameter")
BAD_PARAMETERS = Reply(501, "5.5.4", "Error: bad parameter syntax")
BAD_SIZE = Reply(501, "5.5.4", "Bad message size syntax")

# Sequencing (used by the transition table in state.py).
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "Error: no valid recipients")
IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")

# Size (RFC 1870): announced too big at MAIL, or found too big at end of DATA.
SIZE_EXCEEDS_LIMIT = Reply(552, "5.3.4", "Message size exceeds fixed limit")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
# Bare CR or LF inside DATA (SMTP smuggling): refused at the real end of data.
BARE_LF_IN_DATA = Reply(550, "5.5.2", "Error: bare <LF> received")
BARE_CR_IN_DATA = Reply(550, "5.5.2", "Error: bare <CR> received")
