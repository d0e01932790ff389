"""The SMTP command-line grammar (server side).

Owns: cutting a command line into verb and argument, refusing malformed lines
(bare CR/LF, NUL, bad UTF-8, over-long lines), and the MAIL/RCPT grammar of
RFC 5321 4.1.2 with the ESMTP parameters this server implements: SIZE
(RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and DSN's RET, ENVID, NOTIFY,
ORCPT (RFC 3461, xtext per RFC 3461 4). Like Postfix, a missing pair of angle
brackets and blanks after the colon are tolerated.

Every refusal is a ``RemoteProtocolError`` carrying the reply to send.
Never decides policy (whether a sender or recipient is welcome, whether SIZE
fits) and never knows the session state: see ``state.py`` and ``server.py``.
Regular expressions are compiled once, here, never per command.
"""

from __future__ import annotations

import enum
import re
from typing import Final, Literal

from mxgate.core.reply import BAD_RECIPIENT_SYNTAX, BAD_SENDER_SYNTAX, Reply

from . import replies
from .encode import encode_utf8_addr_xtext
from .errors import RemoteProtocolError
from .events import BodyType, MailFrom, RcptTo

# RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF;
# extensions that add MAIL/RCPT parameters raise that (RFC 1869 4.1.2,
# RFC 3461 5: ORCPT alone adds 500), hence 2048 for lines with parameters.
COMMAND_LINE_LIMIT = 512
PARAMETER_LINE_LIMIT = 2048
# RFC 5321 4.5.3.1.3: a path is at most 256 octets including the brackets.
PATH_LIMIT = 256
# RFC 3461 4.4 and 4.2: ENVID at most 100 characters, ORCPT at most 500.
ENVID_LIMIT = 100
ORCPT_LIMIT = 500


class Verb(enum.Enum):
    # Members are singletons: identity hashing is right, and C-fast (Enum's
    # own __hash__ is Python code, and verbs are dict keys on the hot path).
    __hash__ = object.__hash__

    HELO = "HELO"
    EHLO = "EHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    XCLIENT = "XCLIENT"
    FORBIDDEN = "FORBIDDEN"  # HTTP verbs: another protocol is talking to us
    UNKNOWN = "UNKNOWN"


_VERBS: dict[str, Verb] = {v.value: v for v in Verb if v not in (Verb.FORBIDDEN, Verb.UNKNOWN)}
_VERBS.update(GET=Verb.FORBIDDEN, POST=Verb.FORBIDDEN, CONNECT=Verb.FORBIDDEN)


class Command:
    """One well-formed command line: ``name`` is the upper-cased verb word,
    ``arg`` the rest without outer blanks, ``length`` the octets incl. CRLF.

    A plain class, not a frozen dataclass: one is made per command, and a
    dataclass's generated ``__init__`` stays interpreted Python when compiled.
    """

    def __init__(self, verb: Verb, name: str, arg: str, length: int) -> None:
        self.verb: Final = verb
        self.name: Final = name
        self.arg: Final = arg
        self.length: Final = length

    def __repr__(self) -> str:
        return f"Command({self.verb!r}, {self.name!r}, {self.arg!r}, {self.length!r})"


_BLANKS = re.compile(r"[ \t]+")
# A path's text: unquoted characters (no blank, control, <, > or quote) and
# quoted strings with quoted-pairs (RFC 5321 4.1.2 Quoted-string); non-ASCII is
# let through (RFC 6531), whether it is allowed is decided per SMTPUTF8.
#
# Possessive (``++``, ``*+``): each alternative starts with characters the
# other cannot, so no match ever needs to give back what a run took; written
# so, sre takes a run of plain characters in one loop instead of one branch
# per character: 3x faster on a common path, 10x on one that fails (where
# the old form gave each character back, one at a time).
_PATH_TEXT = r'(?:[^\x00-\x20"<>\x7f]++|"(?:[^"\\\x00-\x1f\x7f]++|\\[\x20-\x7e])*+")*+'
_PATH = re.compile(_PATH_TEXT)
_BRACKETED_PATH = re.compile("<(" + _PATH_TEXT + ")>")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")  # RFC 5321 esmtp-keyword
_VALUE = re.compile(r"[^\x00-\x20=\x7f]+")  # esmtp-value (+ UTF-8, RFC 6531)
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")  # RFC 3461 4
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NON_ASCII_RUN = re.compile(r"([^\x00-\x7f]+)")
_EMBEDDED_UNICODE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")  # RFC 6533 3
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+")  # RFC 5322 atext (no '=')
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_command(line: bytes, max_line: int = COMMAND_LINE_LIMIT) -> Command:
    """Cut one command line, ``line`` ending at (and including) its LF.

    RFC 5321 2.3.8: CR and LF only ever travel as CRLF, so a line ended by a
    bare LF or holding a bare CR is refused rather than guessed at; so are NUL
    and invalid UTF-8. Lines over ``max_line`` are refused here, except MAIL
    and RCPT, whose limit depends on their parameters (``parse_mail``)."""
    n = len(line)
    if n < 2 or line[n - 2] != 0x0D:
        raise RemoteProtocolError(replies.BARE_LF)
    raw = line[: n - 2]
    # find(), not ``in``: CPython 3.11's ``bytes in bytes`` first tries the
    # needle as an integer and formats a TypeError it then throws away
    # (~2k instructions per test, twice per command).
    if raw.find(b"\r") >= 0:
        raise RemoteProtocolError(replies.BARE_CR)
    if raw.find(b"\x00") >= 0:
        raise RemoteProtocolError(replies.NUL_CHARACTER)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(replies.BAD_UTF8) from None
    parts = _BLANKS.split(text.strip(" \t"), maxsplit=1)
    name = parts[0].upper()
    if not name:
        raise RemoteProtocolError(replies.EMPTY_COMMAND)
    verb = _VERBS.get(name, Verb.UNKNOWN)
    if verb is Verb.UNKNOWN:
        name = name[:32]  # only for logs; the client chose it
    if n > max_line and verb is not Verb.MAIL and verb is not Verb.RCPT:
        raise RemoteProtocolError(replies.LINE_TOO_LONG)
    return Command(verb, name, parts[1] if len(parts) > 1 else "", n)


