"""The envelope record: a versioned JSON document closed by a checksum line.

Owns the byte format of an envelope record, encoding and decoding it. Pure: no
I/O, no clock. Never accepts a record it cannot fully vouch for: anything torn,
truncated, edited or of an unknown version raises ``SpoolCorruptError``.

A record is UTF-8 text that an operator can read in an editor::

    {
     "format": "mxgate-envelope",
     "version": 1,
     "queue_id": "0V4G2K7Q9M11A3F20003",
     "body": {"size": 4711, "sha256": "9f86d0..."},
     "sender": "a@example.org",
     "arrival": 1767225600.25,
     ...
     "recipients": [
      {"address": "b@example.com", "original": "b@example.com", ..., "state": "PENDING"},
      {"address": "c@example.net", "original": "c@example.com", ..., "state": "DEFERRED"}
     ]
    }
    END 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8

The last line is ``END`` and the SHA-256 (hex) of every byte before it, so a
file cut at any byte, or with bytes changed, never decodes (the END record of
Postfix's queue files, made verifiable). ``body`` describes the body file, so
recovery can also tell a truncated body from a whole one. In a journal frame
the body's ``sha256`` is empty: the frame's CRC-32 covers the body there, and
the checksum is filled in when the message is written out as queue files.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mxgate.core.envelope import (
    BodyType,
    DsnRet,
    Envelope,
    JsonValue,
    Notify,
    Recipient,
    RecipientState,
)
from mxgate.spool.errors import SpoolCorruptError

FORMAT_NAME = "mxgate-envelope"
VERSION = 1
_END_RE = re.compile(rb"^END ([0-9a-f]{64})$")


@dataclass(frozen=True, slots=True, init=False)
class Record:
    """An envelope plus what the spool knows about the body file."""

    envelope: Envelope
    body_size: int
    body_sha256: str

    def __init__(self, envelope: Envelope, body_size: int, body_sha256: str) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "envelope", envelope)
        object.__setattr__(self, "body_size", body_size)
        object.__setattr__(self, "body_sha256", body_sha256)


def encode(record: Record) -> bytes:
    """The record's bytes. Raises ValueError for values JSON cannot carry (NaN...).

    Enum members give ``_value_`` (their value, a plain attribute) rather than
    ``.value``, a property written in Python: interpreted calls per message
    on the SMTP worker's path, even when this module is compiled."""
    env = record.envelope
    ret = env.ret
    values = (
        FORMAT_NAME,
        VERSION,
        env.queue_id,
        {"size": record.body_size, "sha256": record.body_sha256},
        env.sender,
        env.arrival,
        env.client_address,
        env.client_helo,
        env.client_hostname,
        env.size,
        env.body_type._value_,
        env.smtputf8,
        None if ret is None else ret._value_,
        env.envid,
    )
    try:
        # One field per line and one recipient per line: readable and diffable in
        # an editor, yet every piece goes through the fast (C) compact encoder.
        dumps = _encode_json
        text = "".join(
            [
                "{\n",
                *[
                    prefix + _scalar(value) + ",\n"
                    for prefix, value in zip(_PREFIXES, values, strict=True)
                ],
                # Only once set: records of every other message keep the bytes
                # they had before delay warnings existed.
                ' "delay_warned": true,\n' if env.delay_warned else "",
                # Absent (false) in records written before it existed, and for
                # bodies that must be scanned on the way out.
                ' "plain_body": true,\n' if env.plain_body else "",
                ' "recipients": [\n',
                ",\n".join(["  " + dumps(_encode_recipient(r)) for r in env.recipients]),
                "\n ]\n}\n",
            ]
        )
        head = text.encode("utf-8")
    except (TypeError, UnicodeEncodeError) as err:
        raise ValueError(f"{env.queue_id}: envelope cannot be stored: {err}") from None
    return b"%sEND %s\n" % (head, hashlib.sha256(head).hexdigest().encode("ascii"))


_FIELDS = (
    "format",
    "version",
    "queue_id",
    "body",
    "sender",
    "arrival",
    "client_address",
    "client_helo",
    "client_hostname",
    "size",
    "body_type",
    "smtputf8",
    "ret",
    "envid",
)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
"""One encoder for every value: ``json.dumps`` with options builds a new one per call."""


