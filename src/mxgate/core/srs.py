"""The Sender Rewriting Scheme itself (Shevek's SRS paper, the "Guarded" scheme).

Owns the address formats and the cryptography, the same as libsrs2, postsrsd
and the Python ports implement them, so that their addresses and ours verify
each other:

- ``SRS0=HHH=TT=domain=local``: the first forwarder's rewrite of
  ``local@domain``. ``TT`` is the day of the rewrite, ``int(time / 86400)``
  modulo 1024, in two characters of the base32 alphabet ``A-Z2-7`` (most
  significant five bits first). ``HHH`` is HMAC-SHA1, keyed with the secret,
  over ``TT``, ``domain`` and ``local`` (each ASCII-lower-cased, concatenated),
  base64-encoded and truncated (four characters by default).
- ``SRS1=HHH=first-domain==HHH0=TT=domain=local``: a later forwarder's rewrite
  of an ``SRS0`` address of ``first-domain``: the part after ``SRS0`` is kept
  opaque (with its leading separator), ``HHH`` covers ``first-domain`` and that
  opaque part. Rewriting an ``SRS1`` address again keeps its first domain and
  opaque part and only replaces the hash (bounces skip the middle hops).
- The tags ``SRS0``/``SRS1`` and the timestamp are read case-insensitively,
  the separator after the tag may be ``=``, ``+`` or ``-``, and hashes are
  compared case-insensitively, because some mail systems change the case of
  local parts. A timestamp is valid for ``max_age`` days after the day it
  names (libsrs2's rule: ``now <= then + max_age``, in days modulo 1024).

Works on local parts as text (their content: without RFC 5321 quoting): which
domain is ours, which key signs, and when to rewrite at all are for the
caller (``core.srs_policy``). Time and secrets are arguments; never does I/O,
never raises on input from the network: a bad address is an ``SrsError``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

SEPARATORS = "=+-"
"""What may follow the SRS0/SRS1 tag; inside the address '=' separates fields."""

TIMESTAMP_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
DAY = 86400
TIMESTAMP_SLOTS = 1024  # two base32 characters: days modulo 2**10
MAX_HASH_LENGTH = 27  # base64 of a 20-byte SHA-1 digest, without the '=' padding

_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SrsKind(enum.Enum):
    SRS0 = "SRS0"
    SRS1 = "SRS1"


class SrsProblem(enum.Enum):
    """Why an SRS address does not reverse; the value is the text for people."""

    SYNTAX = "malformed SRS address"
    HASH_LENGTH = "hash too short or too long"
    TIMESTAMP = "malformed timestamp"
    HASH = "hash does not verify"
    EXPIRED = "timestamp expired"
    NO_KEY = "no SRS key to verify with"


@dataclass(frozen=True, slots=True)
class SrsError:
    problem: SrsProblem
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.problem.value}{f' ({self.detail})' if self.detail else ''}"


@dataclass(frozen=True, slots=True)
class SrsAddress:
    """The fields of an SRS local part.

    SRS0: ``host``/``user`` are the original sender's domain and local part.
    SRS1: ``host`` is the first forwarder's domain and ``user`` the opaque part
    of its SRS0 address (after the tag, starting with a separator);
    ``timestamp`` is ''.
    """

    kind: SrsKind
    hash: str
    timestamp: str
    host: str
    user: str


def _lower(text: str) -> str:
    # libsrs2 folds with C's tolower(): ASCII letters only.
    return text.translate(_ASCII_UPPER)


def srs_kind(local: str) -> SrsKind | None:
    """SRS0 or SRS1 when the local part starts with that tag and a separator."""
    if len(local) < 5 or local[4] not in SEPARATORS:
        return None
    tag = local[:4].upper()
    if tag == "SRS0":
        return SrsKind.SRS0
    if tag == "SRS1":
        return SrsKind.SRS1
    return None


def make_hash(secret: str, parts: Iterable[str], length: int) -> str:
    """HMAC-SHA1 of the lower-cased parts, base64, the first ``length`` characters."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    for part in parts:
        mac.update(_lower(part).encode("utf-8"))
    return base64.b64encode(mac.digest()).decode("ascii")[:length]


