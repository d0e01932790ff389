"""The XCLIENT command's attributes (Postfix's extension), sans-IO.

A trusted front end (a test tool, a proxy such as nginx's mail module, a
filter that hands mail back) tells the server who the real client is:
``XCLIENT NAME=host ADDR=192.0.2.7 HELO=client.example PROTO=ESMTP``. Whether
the sender may say so is the caller's decision (``ServerConnection`` is told
with ``allow_xclient()``); this module only reads and checks the attributes.

Values are xtext (RFC 3461 4). ``[UNAVAILABLE]`` and ``[TEMPUNAVAIL]`` mean
"not known": they become None. ``ADDR`` takes an IPv4 address, or an IPv6
one with or without Postfix's ``IPV6:`` prefix.
"""

from __future__ import annotations

import ipaddress
import re

from mxgate.core.reply import Reply

from . import replies
from .parse import decode_xtext

_UNKNOWN = frozenset({"[UNAVAILABLE]", "[TEMPUNAVAIL]"})
# A host name as DNS allows it (letters, digits, hyphens, dots; 255 at most).
_HOST_NAME = re.compile(r"(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?")
_TEXT_LIMIT = 255


def parse_xclient(arg: str) -> dict[str, str | None] | Reply:
    """``NAME=value ...`` -> attributes by upper-case name, checked and
    normalised (ADDR in its canonical text); the 501 reply for the first
    thing that is wrong."""
    attributes: dict[str, str | None] = {}
    for item in arg.split():
        name, equals, raw = item.partition("=")
        name = name.upper()
        if not equals or name not in replies.XCLIENT_ATTRIBUTES:
            # Echoed as Postfix does, but only what cannot break the reply.
            shown = name[:32] if name.isascii() and name.replace("_", "").isalnum() else "?"
            return replies.bad_xclient(f"attribute name: {shown}")
        try:
            value = decode_xtext(raw)
        except ValueError:
            return replies.bad_xclient(f"attribute value: {name}")
        checked = _check(name, value)
        if isinstance(checked, Reply):
            return checked
        attributes[name] = checked
    return attributes


def _check(name: str, value: str) -> str | Reply | None:
    if value.upper() in _UNKNOWN:
        return None
    if name in ("ADDR", "DESTADDR"):
        prefixed = value[:5].upper() == "IPV6:"
        text = value[5:] if prefixed else value
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return replies.bad_xclient(f"{name} syntax")
        if "%" in text or (prefixed and address.version != 6):
            return replies.bad_xclient(f"{name} syntax")
        return str(address)
    if name in ("NAME", "REVERSE_NAME"):
        good = _HOST_NAME.fullmatch(value) is not None
        return value.lower() if good else replies.bad_xclient(f"{name} syntax")
    if name == "PROTO":
        protocol = value.upper()
        return protocol if protocol in ("SMTP", "ESMTP") else replies.bad_xclient("PROTO syntax")
    if name in ("PORT", "DESTPORT"):
        good = value.isascii() and value.isdigit() and int(value) <= 65535
        return value if good else replies.bad_xclient(f"{name} syntax")
    # HELO and LOGIN: any text within the limit (control characters were
    # refused by the xtext decoding).
    if not value or len(value) > _TEXT_LIMIT:
        return replies.bad_xclient(f"{name} syntax")
    return value
