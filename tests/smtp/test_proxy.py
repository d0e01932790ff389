"""The PROXY protocol header parser (mxgate.smtp.proxy), versions 1 and 2."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.smtp.proxy import (
    V1_MAX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    read_proxy_header,
)


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp4(client: str, server: str, cport: int, sport: int, tlvs: bytes = b"") -> bytes:
    body = (
        ipaddress.IPv4Address(client).packed
        + ipaddress.IPv4Address(server).packed
        + struct.pack("!HH", cport, sport)
    )
    return v2(1, 0x11, body + tlvs)


def v2_tcp6(client: str, server: str, cport: int, sport: int) -> bytes:
    body = (
        ipaddress.IPv6Address(client).packed
        + ipaddress.IPv6Address(server).packed
        + struct.pack("!HH", cport, sport)
    )
    return v2(1, 0x21, body)


# -- version 1 ----------------------------------------------------------------


def test_v1_tcp4_names_the_client_and_the_server() -> None:
    data = b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\r\nEHLO x\r\n"
    header = read_proxy_header(data)
    assert header == ProxyHeader(
        1, ("192.0.2.7", 40123), ("198.51.100.1", 25), local=False, length=44
    )
    assert data[header.length :] == b"EHLO x\r\n"


def test_v1_tcp6_addresses_come_out_in_canonical_form() -> None:
    header = read_proxy_header(b"PROXY TCP6 2001:DB8:0:0::7 2001:db8::1 65535 0\r\n")
    assert header is not None
    assert header.client == ("2001:db8::7", 65535)
    assert header.server == ("2001:db8::1", 0)


def test_v1_unknown_names_no_client_and_ignores_the_rest() -> None:
    header = read_proxy_header(b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\nQUIT\r\n")
    assert header is not None
    assert header.client is None and not header.local
    assert header.length == len(b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n")


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25 x\r\n",  # one too many
        b"PROXY TCP5 192.0.2.7 198.51.100.1 40123 25\r\n",
        b"PROXY tcp4 192.0.2.7 198.51.100.1 40123 25\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 40123 25\r\n",  # family mismatch
        b"PROXY TCP6 192.0.2.7 2001:db8::1 40123 25\r\n",
        b"PROXY TCP6 fe80::1%eth0 2001:db8::1 40123 25\r\n",  # a scope
        b"PROXY TCP4 192.0.2.777 198.51.100.1 40123 25\r\n",
        b"PROXY TCP4 192.0.2.07 198.51.100.1 40123 25\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 040123 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 \xd9\xa1 25\r\n",  # not ASCII
        b"PROXY TCP4  192.0.2.7 198.51.100.1 40123 25\r\n",  # two spaces
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\n",  # bare LF
        b"PROXY TCP4 192.0.2.7\r198.51.100.1 40123 25\r\n",  # bare CR
    ],
)
def test_v1_malformed_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        read_proxy_header(line)


def test_v1_without_crlf_in_107_octets_is_refused() -> None:
    assert read_proxy_header(b"PROXY TCP4 " + b"1" * (V1_MAX - 12)) is None
    with pytest.raises(ProxyHeaderError, match="107"):
        read_proxy_header(b"PROXY TCP4 " + b"1" * (V1_MAX - 11))


# -- version 2 ----------------------------------------------------------------


def test_v2_tcp4_with_tlvs_skipped() -> None:
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc"  # PP2_TYPE_NOOP
    data = v2_tcp4("192.0.2.7", "198.51.100.1", 40123, 25, tlv) + b"EHLO x\r\n"
    header = read_proxy_header(data)
    assert header is not None
    assert (header.version, header.client, header.server) == (
        2,
        ("192.0.2.7", 40123),
        ("198.51.100.1", 25),
    )
    assert data[header.length :] == b"EHLO x\r\n"


def test_v2_tcp6() -> None:
    header = read_proxy_header(v2_tcp6("2001:db8::7", "2001:db8::1", 1, 587))
    assert header is not None
    assert header.client == ("2001:db8::7", 1)
    assert header.server == ("2001:db8::1", 587)


def test_v2_local_is_the_proxy_itself() -> None:
    # A health check: LOCAL, whatever the family and address block say.
    header = read_proxy_header(v2(0, 0x11, bytes(12)))
    assert header is not None
    assert header.local and header.client is None


@pytest.mark.parametrize("family", [0x00, 0x12, 0x22, 0x31, 0x32])
def test_v2_other_families_name_no_client(family: int) -> None:
    header = read_proxy_header(v2(1, family, bytes(216 if family >= 0x31 else 0)))
    assert header is not None
    assert header.client is None and not header.local


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12),  # version 1 in binary
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12),  # command 2
        v2(1, 0x11, bytes(11)),  # TCP4 block too short
        v2(1, 0x21, bytes(35)),  # TCP6 block too short
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", V2_MAX_LENGTH + 1),
    ],
)
def test_v2_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        read_proxy_header(data)


# -- neither ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"EHLO client.example\r\n", b"QUIT\r\n", b"PROXY", b"\r\n\r\nX", b"\x16\x03\x01"]
)
def test_smtp_or_tls_instead_of_a_header(data: bytes) -> None:
    if data == b"PROXY":
        assert read_proxy_header(data) is None  # could still become one
        with pytest.raises(ProxyHeaderError):
            read_proxy_header(data + b"\r\n")
        return
    with pytest.raises(ProxyHeaderError):
        read_proxy_header(data)


# -- properties ---------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, tuple[str, int], tuple[str, int]]:
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v2-4", "v2-6"]))
    addresses = ipv4 if kind.endswith("4") else ipv6
    client = (draw(addresses), draw(ports))
    server = (draw(addresses), draw(ports))
    if kind == "v2-4":
        data = v2_tcp4(client[0], server[0], client[1], server[1])
    elif kind == "v2-6":
        data = v2_tcp6(client[0], server[0], client[1], server[1])
    else:
        family = "TCP4" if kind == "v1-4" else "TCP6"
        data = f"PROXY {family} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()
    return data, client, server


@given(headers(), st.binary(max_size=64))
def test_every_valid_header_is_read_back_and_only_when_whole(
    case: tuple[bytes, tuple[str, int], tuple[str, int]], after: bytes
) -> None:
    data, client, server = case
    header = read_proxy_header(data + after)
    assert header is not None
    assert (header.client, header.server, header.length) == (client, server, len(data))
    # Any beginning of it asks for more; none is taken for a header.
    for cut in range(len(data)):
        assert read_proxy_header(data[:cut]) is None


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_more_or_a_refusal(data: bytes) -> None:
    try:
        header = read_proxy_header(data)
    except ProxyHeaderError:
        return
    if header is None:
        # Only while it could still become one, and within the bounds.
        assert len(data) < 16 + V2_MAX_LENGTH
    else:
        assert 0 < header.length <= len(data)


@given(st.binary(min_size=1, max_size=40))
def test_garbage_after_the_v2_signature_never_crashes(tail: bytes) -> None:
    with contextlib.suppress(ProxyHeaderError):
        read_proxy_header(V2_SIGNATURE + tail)