def day_timestamp(now: float) -> str:
    """The two-character timestamp of the day ``now`` (Unix time) falls in."""
    day = int(now // DAY) % TIMESTAMP_SLOTS
    return TIMESTAMP_ALPHABET[day >> 5] + TIMESTAMP_ALPHABET[day & 31]


def timestamp_age(stamp: str, now: float) -> int | None:
    """Days from the timestamp to ``now`` (0..1023), None when malformed."""
    if len(stamp) != 2:
        return None
    high = TIMESTAMP_ALPHABET.find(stamp[0].upper())
    low = TIMESTAMP_ALPHABET.find(stamp[1].upper())
    if high < 0 or low < 0:
        return None
    then = high << 5 | low
    return (int(now // DAY) - then) % TIMESTAMP_SLOTS


def parse(local: str) -> SrsAddress | SrsError | None:
    """The fields of an SRS local part; None when it is not one (no tag)."""
    kind = srs_kind(local)
    if kind is None:
        return None
    body = local[5:]
    if kind is SrsKind.SRS0:
        fields = body.split("=", 3)
        if len(fields) != 4 or not all(fields):
            return SrsError(SrsProblem.SYNTAX, "SRS0 needs hash=timestamp=domain=local")
        hash_, stamp, host, user = fields
        return SrsAddress(kind, hash_, stamp, host, user)
    hash_, _, rest = body.partition("=")
    host, _, user = rest.partition("=")
    if not hash_ or not host or len(user) < 2 or user[0] not in SEPARATORS:
        return SrsError(SrsProblem.SYNTAX, "SRS1 needs hash=domain=opaque part of an SRS0")
    return SrsAddress(kind, hash_, "", host, user)


def forward(local: str, domain: str, secret: str, now: float, hash_length: int = 4) -> str:
    """The new local part (content, unquoted) that stands for ``local@domain``
    at our SRS domain: SRS1 for an SRS0 or SRS1 address of another domain
    (SRS1 rewritten again keeps its first domain), else SRS0."""
    kind = srs_kind(local)
    if kind is SrsKind.SRS1:
        parsed = parse(local)
        if isinstance(parsed, SrsAddress):
            return _srs1(parsed.host, parsed.user, secret, hash_length)
        # A malformed SRS1 is just a local part: wrapped in SRS0 below.
    elif kind is SrsKind.SRS0:
        return _srs1(domain, local[4:], secret, hash_length)
    stamp = day_timestamp(now)
    hash_ = make_hash(secret, (stamp, domain, local), hash_length)
    return f"SRS0={hash_}={stamp}={domain}={local}"


def _srs1(host: str, opaque: str, secret: str, hash_length: int) -> str:
    return f"SRS1={make_hash(secret, (host, opaque), hash_length)}={host}={opaque}"


def check_hash(given: str, secrets: Iterable[str], parts: tuple[str, ...], min_length: int) -> bool:
    """Whether ``given`` is the hash of ``parts`` under one of ``secrets``,
    compared case-insensitively over the length given (at least ``min_length``)."""
    if not min_length <= len(given) <= MAX_HASH_LENGTH:
        return False
    want = _lower(given).encode("utf-8")
    found = False
    for secret in secrets:
        computed = _lower(make_hash(secret, parts, len(given))).encode("ascii")
        # No early exit: the time taken does not say which key matched.
        found |= hmac.compare_digest(want, computed)
    return found


def reverse(
    address: SrsAddress,
    secrets: Iterable[str],
    now: float,
    *,
    max_age: int = 21,
    min_hash_length: int = 4,
) -> tuple[str, str] | SrsError:
    """(local, domain) of the address a verified SRS address stands for: the
    original sender for SRS0, the first forwarder's SRS0 address for SRS1."""
    keys = tuple(secrets)
    if not keys:
        return SrsError(SrsProblem.NO_KEY)
    if not min_hash_length <= len(address.hash) <= MAX_HASH_LENGTH:
        return SrsError(SrsProblem.HASH_LENGTH, f"{len(address.hash)} characters")
    if address.kind is SrsKind.SRS1:
        if not check_hash(address.hash, keys, (address.host, address.user), min_hash_length):
            return SrsError(SrsProblem.HASH)
        return "SRS0" + address.user, address.host
    parts = (address.timestamp, address.host, address.user)
    if timestamp_age(address.timestamp, now) is None:
        return SrsError(SrsProblem.TIMESTAMP, address.timestamp)
    if not check_hash(address.hash, keys, parts, min_hash_length):
        return SrsError(SrsProblem.HASH)
    age = timestamp_age(address.timestamp, now)
    assert age is not None
    if age > max_age:
        return SrsError(SrsProblem.EXPIRED, f"{age} days old, the limit is {max_age}")
    return address.user, address.host
