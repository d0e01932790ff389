"""Bytes the SMTP client writes: command lines, ESMTP parameters, the body.

Owns RFC 3461 4 xtext encoding (ENVID, ORCPT), the MAIL and RCPT parameter
lists (each parameter only when the server advertised its extension), and
``BodyEncoder``: CRLF normalisation and dot-stuffing of the message body
(RFC 5321 4.5.2) done chunk by chunk, so a message is never held whole.

Never lets a CR, LF or NUL into a command line (``LocalProtocolError``: a
caller bug, and the way commands would be smuggled), never does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import LocalProtocolError
from .reader import Capabilities

# RFC 3461 4: xchar is "!" to "~" except "+" and "="; everything else,
# including each octet of a UTF-8 sequence, is "+" and two upper-case hex digits.
_XCHAR = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}
_UNSAFE = re.compile(r"[\r\n\x00]")
_NOTIFY_ORDER = ("NEVER", "SUCCESS", "FAILURE", "DELAY")


_XTEXT_PLAIN = re.compile(r"[!-*,-<>-~]*")
"""Text of xchars only, which the encoding leaves as it is (an ASCII address)."""


def encode_xtext(text: str) -> str:
    """``text`` as RFC 3461 4 xtext: ``a+b=c`` -> ``a+2Bb+3Dc``."""
    if _XTEXT_PLAIN.fullmatch(text):
        return text  # every ORCPT of plain mail: no generator per character
    return "".join(chr(b) if b in _XCHAR else f"+{b:02X}" for b in text.encode("utf-8"))


def encode_utf8_addr_xtext(address: str) -> str:
    """``address`` as RFC 6533 3 utf-8-addr-xtext, for ``ORCPT=utf-8;``:
    printable ASCII but '+', '=' and '\\' as it is, everything else as
    ``\\x{HEX}`` (``jösé@d`` -> ``j\\x{F6}s\\x{E9}@d``). The result has no '+'
    or '=', so the xtext encoding of the ORCPT value leaves it as it is."""
    return "".join(
        c if "!" <= c <= "~" and c not in "+=\\" else f"\\x{{{ord(c):X}}}" for c in address
    )


@dataclass(frozen=True, slots=True, init=False)
class MailRequest:
    """What MAIL FROM should carry. Each parameter is sent only when the
    server advertised it: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
    (RFC 6531), RET and ENVID (RFC 3461; ``envid`` is the decoded text)."""

    sender: str
    size: int | None = None
    body: Literal["7BIT", "8BITMIME"] | None = None
    smtputf8: bool = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    plain_body: bool = False  # not a parameter: how to send the body (BodyEncoder)

    def __init__(
        self,
        sender: str,
        size: int | None = None,
        body: Literal["7BIT", "8BITMIME"] | None = None,
        smtputf8: bool = False,
        ret: Literal["FULL", "HDRS"] | None = None,
        envid: str | None = None,
        plain_body: bool = False,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "envid", envid)
        object.__setattr__(self, "plain_body", plain_body)


@dataclass(frozen=True, slots=True, init=False)
class RcptRequest:
    """What RCPT TO should carry: NOTIFY keywords (empty: none given) and
    ORCPT as ``type;address`` with the address decoded (RFC 3461 4.1, 4.2);
    both only when the server advertised DSN."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None

    def __init__(
        self, address: str, notify: tuple[str, ...] = (), orcpt: str | None = None
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)


def _path(address: str) -> str:
    if _UNSAFE.search(address):
        raise LocalProtocolError(f"CR, LF or NUL in address {address!r}")
    return f"<{address}>"


def mail_line(request: MailRequest, caps: Capabilities) -> bytes:
    parts = [f"MAIL FROM:{_path(request.sender)}"]
    if caps.size_limit is not None and request.size is not None:
        parts.append(f"SIZE={request.size}")
    if caps.eightbitmime and request.body is not None:
        parts.append(f"BODY={request.body}")
    if caps.smtputf8 and request.smtputf8:
        parts.append("SMTPUTF8")
    if caps.dsn:
        if request.ret is not None:
            parts.append(f"RET={request.ret}")
        if request.envid:
            parts.append(f"ENVID={encode_xtext(request.envid)}")
    return (" ".join(parts) + "\r\n").encode("utf-8")


def rcpt_line(request: RcptRequest, caps: Capabilities) -> bytes:
    parts = [f"RCPT TO:{_path(request.address)}"]
    if caps.dsn:
        if request.notify:
            words = sorted({w.upper() for w in request.notify}, key=_NOTIFY_ORDER.index)
            parts.append("NOTIFY=" + ",".join(words))
        if request.orcpt:
            kind, _, address = request.orcpt.partition(";")
            if kind and address:
                parts.append(f"ORCPT={kind};{encode_xtext(address)}")
    return (" ".join(parts) + "\r\n").encode("utf-8")


def simple_line(verb: str, arg: str = "") -> bytes:
    if _UNSAFE.search(arg):
        raise LocalProtocolError(f"CR, LF or NUL in {verb} argument {arg!r}")
    return (f"{verb} {arg}\r\n" if arg else f"{verb}\r\n").encode("utf-8")


class BodyEncoder:
    """The DATA payload, chunk by chunk (RFC 5321 4.5.2, 2.3.8).

    Every line ending becomes CRLF: a bare LF (a spool written with Unix
    line ends) and a bare CR too, so the next hop never sees a lone CR or LF
    (the raw material of SMTP smuggling). A line starting with "." gets one
    more. ``finish()`` ends the last line if needed and adds ``.CRLF``.
    A CR at the end of a chunk is held back until the next one shows
    whether an LF follows. Cost: a few ``bytes.replace`` passes per chunk,
    or only counting passes for a chunk whose line ends are all CRLF.

    ``plain``: the caller knows that every line ends in CRLF and none starts
    with "." (Envelope.plain_body): chunks go out as they are, unscanned (the
    scans were a tenth of the queue manager's instructions per message).
    """

    __slots__ = ("_at_line_start", "_held_cr", "_plain")

    def __init__(self, plain: bool = False) -> None:
        self._at_line_start = True
        self._held_cr = False
        self._plain = plain

    def encode(self, chunk: bytes) -> bytes:
        if self._plain:
            if chunk:
                self._at_line_start = chunk.endswith(b"\n")
            return chunk
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._held_cr = True
        if not chunk:
            return b""
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\n") == crlf and chunk.count(b"\r") == crlf:
            # Every line end is CRLF already (what our own server spools):
            # only the dot-stuffing is left. Counting passes copy nothing; the
            # general path below copies the chunk four times (measured on a
            # 4 KiB body: 11.1 us against 13.5 us per message).
            if self._at_line_start and chunk.startswith(b"."):
                chunk = b"." + chunk
            self._at_line_start = chunk.endswith(b"\n")
            return chunk.replace(b"\n.", b"\n..")  # the chunk itself when no line starts with "."
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n.", b"\n..")
        if self._at_line_start and text.startswith(b"."):
            text = b"." + text
        self._at_line_start = text.endswith(b"\n")
        return text.replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        if self._held_cr:
            self._held_cr = False
            self._at_line_start = True
            return b"\r\n.\r\n"
        tail = b".\r\n" if self._at_line_start else b"\r\n.\r\n"
        self._at_line_start = True
        return tail