# Verbs whose argument is required, and verbs that take none: the usage to show.
_ARGUMENT_REQUIRED = {
    Verb.HELO: "HELO hostname",
    Verb.EHLO: "EHLO hostname",
    Verb.VRFY: "VRFY address",
    Verb.XCLIENT: "XCLIENT attribute=value...",
}
_ARGUMENT_FORBIDDEN = {Verb.DATA: "DATA", Verb.RSET: "RSET", Verb.STARTTLS: "STARTTLS"}


def check_arguments(cmd: Command) -> None:
    """501 5.5.4 for a missing or a superfluous argument."""
    usage = (_ARGUMENT_FORBIDDEN if cmd.arg else _ARGUMENT_REQUIRED).get(cmd.verb)
    if usage is not None:
        raise RemoteProtocolError(replies.syntax(usage))


def decode_xtext(text: str) -> str:
    """RFC 3461 4 xtext -> text; ``ValueError`` when malformed or when it
    decodes to control characters (they would end up in DSN headers)."""
    if not _XTEXT.fullmatch(text):
        raise ValueError(text)
    if "+" in text:
        text = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)
    if _CONTROL.search(text):
        raise ValueError(text)
    return text


def parse_mail(cmd: Command, max_line: int = COMMAND_LINE_LIMIT) -> MailFrom:
    """``MAIL FROM:<path> [params]`` -> ``MailFrom`` (grammar only)."""
    address, tail = _path(cmd, "FROM:", "MAIL FROM:<address>", BAD_SENDER_SYNTAX, max_line)
    size: int | None = None
    body: BodyType | None = None
    smtputf8 = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    params = _params(tail)
    for key, (token, value) in params.items():
        if key == "SIZE":
            if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                raise RemoteProtocolError(replies.BAD_SIZE)
            size = int(value)
        elif key == "BODY":
            word = _required(value, "BODY").upper()
            if word == "7BIT":
                body = "7BIT"
            elif word == "8BITMIME":
                body = "8BITMIME"
            else:  # BINARYMIME needs CHUNKING, which we do not offer
                raise RemoteProtocolError(replies.unsupported_option(token))
        elif key == "SMTPUTF8":
            if value is not None:
                raise RemoteProtocolError(replies.bad_parameter("SMTPUTF8"))
            smtputf8 = True
        elif key == "RET":
            word = _required(value, "RET").upper()
            if word == "FULL":
                ret = "FULL"
            elif word == "HDRS":
                ret = "HDRS"
            else:
                raise RemoteProtocolError(replies.bad_parameter("RET"))
        elif key == "ENVID":
            envid = _xtext(_required(value, "ENVID"), "ENVID", ENVID_LIMIT)
        else:
            raise RemoteProtocolError(replies.unsupported_option(token))
    plain = {key: value for key, (_, value) in params.items()}
    return MailFrom(address, plain, size, body, smtputf8, ret, envid)


def parse_rcpt(
    cmd: Command, max_line: int = COMMAND_LINE_LIMIT, *, smtputf8: bool = False
) -> RcptTo:
    """``RCPT TO:<path> [params]`` -> ``RcptTo`` (grammar only); ``smtputf8``:
    the transaction's MAIL FROM had SMTPUTF8 (RFC 6531)."""
    address, tail = _path(cmd, "TO:", "RCPT TO:<address>", BAD_RECIPIENT_SYNTAX, max_line)
    if not address:  # RFC 5321 4.1.1.3: the null path is for senders only
        raise RemoteProtocolError(BAD_RECIPIENT_SYNTAX)
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    params = _params(tail)
    for key, (token, value) in params.items():
        if key == "NOTIFY":
            words = tuple(_required(value, "NOTIFY").upper().split(","))
            if words != ("NEVER",) and (
                not _NOTIFY_WORDS.issuperset(words) or len(set(words)) != len(words)
            ):
                raise RemoteProtocolError(replies.bad_parameter("NOTIFY"))
            notify = words
        elif key == "ORCPT":
            addr_type, semi, text = _required(value, "ORCPT").partition(";")
            if not semi or not _ATOM.fullmatch(addr_type) or not text:
                raise RemoteProtocolError(replies.bad_parameter("ORCPT"))
            if smtputf8 and not text.isascii() and addr_type.lower() == "utf-8":
                orcpt = f"utf-8;{_utf8_addr_unitext(text)}"
            else:
                orcpt = f"{addr_type};{_xtext(text, 'ORCPT', ORCPT_LIMIT)}"
        else:
            raise RemoteProtocolError(replies.unsupported_option(token))
    plain = {key: value for key, (_, value) in params.items()}
    return RcptTo(address, plain, notify, orcpt)