def _one_shot_encoder() -> Callable[[object], str]:
    """``_ENCODER.encode``, less the set-up it repeats on every call (it builds
    the C encoder each time: most of its cost for a small value): the C
    encoder built once, with the same options and without the check for
    circular references (a record is a tree). Same text, byte for byte."""
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return _ENCODER.encode
    chunks = make(
        None,  # no circular-reference markers
        _ENCODER.default,
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,  # indent
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    return lambda value: "".join(chunks(value, 0))


_encode_json = _one_shot_encoder()
_PREFIXES = tuple(f" {_encode_json(name)}: " for name in _FIELDS)


_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def _scalar(value: object) -> str:
    """JSON for one header field: strings, ints, booleans and null directly
    (``JSONEncoder.encode`` builds an encoder object per call for anything but
    a string: most of this function's cost before); floats, with their NaN
    check, and dicts through the encoder."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if isinstance(value, str) and kind is str:
        return _encode_str(value)
    if isinstance(value, int) and kind is int:
        return int.__repr__(value)
    return _encode_json(value)


def _encode_recipient(rcpt: Recipient) -> dict[str, Any]:
    return {
        "address": rcpt.address,
        "original": rcpt.original,
        "orcpt": rcpt.orcpt,
        # A fixed order keeps rewrites of an unchanged record byte-identical.
        "notify": sorted(n._value_ for n in rcpt.notify),
        "route": dict(rcpt.route),
        "state": rcpt.state._value_,
        "attempts": rcpt.attempts,
        "next_attempt": rcpt.next_attempt,
        "last_reply": rcpt.last_reply,
    }


# By value, as BodyType(value) would, without EnumType.__call__ (interpreted, per
# message read; mxgate.native). An unknown value is a KeyError: a corrupt record.
_BODY_TYPES = {member._value_: member for member in BodyType}
_STATES = {member._value_: member for member in RecipientState}
_NOTIFY = {member._value_: member for member in Notify}
_RETS = {member._value_: member for member in DsnRet}

# The C scanner when there is one (else json's Python one), with json.loads's
# default options (typeshed types make_scanner as a class: hence Any).
_make_scanner: Any = json.scanner.make_scanner
_SCAN: Callable[[str, int], tuple[object, int]] = _make_scanner(json.JSONDecoder())
_JSON_BLANKS = " \t\n\r"


def _loads(text: str) -> object:
    """``json.loads(text)`` (same values, same refusals, as ValueError) without
    its three interpreted wrappers (loads, decode, raw_decode): the C scanner
    called directly. The queue manager decodes a record per delivery."""
    start = len(text) - len(text.lstrip(_JSON_BLANKS))
    try:
        value, end = _SCAN(text, start)
    except StopIteration as stop:
        raise ValueError(f"no JSON value at character {stop.value}") from None
    if text[end:].strip(_JSON_BLANKS):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value


def decode(data: bytes) -> Record:
    """The record in ``data``; SpoolCorruptError unless it is whole and valid."""
    if not data.endswith(b"\n"):
        raise SpoolCorruptError("truncated record: no final newline")
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    head, last = data[:cut], data[cut:-1]
    match = _END_RE.match(last)
    if not match:
        raise SpoolCorruptError("truncated record: no END line")
    if hashlib.sha256(head).hexdigest().encode("ascii") != match.group(1):
        raise SpoolCorruptError("checksum mismatch")
    try:
        document = _loads(head.decode("utf-8"))
        return _decode_document(document)
    except SpoolCorruptError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        # The checksum held, so this is a record we wrote with another version
        # or a bug, not a torn write; it is still unusable.
        raise SpoolCorruptError(f"invalid record: {err!r}") from None


def _decode_document(document: object) -> Record:
    doc = _dict(document)
    if doc.get("format") != FORMAT_NAME:
        raise SpoolCorruptError("not an mxgate envelope record")
    if doc.get("version") != VERSION:
        raise SpoolCorruptError(f"unsupported record version {doc.get('version')!r}")
    body = _dict(doc["body"])
    ret = _opt_str(doc, "ret")
    envelope = Envelope(
        queue_id=_str(doc, "queue_id"),
        sender=_str(doc, "sender"),
        arrival=_float(doc, "arrival"),
        client_address=_str(doc, "client_address"),
        client_helo=_str(doc, "client_helo"),
        client_hostname=_str(doc, "client_hostname"),
        size=_int(doc, "size"),
        body_type=_BODY_TYPES[_str(doc, "body_type")],
        smtputf8=_bool(doc, "smtputf8"),
        ret=_RETS[ret] if ret is not None else None,
        envid=_opt_str(doc, "envid"),
        # Absent from records written before delay warnings existed.
        delay_warned="delay_warned" in doc and _bool(doc, "delay_warned"),
        plain_body="plain_body" in doc and _bool(doc, "plain_body"),
        recipients=tuple(_decode_recipient(r) for r in _list(doc["recipients"])),
    )
    return Record(envelope, body_size=_int(body, "size"), body_sha256=_str(body, "sha256"))


def _decode_recipient(item: object) -> Recipient:
    rcpt = _dict(item)
    next_attempt = rcpt["next_attempt"]
    route: dict[str, JsonValue] = _dict(rcpt["route"])
    return Recipient(
        address=_str(rcpt, "address"),
        original=_str(rcpt, "original"),
        orcpt=_opt_str(rcpt, "orcpt"),
        notify=frozenset([_NOTIFY[_as_str(n)] for n in _list(rcpt["notify"])]),
        route=route,
        state=_STATES[_str(rcpt, "state")],
        attempts=_int(rcpt, "attempts"),
        next_attempt=None if next_attempt is None else _float(rcpt, "next_attempt"),
        last_reply=_str(rcpt, "last_reply"),
    )


# Strict field readers: a wrong type is a corrupt record, never a silent coercion.


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    return _as_str(obj[key])


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj[key]
    return None if value is None else _as_str(value)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{key}: expected a whole number, got {value!r}")
    return value


def _float(obj: dict[str, Any], key: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj[key]
    if not isinstance(value, bool):
        raise TypeError(f"{key}: expected true or false, got {value!r}")
    return value
