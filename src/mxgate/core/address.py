"""Envelope addresses: an SMTP path argument parsed into a typed ``Address``.

Owns RFC 5321 4.1.2 path syntax (dot-atom or quoted-string local part; domain
or address literal; source routes), the length limits of RFC 5321 4.5.3.1,
SMTPUTF8 local parts (RFC 6531), IDNA A-labels for domains, and the
normalisation that makes lookups work: domains lower-case, a quoted local part
that is a valid dot-atom written unquoted (``"o'brien"`` is ``o'brien``), other
quoted local parts re-quoted minimally, ``key`` lower-case. Like Postfix it
tolerates a missing pair of angle brackets and blanks around the path.

Never raises, whatever the input (a hypothesis test holds it to that): every
problem is an ``AddressError`` value. Never looks anything up and never
decides policy: whether a ``%`` in a local part, a source route or an address
literal is acceptable is for the caller; this module only reports them.

IDNA: U-labels are converted with the stdlib ``encodings.idna`` codec, which
implements IDNA2003 (RFC 3490, nameprep). Where IDNA2008 differs it maps
rather than rejects: ``ß`` becomes ``ss`` and final sigma becomes sigma, so a
domain registered with the IDNA2008 A-label of such a name (``xn--zca...``)
must be written as that A-label. Symbols that IDNA2008 forbids are accepted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

# RFC 5321 4.5.3.1.1-3 (octets), and RFC 3696 errata 1690 for the whole
# address: a path is at most 256 octets including the angle brackets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
MAX_ADDRESS = MAX_PATH - 2
# RFC 1035 2.3.4: a label is at most 63 octets (the regexes below enforce it).

# Anything longer cannot be a valid path: refuse before doing any work on it.
_MAX_INPUT = 4 * MAX_PATH

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")

# The common case, checked by one regex: plain ASCII dot-atom without the
# routing characters % and !, an ASCII domain, brackets optional.
_FAST_ATOM = r"[A-Za-z0-9#$&'*+\-/=?^_`{|}~]+"
_FAST = re.compile(rf"<?({_FAST_ATOM}(?:\.{_FAST_ATOM})*)@((?:{_LABEL}\.)*{_LABEL})>?")

_DOT_ATOM_ASCII = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# RFC 6531 3.3: with SMTPUTF8, atext also takes any non-ASCII character.
_DOT_ATOM_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# Lenient local part: also lets '@' through, so that "a@b@example.com" is
# reported as a routing attempt (554) rather than as bad syntax (501).
_LOCAL_LENIENT = re.compile(rf"[{_ATEXT}@\u0080-\U0010ffff]+(?:\.[{_ATEXT}@\u0080-\U0010ffff]+)*")

# C0 controls, DEL, C1 controls and lone surrogates (which cannot be encoded
# as UTF-8) are never part of an address, quoted or not (RFC 5321 4.1.2
# qtextSMTP / quoted-pairSMTP are printable ASCII; RFC 6531 adds UTF-8 only).
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

ROUTING_CHARACTERS = "@%!"


class AddressProblem(enum.Enum):
    SYNTAX = "syntax"
    TOO_LONG = "too long"
    NEEDS_SMTPUTF8 = "needs SMTPUTF8"


@dataclass(frozen=True, slots=True)
class AddressError:
    """Why a path was not an address. ``NEEDS_SMTPUTF8`` maps to 553 5.6.7,
    the others to 501 5.1.3."""

    problem: AddressProblem
    detail: str


IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True, init=False)
class Address:
    """A parsed envelope address.

    local:         the local part as written, canonical quoting: unquoted when
                   it is a dot-atom, else a quoted-string escaping only '"' and
                   '\\' (case kept: outside our domains it is significant)
    domain:        lower-case A-label, '[192.0.2.1]' / '[ipv6:2001:db8::1]'
                   for an address literal, '' when unqualified
    quoted:        the local part needs quoting (it is not a dot-atom)
    routing_chars: the local part (quoted or not) contains '@', '%' or '!'
    source_route:  the domains of an RFC 5321 A-d-l ('@a,@b:'), in order
    literal:       the IP of an address literal, else None
    non_ascii:     local part or domain were written with non-ASCII characters
    key:           the lookup key: whole address lower-case (SPEC section 2);
                   derived, not a constructor argument, and computed once
                   here because one decision reads it many times
    The null path '<>' is ``Address('', '')``.
    """

    local: str
    domain: str
    quoted: bool = False
    routing_chars: bool = False
    source_route: tuple[str, ...] = ()
    literal: IPAddress | None = None
    non_ascii: bool = False
    key: str = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        local: str,
        domain: str,
        quoted: bool = False,
        routing_chars: bool = False,
        source_route: tuple[str, ...] = (),
        literal: IPAddress | None = None,
        non_ascii: bool = False,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "quoted", quoted)
        object.__setattr__(self, "routing_chars", routing_chars)
        object.__setattr__(self, "source_route", source_route)
        object.__setattr__(self, "literal", literal)
        object.__setattr__(self, "non_ascii", non_ascii)
        lowered = local.lower()
        object.__setattr__(self, "key", f"{lowered}@{domain}" if domain else lowered)

    @property
    def is_null(self) -> bool:
        return not self.local and not self.domain

    @property
    def is_qualified(self) -> bool:
        return bool(self.domain)

    @property
    def is_literal(self) -> bool:
        return self.literal is not None

    @property
    def has_source_route(self) -> bool:
        return bool(self.source_route)

    def __str__(self) -> str:
        if not self.domain:
            return self.local
        return f"{self.local}@{self.domain}"


NULL_ADDRESS = Address("", "")


def _syntax(detail: str) -> AddressError:
    return AddressError(AddressProblem.SYNTAX, detail)


def _too_long(detail: str) -> AddressError:
    return AddressError(AddressProblem.TOO_LONG, detail)


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def parse_path(text: str, smtputf8: bool = False) -> Address | AddressError:
    """Parse what follows ``TO:`` or ``FROM:`` (ESMTP parameters split off).

    ``<user@example.com>``, `` <user@example.com>`` and ``user@example.com``
    are the same path; ``<>`` is the null path; ``postmaster`` parses as an
    unqualified address (the caller decides whether that is acceptable).
    """
    if len(text) > _MAX_INPUT:
        return _too_long(f"path longer than {MAX_PATH} octets")
    s = text.strip(" \t")
    m = _FAST.fullmatch(s)
    if m is not None and (s[0] == "<") == (s[-1] == ">"):
        local, domain = m.group(1), m.group(2).lower()
        if len(local) > MAX_LOCAL_PART:
            return _too_long(f"local part longer than {MAX_LOCAL_PART} octets")
        if len(local) + 1 + len(domain) > MAX_ADDRESS:
            return _too_long(f"address longer than {MAX_ADDRESS} octets")
        return Address(local, domain)
    return _parse_general(s, smtputf8)


def _parse_general(s: str, smtputf8: bool) -> Address | AddressError:
    if not s:
        # Nothing at all is not the null path: that is written "<>".
        return _syntax("empty path")
    if _FORBIDDEN.search(s):
        return _syntax("control character in address")
    non_ascii = not s.isascii()
    if non_ascii and not smtputf8:
        return AddressError(AddressProblem.NEEDS_SMTPUTF8, "non-ASCII address without SMTPUTF8")
    if s.startswith("<"):
        if len(s) < 2 or not s.endswith(">"):
            return _syntax("unbalanced angle brackets")
        inner = s[1:-1]
    elif s.endswith(">"):
        return _syntax("unbalanced angle brackets")
    else:
        inner = s
    if _octets(inner) + 2 > MAX_PATH:
        return _too_long(f"path longer than {MAX_PATH} octets")
    if not inner:
        return NULL_ADDRESS

    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        # RFC 5321 4.1.2 A-d-l: "@a,@b:" before the mailbox. At-domain takes
        # no address literal, so the first ':' ends it.
        colon = inner.find(":")
        if colon < 0:
            return _syntax("source route without ':'")
        hops: list[str] = []
        for hop in inner[:colon].split(","):
            if not hop.startswith("@"):
                return _syntax("bad source route")
            parsed = _parse_domain(hop[1:], allow_literal=False)
            if isinstance(parsed, AddressError):
                return parsed
            hops.append(parsed[0])
        route = tuple(hops)
        inner = inner[colon + 1 :]

    split = _split_mailbox(inner)
    if isinstance(split, AddressError):
        return split
    local_written, domain_written = split
    local = _parse_local(local_written)
    if isinstance(local, AddressError):
        return local
    canonical, quoted, routing = local
    if _octets(local_written) > MAX_LOCAL_PART:
        return _too_long(f"local part longer than {MAX_LOCAL_PART} octets")

    if domain_written is None:
        if route:
            return _syntax("source route to an unqualified address")
        return Address(canonical, "", quoted, routing, (), None, non_ascii)
    parsed_domain = _parse_domain(domain_written, allow_literal=True)
    if isinstance(parsed_domain, AddressError):
        return parsed_domain
    domain, literal = parsed_domain
    if _octets(canonical) + 1 + len(domain) > MAX_ADDRESS:
        return _too_long(f"address longer than {MAX_ADDRESS} octets")
    return Address(canonical, domain, quoted, routing, route, literal, non_ascii)


def _split_mailbox(inner: str) -> tuple[str, str | None] | AddressError:
    """Split ``local@domain`` at the '@' that ends the local part: after the
    closing quote of a quoted-string, else the last '@'."""
    if inner.startswith('"'):
        i, n = 1, len(inner)
        while i < n:
            c = inner[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                break
            i += 1
        if i >= n:
            return _syntax("unterminated quoted string")
        rest = inner[i + 1 :]
        if not rest:
            return inner, None
        if rest[0] != "@":
            return _syntax("text after quoted local part")
        return inner[: i + 1], rest[1:]
    if inner.startswith("@"):
        # A mailbox cannot start with '@' unquoted: it would read as a source
        # route (RFC 5321 4.1.2), and printing it back would change its meaning.
        return _syntax("local part starts with '@'")
    at = inner.rfind("@")
    if at < 0:
        return inner, None
    return inner[:at], inner[at + 1 :]


def _parse_local(written: str) -> tuple[str, bool, bool] | AddressError:
    """Return (canonical local part, needs quoting, has routing characters)."""
    if written.startswith('"'):
        content = _unquote(written[1:-1])
        if not content:
            # RFC 5321 allows "" but no mailbox of ours can have an empty
            # local part, and Postfix refuses it too.
            return _syntax("empty local part")
        routing = any(c in ROUTING_CHARACTERS for c in content)
        if _DOT_ATOM_UTF8.fullmatch(content):
            # SPEC section 3: "o'brien" quoted is the same address unquoted.
            return content, False, routing
        return quote_local(content), True, routing
    if not written:
        return _syntax("empty local part")
    if not _LOCAL_LENIENT.fullmatch(written):
        return _syntax("bad local part")
    return written, False, any(c in ROUTING_CHARACTERS for c in written)


def _unquote(body: str) -> str:
    if "\\" not in body:
        return body
    out: list[str] = []
    escaped = False
    for c in body:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            out.append(c)
    return "".join(out)


def quote_local(content: str) -> str:
    """The minimal RFC 5321 quoted-string for an unquoted local part."""
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_local(local: str) -> str:
    """The content of a local part: quotes and quoted-pairs removed."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return _unquote(local[1:-1])
    return local