def _path(cmd: Command, keyword: str, usage: str, bad: Reply, max_line: int) -> tuple[str, str]:
    """Split ``FROM:<path> params`` into the path text and the parameter text."""
    arg = cmd.arg
    if arg[: len(keyword)].upper() != keyword:
        raise RemoteProtocolError(replies.syntax(usage))
    rest = arg[len(keyword) :].lstrip(" \t")
    if not rest:
        raise RemoteProtocolError(replies.syntax(usage))
    if rest[0] == "<":
        m = _BRACKETED_PATH.match(rest)
        if m is None:
            raise RemoteProtocolError(bad)
        address, tail = m.group(1), rest[m.end() :]
        if tail and tail[0] not in " \t":
            raise RemoteProtocolError(bad)
    else:  # no brackets (tolerated, as Postfix does): the path ends at a blank
        parts = _BLANKS.split(rest, maxsplit=1)
        address, tail = parts[0], parts[1] if len(parts) > 1 else ""
        if not _PATH.fullmatch(address):
            raise RemoteProtocolError(bad)
    tail = tail.strip(" \t")
    if cmd.length > max_line and not tail:
        raise RemoteProtocolError(replies.LINE_TOO_LONG)
    if len(address) + 2 > PATH_LIMIT or len(address.encode()) + 2 > PATH_LIMIT:
        raise RemoteProtocolError(bad)
    return address, tail


def _params(text: str) -> dict[str, tuple[str, str | None]]:
    """ESMTP parameters -> {KEYWORD: (token as sent, value or None)}."""
    out: dict[str, tuple[str, str | None]] = {}
    if not text:
        return out
    for token in _BLANKS.split(text):
        key, eq, value = token.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value)):
            raise RemoteProtocolError(replies.BAD_PARAMETERS)
        key = key.upper()
        if key in out:
            raise RemoteProtocolError(replies.DUPLICATE_PARAMETER)
        out[key] = (token, value if eq else None)
    return out


def _required(value: str | None, name: str) -> str:
    if value is None:
        raise RemoteProtocolError(replies.bad_parameter(name))
    return value


def _utf8_addr_unitext(value: str) -> str:
    """An ``ORCPT=utf-8;`` address sent as UTF-8 (RFC 6533 3 utf-8-addr-unitext,
    allowed in an SMTPUTF8 transaction), kept in its ASCII form
    utf-8-addr-xtext (``\\x{HEX}`` for every non-ASCII character, as
    mxgate's client sends it): the form a delivery-status notification and a
    next hop without SMTPUTF8 take. The limit counts characters of the
    address, as for any ORCPT."""
    if len(value) > 3 * ORCPT_LIMIT:
        raise RemoteProtocolError(replies.bad_parameter("ORCPT"))
    address: list[str] = []
    for i, piece in enumerate(_NON_ASCII_RUN.split(value)):
        if i % 2:  # a run of UTF-8 characters, taken as they are
            address.append(piece)
            continue
        try:
            address.append(decode_xtext(piece))
        except ValueError:
            raise RemoteProtocolError(replies.bad_parameter("ORCPT")) from None
    text = _EMBEDDED_UNICODE.sub(_unembed, "".join(address))
    if len(text) > ORCPT_LIMIT or _CONTROL.search(text):
        raise RemoteProtocolError(replies.bad_parameter("ORCPT"))
    return encode_utf8_addr_xtext(text)


def _unembed(m: re.Match[str]) -> str:
    point = int(m.group(1), 16)
    if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
        return m.group()  # no character: left as it came, escaped on the way out
    return chr(point)


def _xtext(value: str, name: str, limit: int) -> str:
    """The decoded xtext, at most ``limit`` characters: RFC 3461 limits ENVID
    and ORCPT before encoding, and each character takes at most three after."""
    if len(value) > 3 * limit:
        raise RemoteProtocolError(replies.bad_parameter(name))
    try:
        decoded = decode_xtext(value)
    except ValueError:
        raise RemoteProtocolError(replies.bad_parameter(name)) from None
    if len(decoded) > limit:
        raise RemoteProtocolError(replies.bad_parameter(name))
    return decoded
