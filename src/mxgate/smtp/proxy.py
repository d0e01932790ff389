"""The PROXY protocol header (HAProxy's, versions 1 and 2), sans-IO.

A proxy in front of the gateway (HAProxy's ``send-proxy`` / ``send-proxy-v2``,
a cloud load balancer) opens each connection with one header naming the
client it stands for. Postfix reads it when ``smtpd_upstream_proxy_protocol =
haproxy``; so does mxgate, before the greeting. What the header says decides
who the client is, ``mynetworks`` included: it is only ever read from a proxy
the settings trust (``mxgate.server.session``).

Owns recognising and checking one header at the start of a byte string: bytes
in, the client's address (or the need for more bytes, or why the header is
refused) out. Stdlib only; no sockets, no clocks.

Version 1 is one text line, at most 107 octets with its CRLF:
``PROXY TCP4|TCP6 <client> <server> <client port> <server port>`` or
``PROXY UNKNOWN ...``. Version 2 is binary: a 12-octet signature, a
version/command octet, a family octet, a 2-octet length, the addresses and
optional TLVs (skipped).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest version 1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# Addresses plus TLVs. HAProxy's own are far shorter; a bound keeps a broken
# or hostile sender from making us buffer 64 KiB before we refuse it.
V2_MAX_LENGTH = 4096

# Family octet -> name, address type, octets per address (the block holds
# both addresses, then both ports).
_V2_FAMILIES: dict[int, tuple[str, type[ipaddress.IPv4Address | ipaddress.IPv6Address], int]] = {
    0x11: ("TCP4", ipaddress.IPv4Address, 4),
    0x21: ("TCP6", ipaddress.IPv6Address, 16),
}


class ProxyHeaderError(ValueError):
    """The connection does not start with a valid PROXY header (the message
    says why, for the log)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What one header said.

    ``client``: the address and port of the client the proxy stands for;
    None when the header names none (version 1 ``UNKNOWN``, a version 2
    family other than TCP). ``local``: a version 2 ``LOCAL`` header, sent by
    the proxy on its own behalf (its health checks): the connection's own
    peer is the client. ``length``: octets the header took; what follows is
    the client's SMTP."""

    version: int
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    local: bool
    length: int


def read_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while ``data`` is a true but
    incomplete beginning of one. Raises ProxyHeaderError for anything else."""
    if not data:
        return None
    if data.startswith(V2_SIGNATURE):
        return _read_v2(data)
    if data.startswith(V1_PREFIX):
        return _read_v1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]) or V1_PREFIX.startswith(
        data[: len(V1_PREFIX)]
    ):
        return None  # a beginning of either
    raise ProxyHeaderError("no PROXY header")


def _read_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("version 1 header longer than 107 octets")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("version 1 header not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("version 1 header is not ASCII") from None
    fields = line.split(" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        # The proxy does not know the client's address; what follows is to be
        # ignored (the protocol's own rule).
        return ProxyHeader(1, None, None, local=False, length=length)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed version 1 header: {line[:V1_MAX]!r}")
    family = 4 if fields[1] == "TCP4" else 6
    client = (_address(fields[2], family), _port(fields[4]))
    server = (_address(fields[3], family), _port(fields[5]))
    return ProxyHeader(1, client, server, local=False, length=length)


def _address(text: str, family: int) -> str:
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"bad address {text[:64]!r} in version 1 header") from None
    if parsed.version != family or "%" in text:
        raise ProxyHeaderError(f"bad address {text[:64]!r} for TCP{family}")
    return str(parsed)


def _port(text: str) -> int:
    # Decimal, 0 to 65535, no sign, no leading zero (the protocol's grammar).
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"bad port {text[:16]!r} in version 1 header")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"bad port {text[:16]!r} in version 1 header")
    return port


def _read_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"unsupported version {version} in binary header")
    if command > 1:
        raise ProxyHeaderError(f"unknown command {command} in version 2 header")
    family = data[13]
    size = int.from_bytes(data[14:16], "big")
    if size > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"version 2 header of {size} octets (at most {V2_MAX_LENGTH})")
    length = 16 + size
    if len(data) < length:
        return None
    if command == 0:
        return ProxyHeader(2, None, None, local=True, length=length)
    known = _V2_FAMILIES.get(family)
    if known is None:
        # UNSPEC, UDP or UNIX: no TCP client address to take.
        return ProxyHeader(2, None, None, local=False, length=length)
    name, kind, width = known
    if size < 2 * width + 4:
        raise ProxyHeaderError(f"version 2 {name} header too short")
    body = data[16:length]
    ports = 2 * width
    client = (str(kind(body[:width])), int.from_bytes(body[ports : ports + 2], "big"))
    server = (str(kind(body[width:ports])), int.from_bytes(body[ports + 2 : ports + 4], "big"))
    return ProxyHeader(2, client, server, local=False, length=length)