def _parse_domain(text: str, allow_literal: bool) -> tuple[str, IPAddress | None] | AddressError:
    if text.startswith("["):
        if not allow_literal or not text.endswith("]"):
            return _syntax("bad address literal")
        return _parse_literal(text[1:-1])
    domain = normalize_domain(text)
    if isinstance(domain, AddressError):
        return domain
    return domain, None


def _parse_literal(body: str) -> tuple[str, IPAddress | None] | AddressError:
    # RFC 5321 4.1.3: IPv4 dotted quad, or "IPv6:" and an IPv6 address. Other
    # General-address-literal tags are not registered: bad syntax.
    try:
        if body[:5].lower() == "ipv6:":
            v6 = body[5:]
            if "%" in v6:  # ipaddress takes scope ids; an address literal does not
                return _syntax("bad IPv6 address literal")
            ip6 = IPv6Address(v6)
            return f"[ipv6:{ip6.compressed}]", ip6
        ip4 = IPv4Address(body)
    except ValueError:
        return _syntax("bad address literal")
    return f"[{ip4}]", ip4


def normalize_domain(text: str) -> str | AddressError:
    """A domain as the snapshot keys it: lower-case A-labels, no trailing dot.

    Also used for operator input (``mxgate query``), so it accepts U-labels
    regardless of SMTPUTF8.
    """
    if not text:
        return _syntax("empty domain")
    if text.endswith("."):
        return _syntax("domain ends with a dot")
    if not text.isascii():
        try:
            # IDNA2003 ToASCII per label (see the module docstring).
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return _syntax("bad internationalised domain")
    text = text.lower()
    if len(text) > MAX_DOMAIN:
        return _too_long(f"domain longer than {MAX_DOMAIN} octets")
    if not _DOMAIN.fullmatch(text):
        return _syntax("bad domain")
    return text


def split_extension(local: str, delimiter: str) -> tuple[str, str] | None:
    """``("user", "+ext")`` for ``user+ext``, as Postfix's split_addr does:
    the first of the delimiter characters splits, never at position 0."""
    if not delimiter:
        return None
    if len(delimiter) == 1:
        i = local.find(delimiter)
    else:
        i = next((n for n, c in enumerate(local) if c in delimiter), -1)
    if i <= 0:
        return None
    return local[:i], local[i:]


def is_dot_atom(local: str) -> bool:
    return _DOT_ATOM_UTF8.fullmatch(local) is not None
